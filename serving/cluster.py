"""Ops against the bucket: change what every replica serves by rewriting the bucket's served config.

The same commands as `python -m serving.ops` on one host (status, pin, rollback, unpin, label,
unlabel), given `--bucket s3://BUCKET/PREFIX`: the change is one write of models.config in the bucket,
and every replica's sync mirrors it (the versions first, then the config its model server polls).
A version may be pinned or labelled only when it is complete in the bucket. Needs read-write keys.
`push_served_config` uploads a config decided in a local folder (admission's) the same way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from serving import contract
from serving.bucket import SERVED_CONFIG, ModelBucket
from serving.config import ModelEntry, VersionPolicy, parse_model_config, render_model_config
from serving.wire.model_status_pb2 import ModelServerConfig

DEFAULT_POLICY = VersionPolicy("latest", num_versions=2)


class ClusterOpsError(RuntimeError):
    """The change cannot be made: no served config, or the version is not complete in the bucket."""


class ClusterOps:
    """Reads and changes the served config in the bucket; raises ClusterOpsError or BucketError."""

    def __init__(self, bucket: ModelBucket, model_name: str = contract.MODEL_NAME) -> None:
        self.bucket = bucket
        self.model_name = model_name

    def entries(self) -> list[ModelEntry]:
        data = self.bucket.get(self.bucket.url.key(SERVED_CONFIG))
        if data is None:
            raise ClusterOpsError(f"{self.bucket.url} has no {SERVED_CONFIG}")
        return parse_model_config(data.decode(), ModelServerConfig)

    def entry(self) -> ModelEntry:
        for entry in self.entries():
            if entry.name == self.model_name:
                return entry
        raise ClusterOpsError(f"the served config has no model {self.model_name!r}")

    def complete(self) -> list[int]:
        """Versions complete in the bucket (a completion record exists)."""
        return sorted(self.bucket.complete_versions(self._folder()))

    def served(self) -> list[int]:
        """The complete versions the served config selects, highest first (replicas leave out any whose
        bytes do not match their record)."""
        return self.entry().policy.select(self.complete())

    def _folder(self) -> str:
        return self.entry().base_path.rstrip("/").rsplit("/", 1)[-1]

    def apply(self, entry: ModelEntry) -> None:
        """Write the served config with `entry` in place of its model's (one object write)."""
        entries = [entry if e.name == entry.name else e for e in self.entries()]
        self.bucket.put_served(SERVED_CONFIG, render_model_config(entries).encode())

    def _require_complete(self, version: int) -> None:
        if version not in self.complete():
            raise ClusterOpsError(f"version {version} is not complete in {self.bucket.url}")

    def pin(self, version: int) -> None:
        """Serve only `version` everywhere; labels move to it."""
        self._require_complete(version)
        entry = self.entry()
        labels = dict.fromkeys(entry.version_labels, version)
        self.apply(
            replace(entry, policy=VersionPolicy("specific", versions=(version,)), version_labels=labels)
        )

    def rollback(self) -> int:
        """Pin the newest complete version older than the newest served one; returns it."""
        served = self.served()
        older = [v for v in self.complete() if served and v < served[0]]
        if not older:
            raise ClusterOpsError(f"nothing to roll back to: served {served}, complete {self.complete()}")
        self.pin(older[-1])
        return older[-1]

    def unpin(self) -> None:
        self.apply(replace(self.entry(), policy=DEFAULT_POLICY))

    def label(self, label: str, version: int) -> None:
        """Point `label` at a complete version. Whether it is served is each replica's to say: a version
        whose bytes do not match its record is complete here yet mirrored nowhere, and a model server
        refuses a label on a version it does not serve, keeping its previous config."""
        self._require_complete(version)
        entry = self.entry()
        self.apply(replace(entry, version_labels={**entry.version_labels, label: version}))

    def unlabel(self, label: str) -> None:
        entry = self.entry()
        self.apply(
            replace(entry, version_labels={k: v for k, v in entry.version_labels.items() if k != label})
        )


def run(ops: ClusterOps, command: str, version: int | None, label: str | None) -> list[str]:
    """Carry out one serving.ops command against the bucket; returns the lines to print."""
    lines = []
    if command == "rollback":
        lines.append(f"rolled back: every replica serves version {ops.rollback()} only")
    elif command == "pin" and version is not None:
        ops.pin(version)
        lines.append(f"pinned: every replica serves version {version} only")
    elif command == "unpin":
        ops.unpin()
        lines.append("unpinned: every replica serves the newest versions")
    elif command == "label" and label is not None and version is not None:
        ops.label(label, version)
        lines.append(f"label {label} -> version {version}")
    elif command == "unlabel" and label is not None:
        ops.unlabel(label)
        lines.append(f"label {label} removed")
    entry = ops.entry()
    served = set(ops.served())
    for number in ops.complete():
        labels = [k for k, v in entry.version_labels.items() if v == number]
        state = "selected" if number in served else "complete"
        lines.append(f"version {number}: {state}" + (f"  labels: {', '.join(labels)}" if labels else ""))
    return lines


def push_served_config(
    bucket: ModelBucket, folder: Path, names: tuple[str, ...] = (SERVED_CONFIG,)
) -> list[str]:
    """Upload the served config a decider wrote in `folder` (models.config, and admission's state file
    by name) to the bucket, models.config last so its readers find the state it refers to; returns the
    names uploaded. Raises ClusterOpsError when models.config is missing or malformed, AccessDenied with
    read-only keys."""
    config = folder / SERVED_CONFIG
    if not config.is_file():
        raise ClusterOpsError(f"no {SERVED_CONFIG} in {folder}")
    try:
        parse_model_config(config.read_text(), ModelServerConfig)
    except ValueError as exc:
        raise ClusterOpsError(f"{config} is not a valid config: {exc}") from exc
    ordered = [n for n in names if n != SERVED_CONFIG] + [SERVED_CONFIG]
    for name in ordered:
        bucket.put_served(name, (folder / name).read_bytes())
    return ordered
