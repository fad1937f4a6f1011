"""SecretService over the SQL store (a temporary SQLite file): names, encryption at rest, resolve, encrypted_env."""

from __future__ import annotations

import pytest
from cryptography import fernet

from kubeline.domain import errors
from kubeline.secrets import crypto, service
from kubeline.storage.sql import store as sql_store_


@pytest.fixture
def store(sql_store: sql_store_.SqlStore) -> sql_store_.SqlStore:
    return sql_store


@pytest.fixture
def secrets(store: sql_store_.SqlStore) -> service.SecretService:
    return service.SecretService(store=store, key=fernet.MultiFernet([fernet.Fernet(crypto.generate_key())]))


async def test_set_get_list_delete(secrets: service.SecretService, store: sql_store_.SqlStore) -> None:
    await secrets.set("DB_PASSWORD", "hunter2")
    await secrets.set("_token2", "")
    assert b"hunter2" not in (await store.get_secret("DB_PASSWORD")).ciphertext
    assert await secrets.get("DB_PASSWORD") == "hunter2"
    assert await secrets.get("_token2") == ""
    assert await secrets.list() == ["DB_PASSWORD", "_token2"]
    await secrets.set("DB_PASSWORD", "changed")
    assert await secrets.get("DB_PASSWORD") == "changed"
    await secrets.delete("_token2")
    assert await secrets.list() == ["DB_PASSWORD"]
    with pytest.raises(errors.NotFoundError, match="kubeline secrets set _token2"):
        await secrets.get("_token2")


@pytest.mark.parametrize("name", ["1ABC", "A-B", "", "A B", "ä", "A=B"])
async def test_invalid_names(secrets: service.SecretService, name: str) -> None:
    with pytest.raises(errors.SecretError, match="is not valid: use letters, digits and underscores"):
        await secrets.set(name, "value-that-must-not-leak")


async def test_resolve_names_every_missing_secret(secrets: service.SecretService) -> None:
    await secrets.set("A", "1")
    await secrets.set("B", "2")
    assert await secrets.resolve(["B", "A", "B"]) == {"B": "2", "A": "1"}
    assert await secrets.resolve([]) == {}
    with pytest.raises(errors.NotFoundError, match=r"secrets 'X', 'Y' not found .*kubeline secrets set") as info:
        await secrets.resolve(["A", "X", "Y"])
    assert "1" not in str(info.value)
    with pytest.raises(errors.NotFoundError, match=r"secret 'X' not found \(store it with `kubeline secrets set X`\)"):
        await secrets.resolve(["X"])


async def test_value_stored_under_another_key_fails_without_leaking(store: sql_store_.SqlStore) -> None:
    writer = service.SecretService(store=store, key=fernet.Fernet(crypto.generate_key()))
    reader = service.SecretService(store=store, key=fernet.Fernet(crypto.generate_key()))
    await writer.set("DB", "hunter2")
    with pytest.raises(errors.SecretError, match="cannot decrypt secret 'DB'") as info:
        await reader.get("DB")
    assert "hunter2" not in str(info.value)


def test_decrypt_env(secrets: service.SecretService) -> None:
    env = {"DB": secrets.encrypt_value("pw"), "TOKEN": crypto.encrypt(secrets.key, "t").decode()}
    assert secrets.decrypt_env(env) == {"DB": "pw", "TOKEN": "t"}
    assert secrets.decrypt_env({}) == {}
    with pytest.raises(errors.SecretError, match="cannot decrypt encrypted_env 'BAD'"):
        secrets.decrypt_env({"BAD": "not-a-token"})
