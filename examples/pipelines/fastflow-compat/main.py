"""A Fast-Flow script: reads its settings from the environment (default_env), prints, exits 0."""

import os

greeting = os.environ.get("GREETING", "GREETING is not set")
region = os.environ.get("REGION", "unknown")
print(f"{greeting} (region {region})")

try:  # Fast-Flow scripts need not know Kubeline; outputs are optional
    from kubeline import task
except ImportError:
    pass
else:
    task.set_output("region", region)
