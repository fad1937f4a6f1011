"""Retention and cleanup: runs, logs and artifacts by age and count; log size caps; old venvs and checkouts."""
