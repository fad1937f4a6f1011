"""Where attempts run: the protocol (``base``) and the adapters (local, docker, kubernetes).

The fake executor for tests is ``kubeline.testing.executors``.
"""
