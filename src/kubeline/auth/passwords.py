"""Local passwords: argon2id hashes (argon2-cffi), a minimum length, one-time passwords.

``verify`` burns the same time for an unknown user as for a wrong password (it checks against a
dummy hash), so response times do not tell which usernames exist.
"""

from __future__ import annotations

import functools
import secrets

import argon2

MIN_LENGTH = 12
_hasher = argon2.PasswordHasher()


class WeakPassword(ValueError):
    pass


def check_policy(password: str, *, username: str = "") -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password has {len(password)} characters; use at least {MIN_LENGTH}")
    if username and password.lower() == username.lower():
        raise WeakPassword("the password must not be the username")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def _dummy() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy(), password) and stored_hash is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def one_time_password() -> str:
    return secrets.token_urlsafe(18)
