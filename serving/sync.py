"""The sync beside each model server and orchestrator: mirrors what the bucket serves into a local folder.

Each pass reads the served config (models.config and every object beside it, and admission's state of
each model, `<model>/admission.json`) from the bucket, takes the complete versions it selects (those
with a completion record), downloads each one it lacks into a staging folder, checks every file's
size and SHA-256 and the content fingerprint against the record, and renames it into place; then it
writes the served config; a version is removed only once the config written no longer names it and it
has been unwanted for a grace period (so servers that poll the config have moved off it). TF Serving
and the orchestrator read the folder as they read model_repo/.

When the bucket is away, a pass fails, nothing local changes and the next pass tries again; the pass
record (.sync.json) says when the loop last ran, for the container's probes (`--check`).

    python -m serving.sync --from s3://BUCKET/PREFIX --to /models     # or SHINE_BUCKET_URL
    python -m serving.sync --check /models --max-age-s 120            # exit 0 while the loop runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from serving.admission.state import STATE_FILE
from serving.bucket import BucketError, BucketSettings, BucketUrl, ModelBucket, VersionRecord, file_digest
from serving.config import ConfigError, ModelEntry, parse_model_config
from serving.fingerprint import content_fingerprint
from serving.repository import versions_on_disk
from serving.wire.model_status_pb2 import ModelServerConfig

logger = logging.getLogger(__name__)

PASS_RECORD = ".sync.json"
# Beside each mirrored version: the fingerprint it was verified against (a republished record with a
# different fingerprint is fetched again).
VERIFIED = ".verified"
SERVED_CONFIG = "models.config"


@dataclass
class PassReport:
    """What one pass did."""

    ok: bool = True
    error: str = ""
    fetched: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    served: dict[str, list[int]] = field(default_factory=dict)


class Mirror:
    """Keeps `folder` in step with the bucket. `all_versions` mirrors every complete version (what
    admission probes), not only those the served config selects; `config_dir` is where the served config
    goes (default `folder`; admission, which writes its own config into `folder`, reads the bucket's
    from another)."""

    def __init__(
        self,
        bucket: ModelBucket,
        folder: Path,
        *,
        all_versions: bool = False,
        config_dir: Path | None = None,
        remove_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = bucket
        self.folder = folder
        self.all_versions = all_versions
        self.config_dir = config_dir or folder
        self.remove_after_s = remove_after_s
        self.clock = clock
        # Versions whose bytes did not match their record, by the fingerprint they claimed: not fetched
        # again until their record changes.
        self._refused: dict[tuple[str, int], str] = {}
        self._unwanted_since: dict[tuple[str, int], float] = {}

    def sync_once(self) -> PassReport:
        """One pass; raises BucketError (nothing local changed by the failing step) or ConfigError."""
        report = PassReport()
        served = self.bucket.served_config()
        config = served.get(SERVED_CONFIG)
        if config is None:
            raise BucketError(f"{self.bucket.url} has no {SERVED_CONFIG}: nothing to serve yet")
        entries = parse_model_config(config.decode(), ModelServerConfig)
        wanted: dict[str, set[int]] = {}
        for entry in entries:
            wanted[entry.name] = self._mirror_model(entry, report)
        # Admission's state of each model (which versions passed, which are served, which were refused and
        # why) goes where the orchestrator reads it, before the config: a server polling the config
        # never unloads a version the routers still think served.
        for entry in entries:
            folder = PurePosixPath(entry.base_path).name
            state = self.bucket.get(self.bucket.url.key(folder, STATE_FILE))
            if state is not None:
                (self.config_dir / folder).mkdir(parents=True, exist_ok=True)
                _write_if_changed(self.config_dir / folder / STATE_FILE, state)
        # The config goes in only once the versions it selects are in place.
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(served.items()):
            if "/" not in name and not name.startswith("."):
                _write_if_changed(self.config_dir / name, data)
        for entry in entries:
            self._remove_unwanted(entry, wanted[entry.name], report)
            report.served[entry.name] = sorted(wanted[entry.name])
        return report

    def _local(self, entry: ModelEntry) -> Path:
        # base_path is the model server's view (/models/<name>); the folder mirrors its last part.
        return self.folder / PurePosixPath(entry.base_path).name

    def _mirror_model(self, entry: ModelEntry, report: PassReport) -> set[int]:
        """Fetch the versions `entry` selects; returns the set the local folder must hold."""
        model_dir = self._local(entry)
        # Passes run one at a time: a staging folder found now was left by a run that was killed.
        for stale in model_dir.glob(".sync-*") if model_dir.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)
        remote = PurePosixPath(entry.base_path).name
        records = self.bucket.complete_versions(remote)
        for _ in range(len(records) + 1):  # each round refuses at least one version or settles
            candidates = [
                v for v, r in records.items() if self._refused.get((entry.name, v)) != r.fingerprint
            ]
            chosen = set(candidates) if self.all_versions else set(entry.policy.select(candidates))
            chosen |= {v for v in entry.version_labels.values() if v in candidates}
            newly_refused = False
            for version in sorted(chosen):
                if self._fetch(model_dir, remote, records[version], report):
                    continue
                self._refused[(entry.name, version)] = records[version].fingerprint
                newly_refused = True
            if not newly_refused:
                return chosen
        return set()

    def _fetch(self, model_dir: Path, remote: str, record: VersionRecord, report: PassReport) -> bool:
        """Make sure the version is in place and matches its record; False when its bytes do not."""
        final = model_dir / str(record.version)
        marker = final / VERIFIED
        if marker.is_file() and marker.read_text().strip() == record.fingerprint:
            return True
        model_dir.mkdir(parents=True, exist_ok=True)
        # TF Serving and the orchestrator only look at integer folder names: staging here is invisible.
        staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".sync-{record.version}-"))
        try:
            for relative, (size, digest) in record.files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.bucket.download(self.bucket.url.key(remote, str(record.version), relative), target)
                if target.stat().st_size != size or file_digest(target) != digest:
                    raise _Mismatch(f"{relative} does not match its record")
            fingerprint = content_fingerprint(staging)
            if fingerprint != record.fingerprint:
                raise _Mismatch(f"content fingerprint {fingerprint} is not the record's {record.fingerprint}")
            (staging / VERIFIED).write_text(record.fingerprint + "\n")
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from a server running as another user
            if final.exists():  # a stale copy (record changed): replaced, never edited in place
                shutil.rmtree(final)
            os.rename(staging, final)
        except (_Mismatch, FileNotFoundError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            logger.error("version %s/%d refused: %s", remote, record.version, exc)
            report.refused.append(f"{remote}/{record.version}")
            return False
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("version %s/%d mirrored (%s)", remote, record.version, record.fingerprint)
        report.fetched.append(f"{remote}/{record.version}")
        return True

    def _remove_unwanted(self, entry: ModelEntry, wanted: set[int], report: PassReport) -> None:
        named = set(entry.policy.versions) | set(entry.version_labels.values())
        model_dir = self._local(entry)
        now = self.clock()
        for version in versions_on_disk(model_dir):
            key = (entry.name, version)
            if version in wanted or version in named:
                self._unwanted_since.pop(key, None)
                continue
            since = self._unwanted_since.setdefault(key, now)
            if now - since >= self.remove_after_s:
                shutil.rmtree(model_dir / str(version))
                self._unwanted_since.pop(key, None)
                logger.info("version %s/%d removed (no longer served)", entry.name, version)
                report.removed.append(f"{entry.name}/{version}")

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set; a failed pass is logged and keeps what is mirrored."""
        while not stop.is_set():
            started = time.time()
            try:
                report = self.sync_once()
            except (BucketError, ConfigError, OSError) as exc:
                report = PassReport(ok=False, error=str(exc))
                logger.warning("sync pass failed, keeping what is mirrored: %s", exc)
            write_pass_record(self.folder, started, report, self.config_dir)
            stop.wait(interval_s)


