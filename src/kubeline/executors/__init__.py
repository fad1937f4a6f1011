"""Where attempts run: the protocol (``base``) and the adapters (local, docker, kubernetes, fake)."""
