"""A bucket of any S3-compatible object store (AWS S3, MinIO, Ceph, moto, ...), through boto3.

boto3 is synchronous: every call runs in a worker thread. Timeouts are short and retries few,
so an object store that does not answer is noticed within seconds (the log store then keeps
lines on local disk and uploads them later) instead of after boto3's default minute. Errors
become ``Unreachable`` (try again later) or ``Missing`` (the object is not there); their
messages name the endpoint and bucket, never credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class Unreachable(Exception):
    """The object store did not answer or refused the request; retrying later may work."""


class Missing(Exception):
    """The object does not exist (deleted, or a bucket emptied by hand)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BucketConfig:
    bucket: str
    endpoint_url: str | None = None  # None: AWS
    region: str | None = None
    access_key_id: str | None = None  # None: boto3's own chain (AWS_* env, IRSA, instance profile)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    connect_timeout: float = 3.0
    read_timeout: float = 20.0


class Bucket:
    def __init__(self, config: BucketConfig) -> None:
        import boto3
        from botocore import config as botocore_config

        self.config = config
        self.where = f"bucket {config.bucket!r}" + (f" at {config.endpoint_url}" if config.endpoint_url else "")
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region or "us-east-1",
            aws_access_key_id=config.access_key_id, aws_secret_access_key=config.secret_access_key,
            config=botocore_config.Config(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                                          retries={"max_attempts": 2, "mode": "standard"},
                                          s3={"addressing_style": "path"}))

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._call, "put_object", Bucket=self.config.bucket, Key=key, Body=data,
                                ContentType="text/plain; charset=utf-8")

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix``; how many there were."""
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _get(self, key: str) -> bytes:
        answer = self._call("get_object", Bucket=self.config.bucket, Key=key)
        body: bytes = answer["Body"].read()
        return body

    def _delete_prefix(self, prefix: str) -> int:
        keys = list(self._keys(prefix))
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + _DELETE_BATCH]]
            self._call("delete_objects", Bucket=self.config.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def _keys(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", Bucket=self.config.bucket, Prefix=prefix, **extra)
            for item in page.get("Contents", []):
                yield item["Key"]
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore import exceptions

        try:
            return getattr(self._client, method)(**kwargs)
        except exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise Missing(f"{kwargs.get('Key', '')!r} is not in {self.where}") from None
            raise Unreachable(f"{self.where} refused {method}: {code or exc}") from None
        except (exceptions.BotoCoreError, OSError) as exc:
            raise Unreachable(f"{self.where} does not answer: {exc}") from None
