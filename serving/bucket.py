"""The model bucket: versions published once to S3-compatible object storage, read by every replica's sync.

Layout under s3://BUCKET/PREFIX (TensorFlow Serving cannot read s3:// paths, so replicas mirror it):

    models.config                         the served config (policy, labels); written by serving.ops /
                                          admission; every other object beside it is served config too
    <model>/<version>/...                 a version's files (saved_model.pb, variables/, assets.extra/)
    <model>/<version>/complete.json       its completion record: the content fingerprint and every
                                          file's size and SHA-256, written last
    _staging/<model>/<version>-<token>/   where a publish uploads first

S3 has no rename: a version is uploaded under a staging prefix, copied into place server-side, and only
then gets its completion record, so a reader that trusts records only never sees half a version.
Pure Python (minio's client), no TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from serving.fingerprint import content_fingerprint

logger = logging.getLogger(__name__)

RECORD_NAME = "complete.json"
STAGING = "_staging"
SERVED_CONFIG = "models.config"
RECORD_FORMAT = 1
_CHUNK_BYTES = 1 << 20


class BucketError(RuntimeError):
    """The bucket could not be used: unreachable, refused, or holding something malformed."""


class AccessDenied(BucketError):
    """The bucket refused the keys for this operation (read-only keys asked to write, unknown keys)."""


class VersionExists(BucketError):
    """A version with this number is complete in the bucket; versions are immutable."""


@dataclass(frozen=True)
class BucketUrl:
    """s3://BUCKET/PREFIX."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> BucketUrl:
        """Raises ValueError for anything but s3://BUCKET[/PREFIX]."""
        if not url.startswith("s3://"):
            raise ValueError(f"expected s3://BUCKET/PREFIX, got {url!r}")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class BucketSettings:
    """Where the object store is and the keys to use; read from the environment by from_env only."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BucketSettings:
        """SHINE_S3_ENDPOINT (http(s)://host:port) and the keys: SHINE_S3_ACCESS_KEY and
        SHINE_S3_SECRET_KEY, or SHINE_S3_CREDENTIALS_DIR holding files `access_key` and `secret_key` (a
        mounted Secret). Raises ValueError naming the variable that is missing or malformed."""
        env = os.environ if environ is None else environ
        endpoint = env.get("SHINE_S3_ENDPOINT", "")
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"SHINE_S3_ENDPOINT must be http(s)://host:port, got {endpoint!r}")
        folder = env.get("SHINE_S3_CREDENTIALS_DIR")
        if folder:
            try:
                access = (Path(folder) / "access_key").read_text().strip()
                secret = (Path(folder) / "secret_key").read_text().strip()
            except OSError as exc:
                raise ValueError(f"SHINE_S3_CREDENTIALS_DIR: {exc}") from exc
        else:
            access = env.get("SHINE_S3_ACCESS_KEY", "")
            secret = env.get("SHINE_S3_SECRET_KEY", "")
        if not access or not secret:
            raise ValueError("set SHINE_S3_ACCESS_KEY and SHINE_S3_SECRET_KEY, or SHINE_S3_CREDENTIALS_DIR")
        timeout = env.get("SHINE_S3_TIMEOUT_S", "10")
        try:
            timeout_s = float(timeout)
        except ValueError:
            raise ValueError(f"SHINE_S3_TIMEOUT_S must be a number, got {timeout!r}") from None
        return cls(endpoint, access, secret, env.get("SHINE_S3_REGION") or None, timeout_s)


@dataclass(frozen=True)
class VersionRecord:
    """The completion record of one version: what a complete, untampered copy holds."""

    model: str
    version: int
    fingerprint: str
    files: Mapping[str, tuple[int, str]]  # relative path -> (size, sha256 hex)

    def to_json(self) -> bytes:
        body = {
            "format": RECORD_FORMAT,
            "model": self.model,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "files": [{"path": p, "size": s, "sha256": h} for p, (s, h) in sorted(self.files.items())],
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VersionRecord:
        """Raises BucketError when the record is malformed."""
        try:
            body = json.loads(data)
            files = {str(f["path"]): (int(f["size"]), str(f["sha256"])) for f in body["files"]}
            record = cls(str(body["model"]), int(body["version"]), str(body["fingerprint"]), files)
        except (ValueError, KeyError, TypeError) as exc:
            raise BucketError(f"malformed completion record: {exc}") from exc
        if any(p.startswith("/") or ".." in p.split("/") for p in files):
            raise BucketError("completion record names a path outside its version")
        return record


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def record_of(model: str, version: int, version_dir: Path) -> VersionRecord:
    """The record of a local version folder; raises FileNotFoundError when it holds no SavedModel."""
    files = {
        path.relative_to(version_dir).as_posix(): (path.stat().st_size, file_digest(path))
        for path in sorted(version_dir.rglob("*"))
        if path.is_file()
    }
    return VersionRecord(model, version, content_fingerprint(version_dir), files)


class ModelBucket:
    """Reads and writes the layout above; every storage failure comes out as BucketError."""

    def __init__(self, settings: BucketSettings, url: BucketUrl) -> None:
        self.url = url
        endpoint = settings.endpoint
        # Bounded waits and few retries: a bucket that is away must not stall a sync pass for minutes.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(3.0, settings.timeout_s), read=settings.timeout_s),
            retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=8,
        )
        self._client = Minio(
            endpoint.split("://", 1)[1],
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=endpoint.startswith("https://"),
            region=settings.region,
            http_client=http,
        )

    # -- raw objects -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """An object's bytes, None when it does not exist; raises BucketError."""
        try:
            response = self._client.get_object(self.url.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise _translate(exc, f"read {key}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"read {key}") from exc
        try:
            return bytes(response.read())
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"read {key}") from exc
        finally:
            response.close()
            response.release_conn()

    def put(self, key: str, data: bytes) -> None:
        """Write one object; raises AccessDenied or BucketError."""
        self._call(f"write {key}", self._client.put_object, self.url.bucket, key, io.BytesIO(data), len(data))

    def upload(self, key: str, path: Path) -> None:
        self._call(f"upload {key}", self._client.fput_object, self.url.bucket, key, str(path))

    def download(self, key: str, path: Path) -> None:
        self._call(f"download {key}", self._client.fget_object, self.url.bucket, key, str(path))

    def copy(self, source: str, target: str) -> None:
        """Server-side copy (no bytes through this process)."""
        self._call(
            f"copy {source}",
            self._client.copy_object,
            self.url.bucket,
            target,
            CopySource(self.url.bucket, source),
        )

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", self._client.remove_object, self.url.bucket, key)

    def names(self, prefix: str, recursive: bool = False) -> list[str]:
        """Object names and (not recursive) sub-prefixes ending in '/' under `prefix`."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""

        def listing() -> list[str]:
            return [
                str(item.object_name)
                for item in self._client.list_objects(self.url.bucket, prefix=prefix, recursive=recursive)
            ]

        result: list[str] = self._call(f"list {prefix}", listing)
        return result

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise _translate(exc, what) from exc

    # -- the layout --------------------------------------------------------------------------------

    def served_config(self) -> dict[str, bytes]:
        """Every object at the prefix's top level (models.config, admission's state): name -> bytes."""
        top = self.url.key() + "/" if self.url.prefix else ""
        files = {}
        for name in self.names(self.url.key()):
            if name.endswith("/"):
                continue
            data = self.get(name)
            if data is not None:
                files[name.removeprefix(top)] = data
        return files

    def put_served(self, name: str, data: bytes) -> None:
        self.put(self.url.key(name), data)

    def versions(self, model: str) -> list[int]:
        """Version numbers with a folder in the bucket (complete or not)."""
        numbers = []
        for name in self.names(self.url.key(model)):
            last = name.rstrip("/").rsplit("/", 1)[-1]
            if name.endswith("/") and last.isascii() and last.isdigit():
                numbers.append(int(last))
        return sorted(numbers)

    def record(self, model: str, version: int) -> VersionRecord | None:
        """The version's completion record, None when it has none (not complete); raises BucketError."""
        data = self.get(self.url.key(model, str(version), RECORD_NAME))
        if data is None:
            return None
        record = VersionRecord.from_json(data)
        if record.model != model or record.version != version:
            raise BucketError(f"record of {model}/{version} names {record.model}/{record.version}")
        return record

    def complete_versions(self, model: str) -> dict[int, VersionRecord]:
        """Versions whose completion record exists and reads; a malformed one is logged and left out."""
        complete = {}
        for version in self.versions(model):
            try:
                record = self.record(model, version)
            except BucketError as exc:
                if isinstance(exc, AccessDenied):
                    raise
                logger.warning("%s/%d left out: %s", model, version, exc)
                continue
            if record is not None:
                complete[version] = record
        return complete

    def publish(self, model: str, version: int, version_dir: Path) -> VersionRecord:
        """Upload a local version folder as `version`: staging prefix first, server-side copies into
        place, the completion record last, the staging objects removed. Raises VersionExists, AccessDenied
        or BucketError."""
        if self.record(model, version) is not None:
            raise VersionExists(f"{self.url}/{model}/{version} is complete; publish a new number")
        record = record_of(model, version, version_dir)
        staging = self.url.key(STAGING, model, f"{version}-{uuid.uuid4().hex[:12]}")
        started = time.monotonic()
        for relative in record.files:
            self.upload(f"{staging}/{relative}", version_dir / relative)
        for relative in record.files:
            self.copy(f"{staging}/{relative}", self.url.key(model, str(version), relative))
        # Written last: until it exists no reader takes the version.
        self.put(self.url.key(model, str(version), RECORD_NAME), record.to_json())
        for relative in record.files:
            self.delete(f"{staging}/{relative}")
        logger.info(
            "published %s/%d to %s (%d files) in %.1f s",
            model,
            version,
            self.url,
            len(record.files),
            time.monotonic() - started,
        )
        return record


def _translate(exc: Exception, what: str) -> BucketError:
    if isinstance(exc, S3Error) and exc.code in (
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ):
        return AccessDenied(f"bucket refused to {what}: {exc.code}")
    if isinstance(exc, S3Error):
        return BucketError(f"bucket could not {what}: {exc.code} {exc.message}")
    return BucketError(f"bucket unreachable to {what}: {type(exc).__name__}: {exc}")
