"""Ops against the bucket: change what every replica serves through the bucket's served config.

The same commands as `python -m serving.ops` on one host (status, pin, rollback, unpin, label,
unlabel), given `--bucket s3://BUCKET/PREFIX`. Where admission runs for the cluster (its state,
`<model>/admission.json`, is in the bucket), it is the one writer of the served config: a command is
checked against that state first (a version admission refused or has not admitted can be neither pinned
nor labelled), then left for admission as a request (`<model>/request.json`), which it carries out
through its own checks and answers in its state; the command waits for that answer. Without admission,
the change is one write of models.config, allowed only for versions complete in the bucket. Either way
every replica's sync mirrors the result (the versions first, then the config its model server polls).
Needs read-write keys. `push_served` uploads what admission decided (its state, then models.config).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from serving import contract
from serving.admission.state import STATE_FILE, AdmissionState, RequestOutcome, StateError
from serving.bucket import SERVED_CONFIG, ModelBucket
from serving.config import ModelEntry, VersionPolicy, parse_model_config, render_model_config
from serving.wire.model_status_pb2 import ModelServerConfig

DEFAULT_POLICY = VersionPolicy("latest", num_versions=2)
REQUEST_FILE = "request.json"
COMMANDS = ("pin", "unpin", "rollback", "label", "unlabel")


class ClusterOpsError(RuntimeError):
    """The change cannot be made: no served config, or the version is not complete in the bucket."""


@dataclass(frozen=True)
class OpsRequest:
    """One ops command left in the bucket for admission to carry out; `id` matches it to its answer."""

    id: str
    command: str
    version: int | None = None
    label: str | None = None

    def to_json(self) -> bytes:
        body = {"id": self.id, "command": self.command, "version": self.version, "label": self.label}
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OpsRequest:
        """Raises ValueError when the request is malformed or names an unknown command."""
        try:
            body = json.loads(data)
            version = body.get("version")
            label = body.get("label")
            request = cls(
                str(body["id"]),
                str(body["command"]),
                None if version is None else int(version),
                None if label is None else str(label),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed ops request: {exc!r}") from exc
        if request.command not in COMMANDS:
            raise ValueError(f"unknown ops command {request.command!r}")
        if request.command in ("pin", "label") and request.version is None:
            raise ValueError(f"ops command {request.command!r} needs a version")
        if request.command in ("label", "unlabel") and not request.label:
            raise ValueError(f"ops command {request.command!r} needs a label")
        return request


class ClusterOps:
    """Reads and changes the served config in the bucket; raises ClusterOpsError or BucketError."""

    def __init__(
        self,
        bucket: ModelBucket,
        model_name: str = contract.MODEL_NAME,
        answer_timeout_s: float = 300.0,
        poll_s: float = 0.5,
    ) -> None:
        self.bucket = bucket
        self.model_name = model_name
        # A pin may bring a version back into service on admission's model server (load and probe).
        self.answer_timeout_s = answer_timeout_s
        self.poll_s = poll_s

    def state(self) -> AdmissionState | None:
        """Admission's state in the bucket; None where admission has not decided for this cluster."""
        data = self.bucket.get(self.bucket.url.key(self._folder(), STATE_FILE))
        if data is None:
            return None
        try:
            return AdmissionState.from_json(data.decode())
        except (StateError, UnicodeDecodeError) as exc:
            raise ClusterOpsError(f"admission's state in {self.bucket.url} cannot be read: {exc}") from exc

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
        """What admission serves, or else the complete versions the served config selects, highest first
        (replicas leave out any whose bytes do not match their record)."""
        state = self.state()
        if state is not None:
            return sorted(state.served, reverse=True)
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

    def _require_passed(self, state: AdmissionState, version: int) -> None:
        decision = state.decisions.get(version)
        if decision is None:
            raise ClusterOpsError(
                f"version {version} has not been admitted (not checked yet, or not complete in the bucket)"
            )
        if decision.refused:
            raise ClusterOpsError(
                f"version {version} was refused by admission ({decision.code}): {decision.reason}"
            )

    def request(self, command: str, version: int | None = None, label: str | None = None) -> RequestOutcome:
        """Leave a command for admission and wait for its answer; returns it. Raises
        ClusterOpsError with admission's reason when it refused, or when no answer came in time."""
        request = OpsRequest(uuid.uuid4().hex, command, version, label)
        self.bucket.put(self.bucket.url.key(self._folder(), REQUEST_FILE), request.to_json())
        deadline = time.monotonic() + self.answer_timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            answer = state.request if state is not None else None
            if answer is not None and answer.id == request.id:
                if not answer.ok:
                    raise ClusterOpsError(f"admission refused: {answer.message}")
                return answer
            time.sleep(self.poll_s)
        raise ClusterOpsError(
            f"admission did not answer {command} in {self.answer_timeout_s:g} s (is it running?); the "
            "request stays in the bucket until admission carries it out or another replaces it"
        )

    def pin(self, version: int) -> None:
        """Serve only `version` everywhere; labels move to it."""
        state = self.state()
        if state is not None:
            self._require_passed(state, version)
            self.request("pin", version)
            return
        self._require_complete(version)
        entry = self.entry()
        labels = dict.fromkeys(entry.version_labels, version)
        self.apply(
            replace(entry, policy=VersionPolicy("specific", versions=(version,)), version_labels=labels)
        )

    def rollback(self) -> int:
        """Pin the newest version that passed (or is complete, without admission) older than the newest
        served one; returns it."""
        if self.state() is not None:
            answer = self.request("rollback")
            if answer.version is None:
                raise ClusterOpsError(f"admission's answer names no version: {answer.message}")
            return answer.version
        served = self.served()
        older = [v for v in self.complete() if served and v < served[0]]
        if not older:
            raise ClusterOpsError(f"nothing to roll back to: served {served}, complete {self.complete()}")
        self.pin(older[-1])
        return older[-1]

    def unpin(self) -> None:
        if self.state() is not None:
            self.request("unpin")
            return
        self.apply(replace(self.entry(), policy=DEFAULT_POLICY))

    def label(self, label: str, version: int) -> None:
        """Point `label` at a version admission serves (without admission: a complete version; whether
        it is served is then each replica's to say: a version whose bytes do not match its record is
        complete here yet mirrored nowhere, and a model server refuses a label on a version it does
        not serve, keeping its previous config)."""
        state = self.state()
        if state is not None:
            self._require_passed(state, version)
            self.request("label", version, label)
            return
        self._require_complete(version)
        entry = self.entry()
        self.apply(replace(entry, version_labels={**entry.version_labels, label: version}))

    def unlabel(self, label: str) -> None:
        if self.state() is not None:
            self.request("unlabel", label=label)
            return
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
    admission = ops.state()
    if admission is not None:
        for number in sorted(set(admission.decisions) | set(ops.complete())):
            decision = admission.decisions.get(number)
            verdict: str = "not decided yet" if decision is None else decision.verdict
            if decision is not None and decision.refused:
                verdict += f" ({decision.code}: {decision.reason})"
            labels = [k for k, v in admission.labels.items() if v == number]
            lines.append(
                f"version {number}: {verdict}"
                + ("  served" if number in admission.served else "")
                + (f"  labels: {', '.join(labels)}" if labels else "")
            )
        return lines
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
    return push_served(bucket, {name: (folder / name).read_bytes() for name in names})


def push_served(bucket: ModelBucket, objects: Mapping[str, bytes]) -> list[str]:
    """Upload served-config objects by name (models.config, `<model>/admission.json`), models.config
    last so its readers find the state it refers to; returns the names uploaded. Raises ClusterOpsError
    when models.config is malformed, AccessDenied with read-only keys, BucketError."""
    if SERVED_CONFIG in objects:
        try:
            parse_model_config(objects[SERVED_CONFIG].decode(), ModelServerConfig)
        except ValueError as exc:
            raise ClusterOpsError(f"{SERVED_CONFIG} is not a valid config: {exc}") from exc
    ordered = [n for n in objects if n != SERVED_CONFIG] + [n for n in objects if n == SERVED_CONFIG]
    for name in ordered:
        bucket.put_served(name, objects[name])
    return ordered
