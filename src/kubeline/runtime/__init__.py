"""Code that runs inside attempt containers (standard library only)."""
