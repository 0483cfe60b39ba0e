"""Admission for a whole cluster: what it decides becomes the bucket's served config, and the ops
requests `serving.ops --bucket` leaves in the bucket are carried out through it.

Admission's pod mirrors every complete version from the bucket into its model repository (the sync's
`--all-versions`) and decides on them against its own model server as on one host. After each decision
`BucketLink.publish` pushes the state file (`<model>/admission.json`: what passed, what is served, what
was refused and why) and then a models.config that names exactly the served versions (TF Serving's
`specific` policy, with the state's labels); every replica's sync takes both, so a version admission
refused is served by no replica. A config that takes a version out of service is pushed only `drain_s`
after the state that did, so replicas' routers have moved off it before their model servers unload it.
Candidates admission is still probing are never named in the bucket.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath

from serving.admission.admitter import Admission
from serving.admission.control import ReloadRefused
from serving.admission.errors import AdmissionError
from serving.admission.state import STATE_FILE, AdmissionState, RequestOutcome, StateError
from serving.bucket import SERVED_CONFIG, BucketError, ModelBucket
from serving.cluster import REQUEST_FILE, OpsRequest, push_served
from serving.config import VersionPolicy, parse_model_config, render_model_config
from serving.wire.model_status_pb2 import ModelServerConfig

logger = logging.getLogger(__name__)


def seed(config_path: Path, model_repo: Path, bucket_config: Path) -> list[Path]:
    """Before admission's first start in a pod: take the bucket's served config (mirrored into
    `bucket_config` by the sync) as admission's own config, and the bucket's state of each model as its
    state, where it has none, so pins, labels and the last answered request survive a new pod. Returns
    the files written."""
    written = []
    source = bucket_config / SERVED_CONFIG
    if not config_path.is_file() and source.is_file():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, config_path)
        written.append(config_path)
    if not config_path.is_file():
        return written
    for entry in parse_model_config(config_path.read_text(), ModelServerConfig):
        folder = PurePosixPath(entry.base_path).name
        state, target = bucket_config / folder / STATE_FILE, model_repo / folder / STATE_FILE
        if state.is_file() and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(state, target)
            written.append(target)
    return written


class BucketLink:
    """Publishes one admission's decisions to the bucket and takes the ops requests left there. Every
    method raises BucketError when the bucket cannot be used; nothing is lost: the next call pushes what
    is still unpushed, and a request not yet answered is taken again."""

    def __init__(
        self,
        admission: Admission,
        bucket: ModelBucket,
        drain_s: float,
        request_poll_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admission = admission
        self.bucket = bucket
        self.drain_s = drain_s
        self.request_poll_s = request_poll_s
        self.clock = clock
        self.folder = PurePosixPath(admission.loader.entry().base_path).name
        self._pushed: dict[str, bytes] | None = None  # what the bucket holds, once read
        self._state_pushed_at = float("-inf")
        self._request_checked_at = float("-inf")
        admission.on_state = self._publish_now

    def _publish_now(self) -> None:
        """Push a state admission just wrote, before it drains; a bucket away is retried by the loop."""
        try:
            self.publish()
        except BucketError as exc:
            logger.warning("state not pushed yet (%s); the next cycle tries again", exc)

    def _state_key(self) -> str:
        return f"{self.folder}/{STATE_FILE}"

    def served_config(self, state: AdmissionState) -> bytes | None:
        """The models.config replicas serve: exactly the state's served versions and labels (None while
        nothing is served: the bucket's config stays as it is)."""
        if not state.served:
            return None
        entries = self.admission.loader.entries()
        policy = VersionPolicy("specific", versions=tuple(sorted(state.served)))
        return render_model_config(
            [
                replace(e, policy=policy, version_labels=dict(state.labels))
                if e.name == state.model_name
                else e
                for e in entries
            ]
        ).encode()

    def publish(self) -> list[str]:
        """Push the state and the config it implies where they changed; returns the names pushed."""
        if self._pushed is None:
            pushed = {}
            for name in (self._state_key(), SERVED_CONFIG):
                data = self.bucket.get(self.bucket.url.key(name))
                if data is not None:
                    pushed[name] = data
            self._pushed = pushed
        try:
            state_bytes = self.admission.state_file.read_bytes()
        except FileNotFoundError:
            return []
        state = AdmissionState.from_json(state_bytes.decode())
        objects = {}
        if state_bytes != self._pushed.get(self._state_key()):
            objects[self._state_key()] = state_bytes
        config = self.served_config(state)
        if config is not None and config != self._pushed.get(SERVED_CONFIG):
            before = self._served_before(state.model_name)
            draining = bool(before - set(state.served)) and (
                bool(objects) or self.clock() - self._state_pushed_at < self.drain_s
            )
            if not draining:
                objects[SERVED_CONFIG] = config
        if not objects:
            return []
        names = push_served(self.bucket, objects)
        if self._state_key() in objects:
            self._state_pushed_at = self.clock()
        self._pushed.update(objects)
        logger.info("pushed %s to %s (served %s)", ", ".join(names), self.bucket.url, list(state.served))
        return names

    def _served_before(self, model_name: str) -> set[int]:
        """The versions the config in the bucket has replicas serve (a `latest` one, as before admission
        first decided, selects among the complete versions)."""
        config = (self._pushed or {}).get(SERVED_CONFIG)
        if config is None:
            return set()
        for entry in parse_model_config(config.decode(), ModelServerConfig):
            if entry.name == model_name:
                if entry.policy.kind == "specific":
                    return set(entry.policy.versions)
                return set(entry.policy.select(sorted(self.bucket.complete_versions(self.folder))))
        return set()

    def take_request(self) -> RequestOutcome | None:
        """Carry out the ops request in the bucket if it has not been answered; returns the answer
        (None when there was nothing to do). Raises ServerDown (the request is taken again)."""
        if self.clock() - self._request_checked_at < self.request_poll_s:
            return None
        self._request_checked_at = self.clock()
        data = self.bucket.get(self.bucket.url.key(self.folder, REQUEST_FILE))
        if data is None:
            return None
        try:
            request = OpsRequest.from_json(data)
        except ValueError as exc:
            logger.error("ops request in %s ignored: %s", self.bucket.url, exc)
            return None
        answered = self.admission.state().request
        if answered is not None and answered.id == request.id:
            return None
        try:
            outcome = self._carry_out(request)
        except (AdmissionError, ReloadRefused, StateError) as exc:
            outcome = RequestOutcome(request.id, False, str(exc))
        logger.info(
            "ops request %s %s: %s", request.command, "done" if outcome.ok else "refused", outcome.message
        )
        self.admission.record(outcome)
        return outcome

    def _carry_out(self, request: OpsRequest) -> RequestOutcome:
        admission, version, label = self.admission, request.version, request.label
        if request.command == "pin" and version is not None:
            admission.pin(version)
            return RequestOutcome(request.id, True, f"every replica serves version {version} only", version)
        if request.command == "rollback":
            target = admission.rollback()
            return RequestOutcome(
                request.id, True, f"rolled back: every replica serves version {target}", target
            )
        if request.command == "unpin":
            admission.unpin()
            return RequestOutcome(request.id, True, "unpinned: the newest admitted versions are served")
        if request.command == "label" and label and version is not None:
            admission.label(label, version)
            return RequestOutcome(request.id, True, f"label {label} -> version {version}", version)
        if request.command == "unlabel" and label:
            admission.unlabel(label)
            return RequestOutcome(request.id, True, f"label {label} removed")
        raise AdmissionError(f"cannot carry out {request.command!r}")
