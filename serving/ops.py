"""Ops commands for a running model server: status, pin/rollback, unpin, labels. No TensorFlow needed.

Every change goes through admission (serving/admission): under its lock, only to versions that passed
its checks, brought back into service with a probe when they are not loaded, published in its state
file before anything is unloaded, then written to models.config and handed to the server through
ModelService.HandleReloadConfigRequest (TF Serving and the local server alike). A version that did not
pass can never be pinned or labelled. In-flight requests finish on the version they started on.

    python -m serving.ops status
    python -m serving.ops rollback            # serve only the admitted version before the served one
    python -m serving.ops pin 3               # serve only version 3 (it must have passed admission)
    python -m serving.ops unpin               # back to the newest admitted version and one to roll back to
    python -m serving.ops label canary 4      # point a label at a served version
    python -m serving.ops unlabel canary      # take a label off
    python -m serving.ops --bucket s3://BUCKET/PREFIX pin 3   # every replica of a cluster (serving.cluster)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from serving import contract
from serving.admission.admitter import Admission
from serving.admission.control import ModelServerControl, ReloadRefused, ServerDown
from serving.admission.errors import AdmissionError
from serving.admission.state import AdmissionState
from serving.config import ModelEntry, parse_model_config
from serving.repository import CONTAINER_MODELS
from serving.wire.model_status_pb2 import ModelServerConfig

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class OpsError(RuntimeError):
    """Admission or the server refused a change, or the server did not reach the asked-for state in time."""


class ModelServerOps:
    """Reads and changes what one model server serves, through admission."""

    def __init__(
        self,
        address: str,
        config_path: Path,
        model_repo: Path | None = None,
        model_name: str = contract.MODEL_NAME,
        drain_s: float = 5.0,
    ) -> None:
        self.address = address
        self.config_path = config_path
        self.model_name = model_name
        self.control = ModelServerControl(address, model_name)
        try:
            self.admission = Admission(
                self.control,
                config_path,
                model_repo or ROOT / "model_repo",
                {CONTAINER_MODELS: model_repo or ROOT / "model_repo"},
                model_name,
                drain_s=drain_s,
            )
        except AdmissionError as exc:
            self.control.close()
            raise OpsError(str(exc)) from exc

    def close(self) -> None:
        self.control.close()

    def entry(self) -> ModelEntry:
        for entry in parse_model_config(self.config_path.read_text(), ModelServerConfig):
            if entry.name == self.model_name:
                return entry
        raise OpsError(f"{self.config_path} has no model {self.model_name!r}")

    def state(self) -> AdmissionState:
        return self.admission.state()

    def status(self) -> dict[int, str]:
        """Version -> state name, as the server reports it; raises OpsError if it cannot be reached."""
        try:
            return {v: item.state for v, item in self.control.status().items()}
        except ServerDown as exc:
            raise OpsError(f"model server at {exc}") from exc

    def available(self) -> list[int]:
        return sorted(v for v, state in self.status().items() if state == "AVAILABLE")

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

    def _do(self, change: Callable[[], T]) -> T:
        try:
            return change()
        except (AdmissionError, ReloadRefused) as exc:
            raise OpsError(str(exc)) from exc
        except ServerDown as exc:
            raise OpsError(f"model server at {exc}") from exc

    def settled(self, served: set[int], timeout_s: float = 120.0) -> None:
        """Wait until the server has unloaded everything outside `served` (requests in flight on it
        finished) and `served` are AVAILABLE; raises OpsError on timeout."""
        deadline = time.monotonic() + timeout_s
        last: object = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.status()
            except OpsError as exc:
                last = exc
            else:
                live = {v for v, state in last.items() if state in ("LOADING", "AVAILABLE", "UNLOADING")}
                if live == served and all(last[v] == "AVAILABLE" for v in served):
                    return
            time.sleep(0.1)
        raise OpsError(f"server did not settle on versions {sorted(served)}: {last}")

    def pin(self, version: int) -> None:
        """Serve only `version`, which must have passed admission; labels move to it. Returns once the
        other versions are unloaded."""
        self._do(lambda: self.admission.pin(version))
        self.settled({version})

    def rollback(self) -> int:
        """Pin the newest admitted version older than the served one; returns it once the others are
        unloaded."""
        target = self._do(self.admission.rollback)
        self.settled({target})
        return target

    def unpin(self) -> None:
        self._do(self.admission.unpin)

    def label(self, label: str, version: int) -> None:
        """Point `label` at a served version that passed admission."""
        self._do(lambda: self.admission.label(label, version))

    def unlabel(self, label: str) -> None:
        self._do(lambda: self.admission.unlabel(label))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default="127.0.0.1:8500")
    parser.add_argument("--config", type=Path, default=ROOT / "serving" / "models.config")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
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
    try:
        ops = ModelServerOps(args.address, args.config, args.model_repo)
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "rollback":
            print(f"rolled back: serving version {ops.rollback()} only")
        elif args.command == "pin":
            ops.pin(args.version)
            print(f"pinned: serving version {args.version} only")
        elif args.command == "unpin":
            ops.unpin()
            print("unpinned: serving the newest admitted version and one to roll back to")
        elif args.command == "label":
            ops.label(args.label, args.version)
            print(f"label {args.label} -> version {args.version}")
        elif args.command == "unlabel":
            ops.unlabel(args.label)
            print(f"label {args.label} removed")
        entry = ops.entry()
        decisions = ops.state().decisions
        served = ops.state().served
        for version in sorted(set(ops.status()) | set(decisions)):
            state = ops.status().get(version, "not loaded")
            labels = [k for k, v in entry.version_labels.items() if v == version]
            decision = decisions.get(version)
            verdict = "" if decision is None else f"  {decision.verdict}"
            if decision is not None and decision.refused:
                verdict += f" ({decision.code}: {decision.reason})"
            print(
                f"version {version}: {state}{verdict}"
                + ("  served" if version in served else "")
                + (f"  labels: {', '.join(labels)}" if labels else "")
            )
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
