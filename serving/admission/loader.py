"""What admission has the model server load: models.config, reloads to an exact set of versions, and
bringing one version up (loaded, AVAILABLE, its served signature checked, its warmup requests answered).

models.config always lists exactly what the server is asked to load (TF Serving's `specific` policy), so
no folder, good or bad, changes what is served by appearing; the server is reloaded first and the file
written after, so a restart loads what the server last accepted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import grpc

from serving import contract
from serving.admission.checks import Refusal, check_answer, check_signature, read_signature
from serving.admission.control import ModelServerControl, ReloadRefused
from serving.admission.errors import AdmissionError
from serving.admission.state import write_atomically
from serving.config import ModelEntry, VersionPolicy, map_base_path, parse_model_config, render_model_config
from serving.repository import inside_repository
from serving.wire import predict_pb2
from serving.wire.model_status_pb2 import ModelServerConfig

logger = logging.getLogger(__name__)


def resolve_base_path(base_path: str, mounts: Mapping[str, Path], model_repo: Path) -> Path:
    """The local folder of a config base_path, which must lie inside the model repository; raises
    AdmissionError naming the path otherwise."""
    local = map_base_path(base_path, mounts)
    if not inside_repository(local, [model_repo]):
        raise AdmissionError(
            f"base_path {base_path!r} is outside the model repository {str(model_repo.resolve())!r}: refused"
        )
    return local.resolve()


def version_folders(base: Path) -> dict[int, Path]:
    """Every integer-named folder, complete or not (TF Serving reads ASCII digits only)."""
    if not base.is_dir():
        return {}
    return {
        int(child.name): child
        for child in base.iterdir()
        if child.name.isascii() and child.name.isdigit() and child.is_dir()
    }


class VersionLoader:
    """Loads versions of one model into one model server, through its config and its ModelService;
    raises AdmissionError at construction for a config without the model or with a base path outside
    the model repository."""

    def __init__(
        self,
        control: ModelServerControl,
        config_path: Path,
        model_repo: Path,
        mounts: Mapping[str, Path] | None = None,
        model_name: str = contract.MODEL_NAME,
        load_timeout_s: float = 180.0,
        probe_timeout_s: float = 60.0,
        server_model_repo: str = "",
    ) -> None:
        self.control = control
        self.config_path = config_path
        self.model_repo = model_repo
        self.mounts = dict(mounts or {})
        self.model_name = model_name
        self.load_timeout_s = load_timeout_s
        self.probe_timeout_s = probe_timeout_s
        # Where the server sees the model repository when it does not see it at the config's mount
        # (tensorflow_model_server run outside a container reads absolute paths).
        self.server_model_repo = server_model_repo
        self.base = resolve_base_path(self.entry().base_path, self.mounts, model_repo)

    # -- the config -------------------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        entries = parse_model_config(self.config_path.read_text(), ModelServerConfig)
        for entry in entries:
            resolve_base_path(entry.base_path, self.mounts, self.model_repo)
        return entries

    def entry(self) -> ModelEntry:
        for entry in self.entries():
            if entry.name == self.model_name:
                return entry
        raise AdmissionError(f"{self.config_path} has no model {self.model_name!r}")

    def configured(self) -> set[int]:
        """The versions models.config asks the server to load."""
        entry = self.entry()
        if entry.policy.kind == "specific":
            return set(entry.policy.versions)
        return set(entry.policy.select(sorted(version_folders(self.base))))

    def labels_without(self, version: int) -> dict[str, int]:
        """The config's labels, less those on `version`."""
        return {k: v for k, v in self.entry().version_labels.items() if v != version}

    def reload(self, versions: set[int], labels: Mapping[str, int]) -> None:
        """Have the server load exactly `versions` (labels on served ones), then keep that in
        models.config for restarts; raises ReloadRefused, ServerDown."""
        if not versions:
            return
        entry = replace(
            self.entry(),
            policy=VersionPolicy("specific", versions=tuple(sorted(versions))),
            version_labels=dict(labels),
        )
        text = render_model_config([entry if e.name == entry.name else e for e in self.entries()])
        server_text = text
        if self.server_model_repo:
            for prefix in self.mounts:
                server_text = server_text.replace(f'"{prefix}/', f'"{self.server_model_repo.rstrip("/")}/')
        self.control.reload(server_text, timeout_s=self.load_timeout_s)
        write_atomically(self.config_path, text)

    # -- the server's versions --------------------------------------------------------------------

    def available(self) -> set[int]:
        """The versions the server answers for now; raises ServerDown."""
        return {v for v, item in self.control.status().items() if item.state == "AVAILABLE"}

    def bring_up(self, version: int, probes: list[predict_pb2.PredictRequest]) -> float:
        """Load `version` beside what is loaded (if it is not yet), check its served signature and send
        it its probes; returns when it was loaded (time.monotonic). Raises Refusal, ServerDown."""
        configured = self.configured()
        if version not in configured:
            try:
                self.reload(configured | {version}, self.entry().version_labels)
            except ReloadRefused as exc:  # TF Serving answers a reload whose new version fails to load so
                logger.error("%s version %d: reload with it refused: %s", self.model_name, version, exc)
                raise Refusal("load_failed", "the model server could not load it") from exc
        self._wait_available(version)
        loaded = time.monotonic()
        try:
            check_signature(read_signature(self.control.metadata(version)))
            for probe in probes:
                check_answer(probe, self.control.predict(probe, version, self.probe_timeout_s), version)
        except grpc.RpcError as exc:
            logger.error(
                "%s version %d probe failed: %s %s", self.model_name, version, exc.code(), exc.details()
            )
            raise Refusal("probe", f"it failed its warmup requests ({exc.code().name})") from exc
        return loaded

    def withdraw(self, version: int, keep: set[int]) -> None:
        """Unload a refused candidate, if the server loads or was asked to load it; `keep` stay loaded
        whatever happens (and are what is loaded when nothing else would be). Raises ServerDown,
        ReloadRefused."""
        known = self.control.status().get(version)
        if version not in keep and (version in self.configured() or (known and known.state != "END")):
            self.reload((self.configured() - {version}) or keep, self.labels_without(version))

    def _wait_available(self, version: int) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        while True:
            item = self.control.status().get(version)
            if item is not None and item.state == "AVAILABLE":
                return
            if item is not None and item.state == "END" and item.error:
                logger.error("%s version %d failed to load: %s", self.model_name, version, item.error)
                raise Refusal("load_failed", "the model server could not load it")
            if time.monotonic() > deadline:
                raise Refusal(
                    "load_timeout", f"the model server did not load it in {self.load_timeout_s:g} s"
                )
            time.sleep(0.1)
