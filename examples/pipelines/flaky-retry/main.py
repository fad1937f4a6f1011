"""Fails on attempt 1, succeeds on attempt 2: each attempt has its own logs and exit code."""

import sys

from kubeline import task

attempt = task.attempt()
print(f"attempt {attempt} of stage {task.stage()} in run {task.run_id()}")
if attempt < 2:
    print("simulating a flaky dependency: failing this attempt", file=sys.stderr)
    sys.exit(1)
print("second time lucky")
task.set_output("succeeded_on_attempt", attempt)
