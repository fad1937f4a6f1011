"""Where the CLI and ``kubeline.client`` find an API token: ``KUBELINE_TOKEN``, else the one
``kubeline login`` stored for that server URL in ``$KUBELINE_HOME/credentials.json`` (mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib

from kubeline import settings as settings_

FILE_NAME = "credentials.json"


def _file(settings: settings_.Settings) -> pathlib.Path:
    return settings.home / FILE_NAME


def _key(url: str) -> str:
    return url.rstrip("/")


def token_for(url: str, *, settings: settings_.Settings | None = None) -> str | None:
    settings = settings or settings_.Settings()
    if settings.token is not None:
        return settings.token.get_secret_value()
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(_file(settings).read_text())
        found = stored.get(_key(url)) if isinstance(stored, dict) else None
        return found if isinstance(found, str) else None
    return None


def store(url: str, token: str, *, settings: settings_.Settings | None = None) -> pathlib.Path:
    settings = settings or settings_.Settings()
    path = _file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text())
        stored = loaded if isinstance(loaded, dict) else {}
    stored[_key(url)] = token
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(stored, out, indent=1)
    path.chmod(0o600)
    return path


def forget(url: str, *, settings: settings_.Settings | None = None) -> bool:
    settings = settings or settings_.Settings()
    path = _file(settings)
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and stored.pop(_key(url), None) is not None:
            store_all = {k: v for k, v in stored.items() if isinstance(v, str)}
            path.write_text(json.dumps(store_all, indent=1))
            return True
    return False
