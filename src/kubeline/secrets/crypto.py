"""Fernet encryption of secret values, with the key from the environment or the data dir.

The key comes from ``KUBELINE_SECRET_KEY`` (``Settings.secret_key``); on a laptop, without it,
a key is generated once into ``Settings.key_file`` (mode 0600) so secrets work with no setup.
Several comma-separated keys make a ``MultiFernet``: the first encrypts, all decrypt, which is
how a key is rotated (``new,old``, then re-save the secrets, then drop ``old``).
Messages name the key's source, never a key or a value.
"""

from __future__ import annotations

import os
import pathlib

from cryptography import fernet

from kubeline import settings as settings_
from kubeline.domain import errors

ENV_NAME = "KUBELINE_SECRET_KEY"
_MAKE_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


def generate_key() -> str:
    return fernet.Fernet.generate_key().decode()


def parse_keys(text: str, *, source: str) -> fernet.MultiFernet:
    """Comma- or newline-separated Fernet keys, the first one encrypting."""
    parts = [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]
    if not parts:
        raise errors.SecretError(f"{source} holds no key; make one with: {_MAKE_KEY}")
    keys: list[fernet.Fernet] = []
    for position, part in enumerate(parts, start=1):
        try:
            keys.append(fernet.Fernet(part))
        except (ValueError, TypeError):
            raise errors.SecretError(
                f"{source}: key {position} of {len(parts)} is not a Fernet key (32 url-safe "
                f"base64-encoded bytes); make one with: {_MAKE_KEY}"
            ) from None
    return fernet.MultiFernet(keys)


def load_key(
    settings: settings_.Settings, *, create: bool = True
) -> tuple[fernet.MultiFernet, bool]:
    """The key(s) to use and whether a new key file was just generated.

    Order: ``KUBELINE_SECRET_KEY``, else ``settings.key_file``, else (``create``) a new key file.
    """
    if settings.secret_key:
        return parse_keys(settings.secret_key, source=ENV_NAME), False
    path = settings.key_file
    if path.exists():
        return parse_keys(_read(path), source=str(path)), False
    if not create:
        raise errors.SecretError(
            f"no secret key: set {ENV_NAME} (make a key with: {_MAKE_KEY}) or create {path}"
        )
    created = _create_key_file(path)
    return parse_keys(_read(path), source=str(path)), created


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.SecretError(
            f"cannot read the secret key file {path}: {exc.__class__.__name__} "
            f"(check its owner and permissions, or set {ENV_NAME})"
        ) from None


def _create_key_file(path: pathlib.Path) -> bool:
    """Write a new key with mode 0600; False when another process created it first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise errors.SecretError(
            f"cannot create the secret key file {path}: {exc.strerror} "
            f"(make the data dir writable, or set {ENV_NAME})"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(generate_key() + "\n")
    return True


def encrypt(key: fernet.Fernet | fernet.MultiFernet, text: str) -> bytes:
    return key.encrypt(text.encode())


def decrypt(
    key: fernet.Fernet | fernet.MultiFernet, token: bytes | str, *, what: str = "secret"
) -> str:
    """The plain text of ``token``; ``SecretError`` naming ``what`` when it cannot be decrypted."""
    raw = token.encode() if isinstance(token, str) else token
    try:
        return key.decrypt(raw).decode()
    except fernet.InvalidToken:
        raise errors.SecretError(
            f"cannot decrypt {what}: it was encrypted with a different key or is corrupted. "
            f"Use the key it was made with ({ENV_NAME}, or the key file in the data dir); after "
            f"a key change list both keys as {ENV_NAME}=new,old, or set the value again"
        ) from None
    except UnicodeDecodeError:
        raise errors.SecretError(f"cannot decrypt {what}: the plain text is not UTF-8") from None
