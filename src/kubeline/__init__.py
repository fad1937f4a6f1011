"""Kubeline: pipeline orchestration for Python teams, from a laptop to Kubernetes.

The package root stays import-light on purpose: scripts run by Kubeline import ``kubeline.task``
inside their own virtualenvs, where none of Kubeline's dependencies are installed.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
