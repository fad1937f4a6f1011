"""Runtime code of the built-in stage types.

``python -m kubeline.components TYPE`` runs ``http_request`` or ``json_transform`` in an
interpreter with Kubeline installed; ``python -m kubeline.components.notebook FILE`` runs a
notebook inside the pipeline's own virtualenv; ``launch.argv_for`` tells an executor which of
these (or the user's script) an attempt starts.

This package root and ``notebook`` are copied into pipeline virtualenvs next to
``kubeline.task``, so they import only the standard library at import time.
"""

from __future__ import annotations
