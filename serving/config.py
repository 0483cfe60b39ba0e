"""The model server's configuration files, read as TF Serving reads them.

`models.config` is a text ModelServerConfig; `batching_parameters.txt` a text BatchingParameters.
Parsing takes the message class as an argument, so the TensorFlow-side local server can use the
official classes and the TensorFlow-free ops tool the wire subset; both see the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format

PolicyKind = Literal["latest", "all", "specific"]


class ConfigError(ValueError):
    """A configuration file is malformed or asks for something the server cannot do."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the integer version folders on disk are served (ServableVersionPolicy)."""

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> list[int]:
        """The versions to serve out of those found on disk, highest first."""
        ordered = sorted(set(on_disk), reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: max(1, self.num_versions)]


@dataclass(frozen=True)
class ModelEntry:
    """One model of models.config."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = field(default_factory=dict)


def parse_model_config(text: str, message_cls: Callable[[], Any]) -> list[ModelEntry]:
    """Parse a text ModelServerConfig into entries; raises ConfigError on bad text or values."""
    message = message_cls()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"models.config: {exc}") from exc
    return model_entries(message)


def model_entries(message: Any) -> list[ModelEntry]:
    """Entries of a parsed ModelServerConfig message; raises ConfigError on bad values."""
    entries = []
    for config in message.model_config_list.config:
        if not config.name or not config.base_path:
            raise ConfigError("models.config: every model needs a name and a base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"models.config: unsupported model_platform {config.model_platform!r}")
        entries.append(
            ModelEntry(
                name=config.name,
                base_path=config.base_path,
                policy=_policy(config.model_version_policy),
                version_labels=dict(config.version_labels),
            )
        )
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ConfigError("models.config: model names must be unique")
    return entries


def _policy(message: Any) -> VersionPolicy:
    choice = message.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = tuple(int(v) for v in message.specific.versions)
        if not versions:
            raise ConfigError("models.config: a specific policy must list at least one version")
        return VersionPolicy("specific", versions=versions)
    if choice == "latest":
        return VersionPolicy("latest", num_versions=max(1, int(message.latest.num_versions)))
    return VersionPolicy()


def render_model_config(entries: list[ModelEntry]) -> str:
    """Write entries back as text ModelServerConfig, in the layout of serving/models.config."""
    lines = ["model_config_list {"]
    for entry in entries:
        lines += ["  config {", f'    name: "{entry.name}"', f'    base_path: "{entry.base_path}"']
        lines.append('    model_platform: "tensorflow"')
        policy = entry.policy
        if policy.kind == "all":
            lines.append("    model_version_policy { all {} }")
        elif policy.kind == "specific":
            versions = " ".join(f"versions: {v}" for v in policy.versions)
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        else:
            lines.append(f"    model_version_policy {{ latest {{ num_versions: {policy.num_versions} }} }}")
        for label, version in sorted(entry.version_labels.items()):
            lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def map_base_path(base_path: str, mounts: Mapping[str, Path]) -> Path:
    """Resolve a config base_path through mount points ("/models" -> model_repo/), as a container would."""
    for prefix, local in mounts.items():
        if base_path == prefix or base_path.startswith(prefix.rstrip("/") + "/"):
            return local / base_path[len(prefix) :].lstrip("/")
    return Path(base_path)


@dataclass(frozen=True)
class BatchingConfig:
    """Server-side batching (BatchingParameters); the defaults apply only to fields the file omits."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ConfigError(
                "batching: max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1"
            )
        if self.allowed_batch_sizes:
            sizes = list(self.allowed_batch_sizes)
            if sizes != sorted(sizes) or sizes[-1] != self.max_batch_size:
                raise ConfigError("batching: allowed_batch_sizes must increase and end at max_batch_size")


def parse_batching_parameters(text: str) -> BatchingConfig:
    """Parse a text BatchingParameters file; raises ConfigError on bad text or values."""
    from serving.wire import batching_pb2

    message = batching_pb2.BatchingParameters()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"batching parameters: {exc}") from exc
    defaults = BatchingConfig()

    def value(name: str, default: int) -> int:
        return int(getattr(message, name).value) if message.HasField(name) else default

    return BatchingConfig(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        allowed_batch_sizes=tuple(int(v) for v in message.allowed_batch_sizes),
        pad_variable_length_inputs=bool(message.pad_variable_length_inputs),
    )
