"""deploy/k8s and scripts/manifests.py: every overlay renders, validates for Kubernetes 1.30 and passes
checkov; a deliberately broken manifest fails each check; the rendered manifests keep the properties
the design needs (only the orchestrator reaches port 8500, /metrics is not routed, liveness never asks
the model server); the Ingress's error backend answers in Shine's JSON shape under the real nginx."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from orchestrator.errors import ERROR_TABLE
from scripts import manifests
from tests.conftest import IN_CI, ROOT, missing
from tests.proxy import NginxProcess

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def _require_checkov() -> None:
    if not manifests.CHECKOV.is_file():
        reason = f"checkov not found at {manifests.CHECKOV} (`make manifests` installs it in build/checkov)"
        if IN_CI:
            missing(reason)
        pytest.skip(reason)


def _rendered(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifests.render(K8S / "overlays" / overlay)) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture
def broken_overlay(tmp_path: Path) -> Any:
    """A copy of deploy/k8s with one more overlay whose kustomization gets `extra` and files `files`."""

    def make(extra: str, files: dict[str, str] | None = None) -> Path:
        shutil.copytree(K8S, tmp_path / "k8s")
        overlays = tmp_path / "k8s" / "overlays"
        for name in OVERLAYS:
            shutil.rmtree(overlays / name)
        broken = overlays / "broken"
        broken.mkdir()
        text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        text += "resources:\n  - ../../base\n"
        (broken / "kustomization.yaml").write_text(text + extra)
        for name, content in (files or {}).items():
            (broken / name).write_text(content)
        return overlays

    return make


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_validates_and_passes_checkov(overlay: str, tmp_path: Path) -> None:
    _require_checkov()
    report = manifests.check_overlay(K8S / "overlays" / overlay, tmp_path)
    assert report.problems == []
    assert report.resources >= 20 and report.passed_checks > 100
    # The one check skipped says why, in the manifest.
    assert all("CKV_K8S_43" in line and "digest" in line for line in report.skipped)


def test_unknown_field_fails_strict_validation(broken_overlay: Any, tmp_path: Path) -> None:
    patch = (
        "patches:\n  - target:\n      kind: Service\n      name: orchestrator\n    patch: |-\n"
        "      - op: add\n        path: /spec/portz\n        value: []\n"
    )
    report = manifests.check_overlay(broken_overlay(patch) / "broken", tmp_path / "out")
    assert any("kubernetes-validate" in p and "portz" in p for p in report.problems), report.problems


def test_removed_api_version_fails_although_it_only_warns(broken_overlay: Any, tmp_path: Path) -> None:
    # policy/v1beta1 PodDisruptionBudget was removed in Kubernetes 1.25: kubernetes-validate warns and
    # exits 0; the check counts the warning as a failure.
    pdb = (
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: old\nspec:\n"
        "  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: orchestrator\n"
    )
    overlays = broken_overlay("  - old-pdb.yaml\n", {"old-pdb.yaml": pdb})
    problems = manifests.validate(_write(tmp_path, manifests.render(overlays / "broken")))
    assert problems and any("policy/v1beta1" in p or "poddisruptionbudget" in p.lower() for p in problems)


def test_privileged_writable_container_fails_checkov(broken_overlay: Any, tmp_path: Path) -> None:
    _require_checkov()
    patch = (
        "patches:\n  - target:\n      kind: Deployment\n      name: orchestrator\n    patch: |-\n"
        "      - op: replace\n        path: /spec/template/spec/containers/0/securityContext\n"
        "        value: {privileged: true, readOnlyRootFilesystem: false}\n"
    )
    report = manifests.check_overlay(broken_overlay(patch) / "broken", tmp_path / "out")
    failed = " ".join(report.problems)
    assert "CKV_K8S_16" in failed  # privileged
    assert "CKV_K8S_22" in failed  # read-only root filesystem
    assert manifests.main(["--overlays", str(tmp_path / "k8s" / "overlays"), "--out", str(tmp_path)]) == 1


def test_skip_without_reason_fails(broken_overlay: Any, tmp_path: Path) -> None:
    _require_checkov()
    patch = (
        "patches:\n  - target:\n      kind: Deployment\n      name: errors\n    patch: |-\n"
        "      - op: replace\n        path: /metadata/annotations/checkov.io~1skip1\n"
        "        value: CKV_K8S_43\n"
    )
    report = manifests.check_overlay(broken_overlay(patch) / "broken", tmp_path / "out")
    assert any("skipped without a reason" in p for p in report.problems), report.problems


def _write(folder: Path, text: str) -> Path:
    path = folder / "rendered.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_orchestrator_reaches_the_model_server(overlay: str) -> None:
    docs = _rendered(overlay)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny[0]["spec"]
    model = _one(docs, "NetworkPolicy", "model-server")["spec"]["ingress"]
    grpc_rules = [rule for rule in model if any(port["port"] == 8500 for port in rule["ports"])]
    assert grpc_rules == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "orchestrator"}}}],
            "ports": [{"port": 8500, "protocol": "TCP"}],
        }
    ]
    # No other policy opens 8500.
    for policy in policies:
        if policy["metadata"]["name"] != "model-server":
            for rule in policy["spec"].get("ingress", []):
                assert all(port["port"] != 8500 for port in rule.get("ports", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_limits_and_metrics(overlay: str) -> None:
    docs = _rendered(overlay)
    ingress = _one(docs, "Ingress", "shine")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "104923136"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 300
    assert int(notes["nginx.ingress.kubernetes.io/limit-rpm"]) > 0
    intercepted = set(notes["nginx.ingress.kubernetes.io/custom-http-errors"].split(","))
    assert intercepted >= {"413", "502", "503", "504"}
    paths = {p["path"]: p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths["/metrics"]["pathType"] == "Exact"
    assert paths["/metrics"]["backend"]["service"]["name"] == "errors"
    assert paths["/"]["backend"]["service"]["name"] == "orchestrator"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_sync_sidecars(overlay: str) -> None:
    docs = _rendered(overlay)
    orchestrator = _one(docs, "Deployment", "orchestrator")["spec"]["template"]["spec"]
    main = orchestrator["containers"][0]
    assert main["readinessProbe"]["httpGet"]["path"] == "/health"
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
    for name in ("orchestrator", "model-server", "admission"):
        spec = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        sync = spec["initContainers"][0]
        assert sync["restartPolicy"] == "Always"  # a native sidecar: running before the main container
        assert sync["command"][:3] == ["python", "-m", "serving.sync"]
        keys = next(v for v in spec["volumes"] if v["name"] == "bucket-keys")["secret"]["secretName"]
        assert keys == ("shine-bucket-write" if name == "admission" else "shine-bucket-read")
    server = _one(docs, "Deployment", "model-server")["spec"]["template"]["spec"]["containers"][0]
    assert server["image"].startswith("tensorflow/serving:")
    assert "--model_config_file=/models/models.config" in server["args"]


def test_model_server_config_matches_serving() -> None:
    for name in ("batching_parameters.txt", "monitoring.config"):
        assert (K8S / "base" / name).read_text() == (ROOT / "serving" / name).read_text(), name


def test_error_backend_answers_in_shines_shape(tmp_path: Path) -> None:
    """The Ingress's error backend config under Debian's nginx: each status ingress-nginx hands it (in
    X-Code) becomes Shine's JSON error with the status and code of orchestrator/errors.py."""
    site = (K8S / "base" / "errors.conf").read_text()
    nginx = NginxProcess(tmp_path / "errors", site, "listen 8080;")
    nginx.start()
    statuses = {cls.code: cls.status for cls in ERROR_TABLE}
    try:
        for x_code, status, code in (
            ("413", 413, "IMAGE_FILE_TOO_LARGE"),
            ("502", 503, "MODEL_UNAVAILABLE"),
            ("503", 503, "MODEL_UNAVAILABLE"),
            ("504", 504, "MODEL_TIMEOUT"),
            ("429", 429, "RATE_LIMITED"),
        ):
            answer = requests.get(
                nginx.url + "/api/v2/analyze/guest",
                headers={"X-Code": x_code, "X-Request-ID": "ab" * 16},
                timeout=10,
            )
            assert answer.status_code == status == statuses[code]
            assert answer.json() == {
                "error": {"code": code, "message": answer.json()["error"]["message"], "request_id": "ab" * 16}
            }
            assert answer.headers["X-Request-ID"] == "ab" * 16
            assert ("Retry-After" in answer.headers) == (status in (429, 503))
        metrics = requests.get(nginx.url + "/metrics", timeout=10)
        assert metrics.status_code == 404 and metrics.json()["error"]["code"] == "NOT_FOUND"
        assert len(metrics.json()["error"]["request_id"]) == 32
    finally:
        nginx.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admission_runs_the_real_cli_in_cluster_mode(overlay: str, tmp_path: Path) -> None:
    """Admission's pod: every command line and probe is one the real CLIs accept, admission decides for
    the bucket against its own model server (on localhost, which the NetworkPolicy leaves closed to
    others) and starts, as a native sidecar, before that server reads the config it takes."""
    from serving import sync
    from serving.admission import __main__ as admission_cli

    spec = _one(_rendered(overlay), "Deployment", "admission")["spec"]["template"]["spec"]
    sync_container, admission = spec["initContainers"]
    assert admission["restartPolicy"] == "Always"
    command = admission["command"]
    assert command[:3] == ["python", "-m", "serving.admission"]
    assert {
        "--address=127.0.0.1:8500",
        "--bucket=$(SHINE_BUCKET_URL)",
        "--bucket-config=/bucket-config",
    } <= set(command)
    assert "--all-versions" in sync_container["command"] and "/bucket-config" in sync_container["command"]
    server = spec["containers"][0]
    assert server["image"].startswith("tensorflow/serving:")
    assert "--model_config_file=/models/models.config" in server["args"]
    # Each command parses: given --check, each CLI answers for a folder without a pass or heartbeat (1),
    # where an unknown flag would end in a usage error (2).
    assert admission_cli.main([*command[3:], "--check", str(tmp_path)]) == 1
    assert sync.main([*sync_container["command"][3:], "--check", str(tmp_path)]) == 1
    for container, main in ((admission, admission_cli.main), (sync_container, sync.main)):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe_command = container[probe]["exec"]["command"]
            assert probe_command[:3] == container["command"][:3]
            args = [a.replace("/models", str(tmp_path)) for a in probe_command[3:]]
            assert main(args) == 1, (container["name"], probe)
