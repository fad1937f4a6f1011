"""The environment a ``local`` or ``local-warm`` attempt starts from: an allow-list, never the server's.

A stage is user code. It must not see what the server holds in its environment: the Fernet key
(``KUBELINE_SECRET_KEY``), the database URL with its password, ``PGPASSWORD``, cloud credentials
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_*``), tokens of CI systems, ... A deny-list
cannot name them all, so the server's environment is read through an allow-list of variables
that only describe the machine and the locale:

- ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``TERM``: where programs are, who runs;
- ``LANG``, ``LANGUAGE``, every ``LC_*``, ``TZ``: text encoding, locale and time zone;
- ``TMPDIR``: where temporary files go;
- ``SSL_CERT_FILE``, ``SSL_CERT_DIR``: which CAs TLS clients trust (paths, not secrets);
- ``NO_PROXY``/``no_proxy`` (host lists). Proxy URLs (``HTTPS_PROXY``...) can carry a password,
  so they pass only when named in ``KUBELINE_STAGE_ENV_PASSTHROUGH``.

``KUBELINE_STAGE_ENV_PASSTHROUGH`` (a JSON list of names) adds names; ``KUBELINE_*`` names are
refused there (settings validation). On top of this base come ``PYTHONUNBUFFERED=1``, the
venv's ``VIRTUAL_ENV`` and ``PATH`` entry, the attempt's ``KUBELINE_*`` contract variables
(inputs/outputs files, run id, ...) and what the spec gives: its env, secrets and inputs.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping

ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy",
})
ALLOWED_PREFIXES = ("LC_",)


def allowed(name: str, *, passthrough: Iterable[str] = ()) -> bool:
    if name.startswith("KUBELINE_"):
        return False
    return name in ALLOWED or name.startswith(ALLOWED_PREFIXES) or name in passthrough


def base(*, passthrough: Iterable[str] = (), venv: pathlib.Path | None = None,
         source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of ``source`` (default: this process's environment), unbuffered,
    with the venv first on ``PATH``."""
    names = frozenset(passthrough)
    env = {k: v for k, v in (os.environ if source is None else source).items()
           if allowed(k, passthrough=names)}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are printed
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return env
