"""``SecretService``: named secrets encrypted at rest in the store, decrypted for attempts.

Names are environment-variable names (they become env vars of attempts). Values never appear in
logs or exception messages; errors name the secret and the command that fixes it.
"""

from __future__ import annotations

import builtins
import re

from cryptography import fernet

from kubeline.domain import errors
from kubeline.secrets import crypto
from kubeline.storage import base, changes

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise errors.SecretError(
            f"secret name {name!r} is not valid: use letters, digits and underscores, "
            "not starting with a digit (it becomes an environment variable), e.g. DB_PASSWORD"
        )
    return name


class SecretService:
    def __init__(self, *, store: base.Store, key: fernet.Fernet | fernet.MultiFernet) -> None:
        self.store = store
        self.key = key

    async def set(self, name: str, value: str) -> None:
        await self.store.put_secret(check_name(name), crypto.encrypt(self.key, value))

    async def get(self, name: str) -> str:
        secret = await self.store.get_secret(check_name(name))
        return crypto.decrypt(self.key, secret.ciphertext, what=f"secret {name!r}")

    async def list(self) -> builtins.list[str]:
        return await self.store.list_secrets()

    async def delete(self, name: str) -> None:
        await self.store.delete_secret(check_name(name))

    async def resolve(self, names: builtins.list[str]) -> dict[str, str]:
        """The values of ``names``; one ``NotFoundError`` naming every missing secret."""
        values: dict[str, str] = {}
        missing: builtins.list[str] = []
        for name in dict.fromkeys(names):
            try:
                values[name] = await self.get(name)
            except errors.NotFoundError:
                missing.append(name)
        if missing:
            raise changes.secret_not_found(missing)
        return values

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        """Fast-Flow ``encrypted_env``: each value is Fernet ciphertext made with the server key."""
        return {
            name: crypto.decrypt(self.key, token, what=f"encrypted_env {name!r}")
            for name, token in encrypted_env.items()
        }

    def encrypt_value(self, value: str) -> str:
        """Ciphertext for an ``encrypted_env`` entry (what ``kubeline secrets encrypt`` prints)."""
        return crypto.encrypt(self.key, value).decode()
