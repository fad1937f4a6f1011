"""The HTTP API of ``kubeline server``: an app factory over a ``bootstrap.Kubeline``."""
