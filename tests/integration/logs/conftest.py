"""A real S3-compatible server on 127.0.0.1 (moto's server mode, from PyPI), and Kubeline set up
to keep its logs there, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from kubeline import bootstrap, settings, testing

BUCKET = "kubeline-logs"
KEY_ID = "AKIAKUBELINETEST"
SECRET = "s3cr3t-never-logged-9f2c"


class S3Server:
    """moto's threaded server; ``stop`` closes the socket (connections are refused), ``start``
    serves again on the same port with the same objects (moto keeps them in this process)."""

    secret = SECRET

    def __init__(self) -> None:
        from moto import server

        self.port = testing.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        wsgi = self._server._server
        if wsgi is not None:
            wsgi.server_close()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET)

    def keys(self, prefix: str = "") -> list[str]:
        found = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return sorted(item["Key"] for item in found)


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    httpx.post(f"{server.url}/moto-api/reset").raise_for_status()  # moto keeps objects per process
    server.client().create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


def s3_settings(home: pathlib.Path, *, database_url: str, s3: S3Server, **extra: Any) -> settings.Settings:
    return settings.Settings(
        home=home, database_url=database_url, secret_key=None, log_store="s3", log_s3_bucket=BUCKET,
        log_s3_endpoint_url=s3.url, log_s3_access_key_id=KEY_ID, log_s3_secret_access_key=SECRET,
        uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"), **extra)


@pytest.fixture
def open_replica(tmp_path: pathlib.Path, database_url: str,
                 s3: S3Server) -> Callable[..., contextlib.AbstractAsyncContextManager[bootstrap.Kubeline]]:
    """``open_replica("a")``: a Kubeline with its own data dir (no shared disk) on the shared
    database and bucket."""

    @contextlib.asynccontextmanager
    async def _open(name: str, **extra: Any) -> AsyncIterator[bootstrap.Kubeline]:
        config = s3_settings(tmp_path / name, database_url=database_url, s3=s3, **extra)
        async with bootstrap.open_kubeline(config) as kl:
            yield kl

    return _open
