"""Ops commands for a running model server: status, pin/rollback, unpin, labels. No TensorFlow needed.

Each change rewrites models.config atomically (so a restart keeps it) and asks the server to reload it
through ModelService.HandleReloadConfigRequest (so it applies now, on TF Serving and the local server
alike). In-flight requests finish on the version they started on.

    python -m serving.ops status
    python -m serving.ops rollback            # serve only the version before the newest one
    python -m serving.ops pin 3               # serve only version 3
    python -m serving.ops unpin               # back to the newest two versions
    python -m serving.ops label canary 4      # point a label at a served version
    python -m serving.ops unlabel canary      # take a label off
    python -m serving.ops --bucket s3://BUCKET/PREFIX pin 3   # every replica of a cluster (serving.cluster)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import grpc
from google.protobuf import text_format

from serving import contract
from serving.config import ModelEntry, VersionPolicy, parse_model_config, render_model_config
from serving.wire import model_status_pb2, services_pb2_grpc
from serving.wire.model_status_pb2 import ModelServerConfig

ROOT = Path(__file__).resolve().parent.parent
STATE_NAMES = {v.number: v.name for v in model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values}
DEFAULT_POLICY = VersionPolicy("latest", num_versions=2)


class OpsError(RuntimeError):
    """The server refused a change or did not reach the asked-for state in time."""


class ModelServerOps:
    """Reads and changes what one model server serves."""

    def __init__(self, address: str, config_path: Path, model_name: str = contract.MODEL_NAME) -> None:
        self.address = address
        self.config_path = config_path
        self.model_name = model_name
        self._channel = grpc.insecure_channel(address)
        self._stub = services_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def entries(self) -> list[ModelEntry]:
        return parse_model_config(self.config_path.read_text(), ModelServerConfig)

    def entry(self) -> ModelEntry:
        for entry in self.entries():
            if entry.name == self.model_name:
                return entry
        raise OpsError(f"{self.config_path} has no model {self.model_name!r}")

    def status(self) -> dict[int, str]:
        """Version -> state name, as the server reports it; raises OpsError if it cannot be reached."""
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        try:
            response = self._stub.GetModelStatus(request, timeout=5.0)
        except grpc.RpcError as exc:
            raise OpsError(f"model server at {self.address}: {exc.code().name} {exc.details()}") from exc
        return {
            int(item.version): STATE_NAMES.get(int(item.state), "UNKNOWN")
            for item in response.model_version_status
        }

    def available(self) -> list[int]:
        return sorted(v for v, state in self.status().items() if state == "AVAILABLE")

    def apply(self, entry: ModelEntry) -> None:
        """Write models.config atomically, then have the server reload it; raises OpsError."""
        entries = [entry if e.name == entry.name else e for e in self.entries()]
        text = render_model_config(entries)
        request = model_status_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        try:
            response = self._stub.HandleReloadConfigRequest(request, timeout=120.0)
        except grpc.RpcError as exc:
            raise OpsError(f"reload refused: {exc.code().name} {exc.details()}") from exc
        if response.status.error_code != 0:
            raise OpsError(f"reload refused: {response.status.error_message}")
        _write_atomically(self.config_path, text)

    def wait_for(self, serving: set[int], timeout_s: float = 120.0) -> None:
        """Wait until exactly `serving` are AVAILABLE; raises OpsError on timeout."""
        deadline = time.monotonic() + timeout_s
        last: object = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.status()
            except OpsError as exc:  # still starting: the model may not be known yet
                last = exc
            else:
                if {v for v, state in last.items() if state == "AVAILABLE"} == serving:
                    return
            time.sleep(0.2)
        raise OpsError(f"server did not settle on versions {sorted(serving)}: {last}")

    def pin(self, version: int) -> None:
        """Serve only `version` (it must be on disk); labels that pointed elsewhere move to it."""
        entry = self.entry()
        labels = dict.fromkeys(entry.version_labels, version)
        self.apply(
            replace(entry, policy=VersionPolicy("specific", versions=(version,)), version_labels=labels)
        )
        self.wait_for({version})

    def rollback(self) -> int:
        """Pin the newest AVAILABLE version older than the newest one; returns it."""
        available = self.available()
        if len(available) < 2:
            raise OpsError(f"nothing to roll back to: available versions {available}")
        target = available[-2]
        self.pin(target)
        return target

    def unpin(self) -> None:
        entry = self.entry()
        self.apply(replace(entry, policy=DEFAULT_POLICY))

    def label(self, label: str, version: int) -> None:
        entry = self.entry()
        self.apply(replace(entry, version_labels={**entry.version_labels, label: version}))

    def unlabel(self, label: str) -> None:
        """Take a label off (before removing its version: a config whose label names a version that is
        not served is refused, on a reload and at start-up)."""
        entry = self.entry()
        self.apply(
            replace(entry, version_labels={k: v for k, v in entry.version_labels.items() if k != label})
        )


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename over it, so a reader never sees half a config."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default="127.0.0.1:8500")
    parser.add_argument("--config", type=Path, default=ROOT / "serving" / "models.config")
    parser.add_argument("--bucket", help="s3://BUCKET/PREFIX: change the served config of a cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status")
    commands.add_parser("rollback")
    commands.add_parser("unpin")
    pin = commands.add_parser("pin")
    pin.add_argument("version", type=int)
    label = commands.add_parser("label")
    label.add_argument("label")
    label.add_argument("version", type=int)
    unlabel = commands.add_parser("unlabel")
    unlabel.add_argument("label")
    args = parser.parse_args(argv)
    if args.bucket:
        return _main_bucket(args)
    ops = ModelServerOps(args.address, args.config)
    try:
        if args.command == "rollback":
            print(f"rolled back: serving version {ops.rollback()} only")
        elif args.command == "pin":
            ops.pin(args.version)
            print(f"pinned: serving version {args.version} only")
        elif args.command == "unpin":
            ops.unpin()
            print("unpinned: serving the newest versions")
        elif args.command == "label":
            ops.label(args.label, args.version)
            print(f"label {args.label} -> version {args.version}")
        elif args.command == "unlabel":
            ops.unlabel(args.label)
            print(f"label {args.label} removed")
        entry = ops.entry()
        for version, state in sorted(ops.status().items()):
            labels = [k for k, v in entry.version_labels.items() if v == version]
            print(f"version {version}: {state}" + (f"  labels: {', '.join(labels)}" if labels else ""))
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        ops.close()
    return 0


def _main_bucket(args: argparse.Namespace) -> int:
    """The same commands against the bucket's served config (serving.cluster)."""
    from serving.bucket import BucketError, BucketSettings, BucketUrl, ModelBucket
    from serving.cluster import ClusterOps, ClusterOpsError, run

    try:
        bucket = ModelBucket(BucketSettings.from_env(), BucketUrl.parse(args.bucket))
        lines = run(
            ClusterOps(bucket), args.command, getattr(args, "version", None), getattr(args, "label", None)
        )
    except (ValueError, BucketError, ClusterOpsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
