"""serving/sync.py against a real S3 server (SeaweedFS), with the read-only keys a replica gets: it mirrors
the complete versions the served config selects, refuses bytes that do not match their record, writes
the config after the versions, removes a version only once the config no longer names it and its grace
has passed, keeps everything when the bucket is away, and cannot write to the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.bucket import RECORD_NAME, AccessDenied, BucketError, BucketSettings, BucketUrl, ModelBucket
from serving.cluster import ClusterOps
from serving.fingerprint import content_fingerprint
from serving.repository import versions_on_disk
from serving.sync import PASS_RECORD, Mirror, check, main
from tests.conftest import MODEL_REPO, ROOT, Clock, free_port
from tests.objectstore import READER, WRITER, SeaweedServer, require_weed, seaweed

__all__ = ["seaweed"]  # the fixture, used by name

MODEL = "skin_analyzer"
SOURCE = MODEL_REPO / MODEL / "6"
# The latest two complete versions (a cluster's config before admission has decided anything).
CONFIG = b"""model_config_list {
  config {
    name: "skin_analyzer"
    base_path: "/models/skin_analyzer"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""

require_weed()


def _bucket(seaweed: SeaweedServer, prefix: str, versions: tuple[int, ...]) -> ModelBucket:
    writer = seaweed.bucket(WRITER, prefix=prefix)
    for version in versions:
        writer.publish(MODEL, version, SOURCE)
    writer.put_served("models.config", CONFIG)
    return writer


def _corrupt(writer: ModelBucket, version: int) -> None:
    """Replace one weights object after the record was written (a tampered or botched copy)."""
    key = writer.url.key(MODEL, str(version), "variables/variables.data-00000-of-00001")
    data = bytearray(writer.get(key) or b"")
    data[len(data) // 2] ^= 0xFF
    writer.put(key, bytes(data))


def test_mirrors_served_complete_versions_then_the_config(seaweed: SeaweedServer, tmp_path: Path) -> None:
    writer = _bucket(seaweed, "mirror", (5, 6, 7))
    mirror = Mirror(seaweed.bucket(READER, prefix="mirror"), tmp_path)
    report = mirror.sync_once()
    assert report.served == {MODEL: [6, 7]} and sorted(report.fetched) == [f"{MODEL}/6", f"{MODEL}/7"]
    assert versions_on_disk(tmp_path / MODEL) == [6, 7]
    assert (tmp_path / "models.config").read_bytes() == CONFIG
    assert content_fingerprint(tmp_path / MODEL / "7") == content_fingerprint(SOURCE)
    assert [p.name for p in (tmp_path / MODEL).iterdir() if p.name.startswith(".")] == []  # no staging left
    # A second pass fetches nothing; an object beside models.config (admission's state) is mirrored too.
    writer.put_served("admission.json", b'{"decided": [7]}')
    again = mirror.sync_once()
    assert again.fetched == [] and (tmp_path / "admission.json").read_bytes() == b'{"decided": [7]}'


def test_refuses_versions_that_do_not_match_or_are_incomplete(seaweed: SeaweedServer, tmp_path: Path) -> None:
    writer = _bucket(seaweed, "broken", (5, 6, 8))
    _corrupt(writer, 8)
    # Version 9: every file uploaded, its record never written.
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            writer.upload(writer.url.key(MODEL, "9", path.relative_to(SOURCE).as_posix()), path)
    mirror = Mirror(seaweed.bucket(READER, prefix="broken"), tmp_path)
    report = mirror.sync_once()
    assert report.refused == [f"{MODEL}/8"]
    assert report.served == {MODEL: [5, 6]}  # the newest two of those that can be served
    assert versions_on_disk(tmp_path / MODEL) == [5, 6]
    assert mirror.sync_once().refused == []  # not fetched again until its record changes


def test_removes_a_version_only_after_the_config_drops_it_and_its_grace(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    writer = _bucket(seaweed, "remove", (5, 6))
    clock = Clock()
    mirror = Mirror(seaweed.bucket(READER, prefix="remove"), tmp_path, remove_after_s=30, clock=clock)
    mirror.sync_once()
    ClusterOps(writer).pin(5)
    report = mirror.sync_once()
    assert b"specific" in (tmp_path / "models.config").read_bytes()
    assert report.removed == [] and versions_on_disk(tmp_path / MODEL) == [5, 6]  # grace not passed
    clock.now += 31
    assert mirror.sync_once().removed == [f"{MODEL}/6"]
    assert versions_on_disk(tmp_path / MODEL) == [5]
    # A label keeps its version even when the policy would drop it.
    ClusterOps(writer).unpin()
    mirror.sync_once()
    ClusterOps(writer).label("stable", 5)
    writer.publish(MODEL, 7, SOURCE)
    mirror.sync_once()
    clock.now += 31
    mirror.sync_once()
    assert versions_on_disk(tmp_path / MODEL) == [5, 6, 7]


def test_admission_mode_mirrors_every_complete_version_and_keeps_config_apart(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    writer = _bucket(seaweed, "admission", (4, 5, 6))
    ClusterOps(writer).pin(5)
    folder, bucket_config = tmp_path / "models", tmp_path / "bucket-config"
    folder.mkdir()
    (folder / "models.config").write_text("admission's own decision\n")
    mirror = Mirror(
        seaweed.bucket(READER, prefix="admission"), folder, all_versions=True, config_dir=bucket_config
    )
    report = mirror.sync_once()
    assert report.served == {MODEL: [4, 5, 6]} and versions_on_disk(folder / MODEL) == [4, 5, 6]
    assert (folder / "models.config").read_text() == "admission's own decision\n"
    assert b"specific" in (bucket_config / "models.config").read_bytes()


def _tree(folder: Path) -> list[Path]:
    """Every path under `folder`, relative to it, in order."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_bucket_away_keeps_what_is_mirrored(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "server")
    server.start()
    try:
        _bucket(server, "away", (5, 6))
        mirror = Mirror(server.bucket(READER, prefix="away"), tmp_path / "models")
        mirror.sync_once()
    finally:
        server.stop()
    before = _tree(tmp_path / "models")
    assert before  # something was mirrored to keep
    with pytest.raises(BucketError):
        mirror.sync_once()
    assert _tree(tmp_path / "models") == before


def test_sync_keys_cannot_write(seaweed: SeaweedServer, tmp_path: Path) -> None:
    _bucket(seaweed, "readonly", (6,))
    env = {**seaweed.env(READER)}
    # The same settings the command line builds from the environment.
    bucket = ModelBucket(BucketSettings.from_env(env), BucketUrl.parse("s3://shine-models/readonly"))
    Mirror(bucket, tmp_path).sync_once()
    for write in (
        lambda: bucket.put_served("models.config", b"model_config_list {}"),
        lambda: bucket.put(bucket.url.key(MODEL, "6", RECORD_NAME), b"{}"),
        lambda: bucket.delete(bucket.url.key(MODEL, "6", RECORD_NAME)),
    ):
        with pytest.raises(AccessDenied, match="AccessDenied"):
            write()


def _sync_once(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m serving.sync --once` from the bucket's "cli" prefix into `folder`, as a process."""
    source = "s3://shine-models/cli"
    command = [sys.executable, "-m", "serving.sync", "--from", source, "--to", str(folder), "--once"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_command_line_once_and_check(seaweed: SeaweedServer, tmp_path: Path) -> None:
    _bucket(seaweed, "cli", (6,))
    folder = tmp_path / "models"
    assert main(["--check", str(folder)]) == 1  # nothing yet
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SHINE_")}, **seaweed.env(READER)}
    done = _sync_once(folder, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["served"] == {MODEL: [6]}
    assert main(["--check", str(folder), "--max-age-s", "60"]) == 0
    assert check(folder, 60, now=time.time() + 120) is not None  # a loop that stopped fails the probe
    record = json.loads((folder / PASS_RECORD).read_text())
    assert record["ok"] is True
    # Unreachable: the pass fails, says so, and exits 1.
    env["SHINE_S3_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    env["SHINE_S3_TIMEOUT_S"] = "1"
    failed = _sync_once(folder, env)
    assert failed.returncode == 1
    assert json.loads((folder / PASS_RECORD).read_text())["ok"] is False
    assert versions_on_disk(folder / MODEL) == [6]
