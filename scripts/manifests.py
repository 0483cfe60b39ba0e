"""Offline checks of the Kubernetes manifests: every overlay under deploy/k8s/overlays is rendered with the
pinned kubectl (kustomize), validated against Kubernetes 1.30's schemas with `kubernetes-validate
--strict` (a warning, such as a removed API, fails too) and scanned with checkov (no failed check; a
skipped check must carry its reason in the manifest).

    python scripts/manifests.py                  # every overlay; exit status 1 on any problem
    python scripts/manifests.py --out build/k8s  # also keep the rendered manifests there
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
KUBERNETES_VERSION = "1.30.0"
BIN = Path(sys.executable).parent
# checkov lives in its own virtualenv (the Makefile builds it from requirements/checkov.txt), so its many
# dependencies never change the project's pinned packages.
CHECKOV = Path(os.environ.get("SHINE_CHECKOV", ROOT / "build" / "checkov" / "bin" / "checkov"))


@dataclass
class OverlayReport:
    """What the checks found in one overlay."""

    overlay: str
    resources: int = 0
    passed_checks: int = 0
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def render(overlay: Path) -> str:
    """The overlay's manifests as kustomize renders them; raises subprocess.CalledProcessError."""
    done = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout


def validate(rendered: Path) -> list[str]:
    """Problems kubernetes-validate --strict finds for Kubernetes 1.30: failures and warnings alike."""
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (done.stdout + done.stderr).splitlines()
    # A removed API version only warns (exit status 0); anything but a pass is a problem here.
    problems = [line for line in lines if line.strip() and not line.startswith("INFO")]
    if done.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {done.returncode}")
    return problems


def scan(rendered: Path) -> tuple[int, list[str], list[str]]:
    """checkov over the rendered manifests: (passed count, skipped checks with reasons, problems)."""
    if not CHECKOV.is_file():
        return 0, [], [f"checkov not found at {CHECKOV} (make manifests installs it)"]
    command = [str(CHECKOV), "-f", str(rendered), "--framework", "kubernetes", "--output", "json"]
    done = subprocess.run(
        [*command, "--skip-download", "--soft-fail"],
        capture_output=True,
        text=True,
        timeout=600,
        # No calls home: the check runs offline.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        return 0, [], [f"checkov gave no report (exit {done.returncode}): {done.stderr[-2000:]}"]
    results = result.get("results", {}) if isinstance(result, dict) else {}
    problems = [
        f"{check['check_id']} {check['check_name']}: {check['resource']}"
        for check in results.get("failed_checks", [])
    ]
    skipped = []
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
        label = f"{check['check_id']} on {check['resource']}"
        if not reason or reason == "No comment provided":
            problems.append(f"{label} is skipped without a reason")
        skipped.append(f"{label}: {reason}")
    return len(results.get("passed_checks", [])), skipped, problems


def check_overlay(overlay: Path, out: Path) -> OverlayReport:
    """Render, validate and scan one overlay, writing its manifests to out/<overlay>.yaml."""
    report = OverlayReport(overlay.name)
    try:
        text = render(overlay)
    except subprocess.CalledProcessError as exc:
        report.problems.append(f"kustomize failed: {exc.stderr.strip()}")
        return report
    out.mkdir(parents=True, exist_ok=True)
    rendered = out / f"{overlay.name}.yaml"
    rendered.write_text(text)
    report.resources = sum(1 for line in text.splitlines() if line.startswith("kind:"))
    report.problems += [f"kubernetes-validate: {line}" for line in validate(rendered)]
    passed, report.skipped, problems = scan(rendered)
    report.passed_checks = passed
    report.problems += [f"checkov: {line}" for line in problems]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--overlays", type=Path, default=OVERLAYS)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "k8s")
    args = parser.parse_args(argv)
    overlays = sorted(path for path in args.overlays.iterdir() if (path / "kustomization.yaml").is_file())
    if not overlays:
        print(f"no overlays under {args.overlays}", file=sys.stderr)
        return 1
    failed = False
    for overlay in overlays:
        report = check_overlay(overlay, args.out)
        status = "FAILED" if report.problems else "ok"
        print(
            f"{report.overlay}: {status}: {report.resources} resources, Kubernetes {KUBERNETES_VERSION} "
            f"schemas, checkov {report.passed_checks} passed, {len(report.skipped)} skipped"
        )
        for line in report.skipped:
            print(f"  skipped {line}")
        for line in report.problems:
            print(f"  {line}")
        failed = failed or bool(report.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