class _Mismatch(Exception):
    """A downloaded version does not match its completion record."""


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it, so a server polling the file never reads half."""
    if path.is_file() and path.read_bytes() == data:
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def write_pass_record(
    folder: Path, started: float, report: PassReport, config_dir: Path | None = None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "pass_started": started,
        "ok": report.ok,
        "error": report.error,
        "served": report.served,
        "config_dir": str(config_dir or folder),
    }
    _write_if_changed(folder / PASS_RECORD, json.dumps(body).encode())


def check(folder: Path, max_age_s: float, now: float | None = None) -> str | None:
    """None when the loop ran a pass within `max_age_s` and a served config is in place; else why not."""
    try:
        body = json.loads((folder / PASS_RECORD).read_text())
    except (OSError, ValueError) as exc:
        return f"no pass record in {folder}: {exc}"
    age = (time.time() if now is None else now) - float(body.get("pass_started", 0))
    if age > max_age_s:
        return f"last pass {age:.0f} s ago (over {max_age_s:g} s)"
    if not (Path(body.get("config_dir") or folder) / SERVED_CONFIG).is_file():
        return f"no {SERVED_CONFIG} mirrored yet ({body.get('error') or 'first pass pending'})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="url", default=os.environ.get("SHINE_BUCKET_URL", ""))
    parser.add_argument("--to", type=Path)
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--remove-after-s", type=float, default=30.0)
    parser.add_argument("--all-versions", action="store_true", help="every complete version (admission)")
    parser.add_argument("--config-dir", type=Path, help="where the served config goes (default: --to)")
    parser.add_argument("--once", action="store_true", help="one pass, exit 1 if it failed")
    parser.add_argument("--check", type=Path, metavar="FOLDER", help="probe: exit 0 while the loop runs")
    parser.add_argument("--max-age-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.check:
        problem = check(args.check, args.max_age_s)
        if problem:
            print(problem, file=sys.stderr)
        return 1 if problem else 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.to is None:
        parser.error("--to FOLDER is required")
    try:
        url = BucketUrl.parse(args.url)
        settings = BucketSettings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    mirror = Mirror(
        ModelBucket(settings, url),
        args.to,
        all_versions=args.all_versions,
        config_dir=args.config_dir,
        remove_after_s=args.remove_after_s,
    )
    if args.once:
        started = time.time()
        try:
            report = mirror.sync_once()
        except (BucketError, ConfigError, OSError) as exc:
            report = PassReport(ok=False, error=str(exc))
        write_pass_record(args.to, started, report, args.config_dir)
        print(json.dumps(report.__dict__))
        return 0 if report.ok else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logger.info("mirroring %s into %s every %g s", url, args.to, args.interval_s)
    mirror.run(args.interval_s, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
