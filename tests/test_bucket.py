"""serving/bucket.py and `python -m export publish --to` against a real S3 server (SeaweedFS): a version
is complete only once its record is written, read-only keys are refused by the server, keys come from
the environment or a mounted Secret folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.bucket import (
    RECORD_NAME,
    AccessDenied,
    BucketError,
    BucketSettings,
    BucketUrl,
    ModelBucket,
    VersionExists,
    record_of,
)
from serving.cluster import ClusterOps, ClusterOpsError, push_served_config
from serving.fingerprint import content_fingerprint
from tests.conftest import MODEL_REPO, ROOT, free_port
from tests.objectstore import READER, WRITER, SeaweedServer, require_weed, seaweed

__all__ = ["seaweed"]  # the fixture, used by name

MODEL = "skin_analyzer"
SOURCE = MODEL_REPO / MODEL / "6"

require_weed()


def test_publish_writes_files_then_the_record(seaweed: SeaweedServer) -> None:
    writer = seaweed.bucket(WRITER, prefix="publish")
    record = writer.publish(MODEL, 3, SOURCE)
    assert record.fingerprint == content_fingerprint(SOURCE)
    assert writer.complete_versions(MODEL) == {3: record}
    names = writer.names("publish", recursive=True)
    assert {n.removeprefix(f"publish/{MODEL}/3/") for n in names if "/3/" in n} == {
        *record.files,
        RECORD_NAME,
    }
    assert not [n for n in names if "_staging" in n]  # staging objects removed after the copies
    with pytest.raises(VersionExists):
        writer.publish(MODEL, 3, SOURCE)


def test_a_version_without_its_record_is_not_complete(seaweed: SeaweedServer) -> None:
    # An upload cut off before its record: every file there, but no reader takes it.
    writer = seaweed.bucket(WRITER, prefix="cut")
    record = record_of(MODEL, 4, SOURCE)
    for relative in record.files:
        writer.upload(writer.url.key(MODEL, "4", relative), SOURCE / relative)
    assert writer.versions(MODEL) == [4]
    assert writer.complete_versions(MODEL) == {}
    # A malformed record is left out too, not taken as complete.
    writer.put(writer.url.key(MODEL, "4", RECORD_NAME), b"{not json")
    assert writer.complete_versions(MODEL) == {}


def test_read_only_keys_are_refused_by_the_server(seaweed: SeaweedServer) -> None:
    writer = seaweed.bucket(WRITER, prefix="keys")
    writer.publish(MODEL, 1, SOURCE)
    reader = seaweed.bucket(READER, prefix="keys")
    assert list(reader.complete_versions(MODEL)) == [1]  # reading is allowed
    with pytest.raises(AccessDenied, match="AccessDenied"):
        reader.put_served("models.config", b"model_config_list {}")
    with pytest.raises(AccessDenied):
        reader.publish(MODEL, 2, SOURCE)
    with pytest.raises(AccessDenied):
        reader.delete(reader.url.key(MODEL, "1", RECORD_NAME))
    assert writer.record(MODEL, 1) is not None  # nothing was deleted
    stranger = seaweed.bucket(("nobody", "not-a-key-0123456789"), prefix="keys")
    with pytest.raises(AccessDenied, match="InvalidAccessKeyId"):
        stranger.names("keys")


def test_an_unreachable_bucket_is_a_bucket_error() -> None:
    bucket = ModelBucket(
        BucketSettings(f"http://127.0.0.1:{free_port()}", *READER, timeout_s=1), BucketUrl("b", "p")
    )
    with pytest.raises(BucketError, match="unreachable"):
        bucket.served_config()


def test_settings_from_env_and_a_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "access_key").write_text(READER[0] + "\n")
    (tmp_path / "secret_key").write_text(READER[1] + "\n")
    settings = BucketSettings.from_env(
        {"SHINE_S3_ENDPOINT": "http://127.0.0.1:1", "SHINE_S3_CREDENTIALS_DIR": str(tmp_path)}
    )
    assert (settings.access_key, settings.secret_key) == READER
    env = {"SHINE_S3_ENDPOINT": "https://s3.example", "SHINE_S3_ACCESS_KEY": "a", "SHINE_S3_SECRET_KEY": "b"}
    assert BucketSettings.from_env(env).access_key == "a"
    with pytest.raises(ValueError, match="SHINE_S3_ENDPOINT"):
        BucketSettings.from_env({"SHINE_S3_ACCESS_KEY": "a", "SHINE_S3_SECRET_KEY": "b"})
    with pytest.raises(ValueError, match="SHINE_S3_ACCESS_KEY"):
        BucketSettings.from_env({"SHINE_S3_ENDPOINT": "http://h:1"})
    assert BucketUrl.parse("s3://shine-models/a/b/") == BucketUrl("shine-models", "a/b")
    with pytest.raises(ValueError):
        BucketUrl.parse("/models")


def test_cluster_ops_change_the_served_config(seaweed: SeaweedServer) -> None:
    writer = seaweed.bucket(WRITER, prefix="ops")
    for version in (6, 7):
        writer.publish(MODEL, version, SOURCE)
    writer.put_served("models.config", (ROOT / "serving" / "models.config").read_bytes())
    ops = ClusterOps(writer)
    assert ops.served() == [7, 6]
    assert ops.rollback() == 6
    assert ops.entry().policy.versions == (6,)
    with pytest.raises(ClusterOpsError, match="not complete"):
        ops.pin(9)
    ops.unpin()
    ops.label("stable", 6)
    assert ops.entry().version_labels == {"stable": 6}
    with pytest.raises(ClusterOpsError, match="not complete"):
        ops.label("canary", 4)
    ops.unlabel("stable")
    assert ops.entry().version_labels == {}
    # The reader's keys cannot move a label.
    with pytest.raises(AccessDenied):
        ClusterOps(seaweed.bucket(READER, prefix="ops")).label("stable", 6)


def test_ops_and_export_command_lines(seaweed: SeaweedServer) -> None:
    """`python -m export publish --to` validates and uploads (refused with read-only keys);
    `python -m serving.ops --bucket` moves a label."""
    url = "s3://shine-models/cli"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHINE_")}

    def run(keys: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        env = {**base, **seaweed.env(keys)}
        return subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    publish = ("export", "publish", "--to", url, "--source", str(SOURCE))
    denied = run(READER, *publish)
    assert denied.returncode == 1 and "AccessDenied" in denied.stderr
    done = run(WRITER, *publish, "--version", "6")
    assert done.returncode == 0, done.stderr
    assert "cli/skin_analyzer/6" in done.stdout
    writer = seaweed.bucket(WRITER, prefix="cli")
    writer.put_served("models.config", (ROOT / "serving" / "models.config").read_bytes())
    label = run(WRITER, "serving.ops", "--bucket", url, "label", "stable", "6")
    assert label.returncode == 0, label.stderr
    assert "version 6: selected  labels: stable" in label.stdout
    assert ClusterOps(writer).entry().version_labels == {"stable": 6}
    refused = run(READER, "serving.ops", "--bucket", url, "unlabel", "stable")
    assert refused.returncode == 1 and "AccessDenied" in refused.stderr
    assert json.loads(writer.get(writer.url.key(MODEL, "6", RECORD_NAME)) or b"{}")["version"] == 6


def test_a_locally_decided_config_is_pushed_state_first(seaweed: SeaweedServer, tmp_path: Path) -> None:
    writer = seaweed.bucket(WRITER, prefix="push")
    (tmp_path / "admission.json").write_text('{"admitted": [6]}')
    with pytest.raises(ClusterOpsError, match=r"no models\.config"):
        push_served_config(writer, tmp_path, ("models.config", "admission.json"))
    (tmp_path / "models.config").write_text("not a config {")
    with pytest.raises(ClusterOpsError, match="not a valid config"):
        push_served_config(writer, tmp_path)
    (tmp_path / "models.config").write_bytes((ROOT / "serving" / "models.config").read_bytes())
    assert push_served_config(writer, tmp_path, ("models.config", "admission.json")) == [
        "admission.json",
        "models.config",
    ]
    assert writer.served_config() == {
        "admission.json": b'{"admitted": [6]}',
        "models.config": (ROOT / "serving" / "models.config").read_bytes(),
    }
    with pytest.raises(AccessDenied):
        push_served_config(seaweed.bucket(READER, prefix="push"), tmp_path)
