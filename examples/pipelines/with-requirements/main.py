"""A pipeline with its own dependencies: Kubeline builds a virtualenv from requirements.txt."""

import six

from kubeline import task

print(f"six {six.__version__} imported from the pipeline's own virtualenv")
task.set_output("six_version", six.__version__)
