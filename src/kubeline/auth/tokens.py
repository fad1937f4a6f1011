"""Random bearer secrets (API tokens, session ids, invitation links, OAuth state) and their digests.

A secret is 32 random bytes; only its SHA-256 is stored, so a database dump reveals no usable
token. (A slow hash is for guessable passwords; these cannot be guessed.) API tokens carry a
prefix (``klt_``) so secret scanners and people recognise them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "klt_"  # noqa: S105 - a prefix


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_id() -> str:
    return secrets.token_hex(12)
