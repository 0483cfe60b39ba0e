"""The admission state file: which versions passed, which were refused and why, what is served.

One JSON file beside the version folders, `<model_repo>/<model>/admission.json` (TF Serving reads only
integer-named folders there, so the file is invisible to it). Admission is its only writer and replaces
it in one rename; the orchestrator reads it to route only to served versions and to name refused ones.
Together with models.config it is everything a replica needs to serve what admission decided, so an
object-storage sync mirrors both as plain files. Pure Python, no TensorFlow: the orchestrator imports it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

STATE_FILE = "admission.json"
FORMAT = 1

Verdict = Literal["admitted", "refused"]


class StateError(ValueError):
    """The state file cannot be read as admission writes it."""


@dataclass(frozen=True)
class Decision:
    """Admission's verdict on one version folder: `reason` in words safe to show a client (no paths),
    `code` a short name for metrics and logs (refusals only)."""

    version: int
    verdict: Verdict
    fingerprint: str = ""
    code: str = ""
    reason: str = ""
    decided_unix: float = 0.0

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"


@dataclass(frozen=True)
class RequestOutcome:
    """How admission answered the last ops request it took from the bucket (`serving.ops --bucket`):
    `ok` with what it did, or the reason it refused; `version` the version a rollback went to."""

    id: str
    ok: bool
    message: str
    version: int | None = None


@dataclass(frozen=True)
class AdmissionState:
    """What admission decided for one model: `served` (newest first) are the versions requests may go to,
    `pinned` the version ops pinned (None: the newest admitted one and one to roll back to)."""

    model_name: str
    served: tuple[int, ...] = ()
    pinned: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    decisions: dict[int, Decision] = field(default_factory=dict)
    updated_unix: float = 0.0
    request: RequestOutcome | None = None

    def admitted(self) -> list[int]:
        """Versions that passed, oldest first."""
        return sorted(v for v, d in self.decisions.items() if d.verdict == "admitted")

    def refused(self) -> dict[int, Decision]:
        return {v: d for v, d in sorted(self.decisions.items()) if d.refused}

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "format": FORMAT,
            "model": self.model_name,
            "served": list(self.served),
            "pinned": self.pinned,
            "labels": dict(sorted(self.labels.items())),
            "versions": [
                {
                    "version": d.version,
                    "verdict": d.verdict,
                    "fingerprint": d.fingerprint,
                    **({"code": d.code, "reason": d.reason} if d.refused else {}),
                    "decided_unix": round(d.decided_unix, 3),
                }
                for _, d in sorted(self.decisions.items())
            ],
            "updated_unix": round(self.updated_unix, 3),
        }
        if self.request is not None:
            body["request"] = {
                "id": self.request.id,
                "ok": self.request.ok,
                "message": self.request.message,
                "version": self.request.version,
            }
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> AdmissionState:
        """Parse the file's text; raises StateError."""
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise StateError(f"admission state format {body.get('format')!r}, expected {FORMAT}")
            decisions = {}
            for item in body["versions"]:
                if item["verdict"] not in ("admitted", "refused"):
                    raise StateError(f"unknown verdict {item['verdict']!r}")
                decision = Decision(
                    version=int(item["version"]),
                    verdict=item["verdict"],
                    fingerprint=str(item.get("fingerprint", "")),
                    code=str(item.get("code", "")),
                    reason=str(item.get("reason", "")),
                    decided_unix=float(item.get("decided_unix", 0.0)),
                )
                decisions[decision.version] = decision
            pinned = body.get("pinned")
            request = body.get("request")
            return cls(
                model_name=str(body["model"]),
                served=tuple(int(v) for v in body["served"]),
                pinned=None if pinned is None else int(pinned),
                labels={str(k): int(v) for k, v in body.get("labels", {}).items()},
                decisions=decisions,
                updated_unix=float(body.get("updated_unix", 0.0)),
                request=None
                if request is None
                else RequestOutcome(
                    str(request["id"]),
                    bool(request["ok"]),
                    str(request["message"]),
                    None if request.get("version") is None else int(request["version"]),
                ),
            )
        except StateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"admission state is malformed: {exc!r}") from exc


def state_path(base_path: Path) -> Path:
    """Where the state of the model whose versions live in `base_path` is kept."""
    return base_path / STATE_FILE


def read_state(path: Path) -> AdmissionState | None:
    """The state at `path`, or None when admission has not written one; raises StateError, OSError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return AdmissionState.from_json(text)


def write_state(path: Path, state: AdmissionState) -> None:
    """Replace the state file in one rename, so a reader never sees half of it."""
    write_atomically(path, state.to_json())


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename over it (the rename is atomic within one file system)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class StateReader:
    """Reads one state file for the orchestrator, re-reading it only when it changed on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._state: AdmissionState | None = None

    def read(self) -> AdmissionState | None:
        """The current state (None while admission has written none); raises StateError, OSError."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._state = None, None
            return None
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._state = read_state(self.path)
            self._stamp = stamp
        return self._state


def now_unix() -> float:
    return round(time.time(), 3)
