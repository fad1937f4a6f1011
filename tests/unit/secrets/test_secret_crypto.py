"""Fernet keys from the environment or the data dir, rotation, and errors that leak nothing."""

from __future__ import annotations

import pathlib
import stat

import pytest
from cryptography import fernet

from kubeline import settings as settings_
from kubeline.domain import errors
from kubeline.secrets import crypto


def make_settings(home: pathlib.Path, secret_key: str | None = None) -> settings_.Settings:
    return settings_.Settings(home=home, secret_key=secret_key)


def test_key_from_the_environment_setting(tmp_path: pathlib.Path) -> None:
    key = crypto.generate_key()
    loaded, created = crypto.load_key(make_settings(tmp_path, key))
    assert not created and not (tmp_path / "secret.key").exists()
    assert fernet.Fernet(key).decrypt(crypto.encrypt(loaded, "v")) == b"v"


def test_key_file_generated_once_with_mode_0600(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    first, created = crypto.load_key(make_settings(home))
    path = home / "secret.key"
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    second, created_again = crypto.load_key(make_settings(home))
    assert not created_again
    assert crypto.decrypt(second, crypto.encrypt(first, "same key")) == "same key"


def test_no_key_and_no_create(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.SecretError, match="no secret key: set KUBELINE_SECRET_KEY"):
        crypto.load_key(make_settings(tmp_path), create=False)


def test_rotation_first_key_encrypts_all_decrypt(tmp_path: pathlib.Path) -> None:
    old, new = crypto.generate_key(), crypto.generate_key()
    old_key, _ = crypto.load_key(make_settings(tmp_path, old))
    token = crypto.encrypt(old_key, "made with old")
    rotated, _ = crypto.load_key(make_settings(tmp_path, f"{new}, {old}"))
    assert crypto.decrypt(rotated, token) == "made with old"
    assert fernet.Fernet(new).decrypt(crypto.encrypt(rotated, "x")) == b"x"
    with pytest.raises(errors.SecretError):
        crypto.decrypt(old_key, crypto.encrypt(fernet.MultiFernet([fernet.Fernet(new)]), "x"))


def test_invalid_keys_are_reported_without_the_key(tmp_path: pathlib.Path) -> None:
    bad = "not-a-real-key-but-a-secret-looking-string"
    with pytest.raises(errors.SecretError, match="KUBELINE_SECRET_KEY: key 2 of 2 is not a Fernet key") as info:
        crypto.load_key(make_settings(tmp_path, f"{crypto.generate_key()},{bad}"))
    assert bad not in str(info.value)
    (tmp_path / "secret.key").write_text(bad)
    with pytest.raises(errors.SecretError, match=r"secret\.key: key 1 of 1 is not a Fernet key"):
        crypto.load_key(make_settings(tmp_path))
    (tmp_path / "secret.key").write_text("\n")
    with pytest.raises(errors.SecretError, match="holds no key"):
        crypto.load_key(make_settings(tmp_path))


def test_unreadable_key_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "secret.key").mkdir()  # a directory cannot be read as a file, even by root
    with pytest.raises(errors.SecretError, match="cannot read the secret key file"):
        crypto.load_key(make_settings(tmp_path))


def test_decrypt_errors_are_actionable_and_leak_nothing() -> None:
    key = fernet.MultiFernet([fernet.Fernet(crypto.generate_key())])
    other = fernet.MultiFernet([fernet.Fernet(crypto.generate_key())])
    token = crypto.encrypt(other, "hunter2")
    with pytest.raises(errors.SecretError, match=r"cannot decrypt secret 'DB': .*different key") as info:
        crypto.decrypt(key, token, what="secret 'DB'")
    assert "hunter2" not in str(info.value) and token.decode() not in str(info.value)
    with pytest.raises(errors.SecretError, match="corrupted"):
        crypto.decrypt(key, "garbage")
    assert crypto.decrypt(key, crypto.encrypt(key, "ünïcode").decode()) == "ünïcode"
