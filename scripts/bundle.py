"""Build the deployable archive: compose stack, images' sources, configs, model_repo/ and a Procfile.

Written with zipfile and POSIX entry names on every platform (the original deployment's bundle broke
on Windows path separators), and nothing secret or stray goes in.

    python scripts/bundle.py --out build/shine-bundle.zip
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = (
    "docker-compose.yml",
    "Dockerfile",
    "Procfile",
    "README.md",
    "requirements",
    "configs",
    "orchestrator",
    "serving",
    "export",  # the Dockerfile's first stage builds the scene classifier with it
    "model_repo",
    "deploy",  # the Kubernetes manifests (deploy/k8s)
)
# Never shipped: caches, local state, anything that looks like a credential.
EXCLUDE = (
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".DS_Store",
    "Thumbs.db",
    "*.swp",
    "*~",
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "*.secret",
    "credentials*",
    "_staging-*",
    ".git",
    ".venv",
    "build",
)


def excluded(relative: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in EXCLUDE)


def bundle_files(root: Path = ROOT) -> list[Path]:
    """Every file that goes into the bundle, relative to `root`, sorted."""
    files: list[Path] = []
    for name in INCLUDE:
        path = root / name
        if path.is_file():
            files.append(path.relative_to(root))
        elif path.is_dir():
            files += [p.relative_to(root) for p in path.rglob("*") if p.is_file()]
    return sorted(f for f in files if not excluded(f))


def build_bundle(out: Path, root: Path = ROOT) -> list[str]:
    """Write the zip; returns its entry names (always '/'-separated)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in bundle_files(root):
            name = relative.as_posix()
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # Unix permissions survive unzip on Linux hosts (rw-r--r--).
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / relative).read_bytes())
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "shine-bundle.zip")
    args = parser.parse_args(argv)
    names = build_bundle(args.out)
    print(f"wrote {args.out} ({len(names)} files, {args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
