"""Export command line: build, calibrate, validate and publish a model version; train and evaluate acne.

python -m export publish [--acne-head redness|detector] [--version N]   # next version by default
python -m export publish --detector-version model_repo/skin_analyzer/6   # keep version 6's detector
python -m export publish --to s3://BUCKET/PREFIX [--source model_repo/skin_analyzer/6] [--version N]
python -m export validate model_repo/skin_analyzer/2
python -m export train-acne [--minutes 50]       # ACNE04 detector -> build/acne/
python -m export evaluate-acne                   # held-out report -> reports/acne04_eval.*
python -m export scene-model [--out PATH]        # the orchestrator's scene classifier (TFLite)
python -m export concerns-eval                   # concern design on data/ages' training part -> reports/
python -m export concerns-report [--versions 6 7] # service-path figures of both -> reports/concerns_eval.*
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from export.calibrate import collect_faces, fit_calibration, image_files, run_model, write_calibration
from export.card import write_model_card
from export.concerns.calibrate import fit_zone_calibration
from export.model import DetectorHead, SkinModel
from export.publish import next_version, publish_to_bucket, publish_version
from export.savedmodel import write_saved_model, write_warmup
from export.validate import InvalidVersion, validate_version
from orchestrator.face.scale import ScaleReader
from orchestrator.face.scene import SceneCheck
from orchestrator.face.stage import FaceGeometry
from orchestrator.predict.prediction import batch_signals
from orchestrator.scoring.zones import Design
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger("export")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def _publish(args: argparse.Namespace) -> int:
    if args.to and args.source:
        return _upload(args, args.source, args.version)
    data: Path = args.data
    if not (data / "faces").is_dir() or not (data / "acne04").is_dir():
        print(f"publishing needs the data folder (faces/, acne04/) at {data}", file=sys.stderr)
        return 2
    head = None
    if args.acne_head == "detector" and args.detector_version is not None:
        head = DetectorHead.from_version(args.detector_version, args.detector_network)
    elif args.acne_head == "detector":
        if not (args.detector_dir / "detector.weights.h5").is_file():
            print(
                f"no trained detector in {args.detector_dir}: run `make train-acne` first, "
                "keep a published version's with --detector-version, or publish with --acne-head redness",
                file=sys.stderr,
            )
            return 2
        # No mirrored pass: it doubles the detector's time and the one-face budget is 35 ms.
        head = DetectorHead.from_dir(args.detector_dir)
    if not args.concern_design.is_file():
        print(
            f"no concern design at {args.concern_design}: run `python -m export concerns-eval`",
            file=sys.stderr,
        )
        return 2
    design = Design.from_json(json.loads(args.concern_design.read_text())["design"])
    model = SkinModel(head, wrinkle_response=design.wrinkle_response)

    def serve(
        faces: np.ndarray,
        masks: np.ndarray,
        patches: np.ndarray | None = None,
        skin: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        if patches is None or skin is None:
            # The aligned-face outputs do not read the patch slots: empty ones stand in.
            size = contract.PATCH_SIZE_PX
            patches = np.zeros((len(faces), len(contract.PATCH_SLOTS), size, size, 3), np.uint8)
            skin = np.zeros(patches.shape[:4], np.uint8)
        tensors = model.serve(*(tf.constant(a) for a in (faces, masks, patches, skin)))
        return {name: tensor.numpy() for name, tensor in tensors.items()}

    def run(faces: np.ndarray, masks: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        out = serve(faces, masks)
        return batch_signals(out), out[contract.ACNE_PEAKS.name]

    def serve_zones(
        faces: np.ndarray, masks: np.ndarray, patches: np.ndarray, skin: np.ndarray
    ) -> dict[str, np.ndarray]:
        out = serve(faces, masks, patches, skin)
        prefix = contract.ZONE_PREFIX
        return {name[len(prefix) :]: value for name, value in out.items() if name.startswith(prefix)}

    settings = Settings()
    geometry = FaceGeometry(scene=SceneCheck(settings.scene_model_path))
    started = time.monotonic()
    reference = collect_faces(image_files(data / "faces"), settings, geometry)
    reference += collect_faces(image_files(data / "acne04" / "train"), settings, geometry)
    acne_valid = collect_faces(image_files(data / "acne04" / "valid"), settings, geometry)
    for group in (reference, acne_valid):
        run_model(group, run)
    base = args.model_repo / contract.MODEL_NAME
    version = args.version or next_version(base)
    calibration, summary = fit_calibration(reference, acne_valid)
    zone_geometry = FaceGeometry(scene=SceneCheck(settings.scene_model_path), scale=ScaleReader())
    zone_calibration, zone_summary = fit_zone_calibration(data, design, serve_zones, zone_geometry, settings)
    calibration.update(zone_calibration)
    summary.update(zone_summary)
    logger.info("calibration fitted in %.0f s: %s", time.monotonic() - started, summary)
    facts: dict[str, object] = {"calibration": summary}
    if head is not None and args.acne_report.is_file():
        facts["acne_evaluation"] = _acne_summary(json.loads(args.acne_report.read_text()))

    def build(path: Path) -> None:
        write_saved_model(model, path)
        write_warmup(path)
        # Bound to the SavedModel just written: the version stays valid under any folder number.
        fingerprint = write_calibration(calibration, path)
        write_model_card(path / "assets.extra", version, model.describe(), facts, fingerprint)

    final = publish_version(base, version, build)
    print(f"published {final}")
    return _upload(args, final, version) if args.to else 0


def _upload(args: argparse.Namespace, source: Path, version: int | None) -> int:
    """Publish a local version folder to the bucket named by --to (keys from the environment)."""
    from serving.bucket import BucketError, BucketSettings, BucketUrl, ModelBucket

    try:
        bucket = ModelBucket(BucketSettings.from_env(), BucketUrl.parse(args.to))
        record = publish_to_bucket(bucket, source, version)
    except (ValueError, BucketError, InvalidVersion) as exc:
        print(f"not published: {exc}", file=sys.stderr)
        return 1
    print(f"published {source} to {bucket.url}/{record.model}/{record.version} ({record.fingerprint})")
    return 0


def _acne_summary(report: dict[str, Any]) -> dict[str, object]:
    """The held-out numbers of reports/acne04_eval.json (export.acne.evaluate), for the model card.

    The report measures a version published with the same detector and the same deterministic
    calibration fit; the card repeats its figures and says which version was measured.
    """
    figures, ci = report["figures"], report["bootstrap_95ci"]

    def share(key: str) -> str:
        return f"{100 * figures[key]:.1f}% (95% CI {100 * ci[key][0]:.1f}-{100 * ci[key][1]:.1f}%)"

    def number(key: str, digits: int) -> str:
        return f"{figures[key]:.{digits}f} (95% CI {ci[key][0]:.{digits}f}-{ci[key][1]:.{digits}f})"

    return {
        "split": f"ACNE04 {report['split']} ({report['photos']} photos, never used for training or choices)",
        "measured_version": report["version"],
        "path": "the service's own: decode, face stage, this model, post-scoring with this calibration",
        "photos_analysed": share("analysed_share"),
        "lesion_f1_on_read_skin": number("f1_skin", 3),
        "lesion_f1_all_lesions": number("f1_all", 3),
        "count_mae": number("count_mae", 2),
        "grading_accuracy": share("grading_accuracy")
        + "; ACNE04's published anchor about 84% (ICCV 2019), label repeat agreement about 79%",
        "whole_photos_f1": number("f1_whole_photo", 3),
        "whole_photos_count_mae": number("count_mae_whole_photo", 2),
        "matching": report["matching"],
    }


def _validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.paths:
        try:
            report = validate_version(path, int(path.name))
            print(f"{path}: valid ({len(report.checks)} checks)")
        except (InvalidVersion, ValueError) as exc:
            print(f"{path}: INVALID: {exc}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="build, calibrate, validate and publish a version")
    publish.add_argument("--acne-head", choices=("redness", "detector"), default="detector")
    publish.add_argument("--detector-dir", type=Path, default=ROOT / "build" / "acne")
    publish.add_argument(
        "--detector-version", type=Path, help="keep the detector of this published version folder unchanged"
    )
    publish.add_argument(
        "--detector-network", choices=("plain", "lite"), default="lite", help="with --detector-version"
    )
    publish.add_argument("--acne-report", type=Path, default=ROOT / "reports" / "acne04_eval.json")
    publish.add_argument("--version", type=int, default=None)
    publish.add_argument(
        "--concern-design",
        type=Path,
        default=ROOT / "reports" / "concerns_design.json",
        help="the design run's choice (python -m export concerns-eval)",
    )
    publish.add_argument("--data", type=Path, default=DEFAULT_DATA)
    publish.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    publish.add_argument(
        "--to", metavar="s3://BUCKET/PREFIX", help="also publish to the bucket (SHINE_S3_* keys, read-write)"
    )
    publish.add_argument(
        "--source", type=Path, help="with --to: publish this existing version folder instead of building one"
    )
    validate = commands.add_parser("validate", help="check version folders against the contract")
    validate.add_argument("paths", type=Path, nargs="+")
    commands.add_parser(
        "train-acne", help="train the ACNE04 detector (see export.acne.train --help)", add_help=False
    )
    commands.add_parser(
        "evaluate-acne", help="held-out ACNE04 report (see export.acne.evaluate --help)", add_help=False
    )
    scene_model = commands.add_parser(
        "scene-model", help="build the orchestrator's scene classifier (TFLite)"
    )
    scene_model.add_argument(
        "--out", type=Path, default=ROOT / "build" / "models" / "scene_classifier.tflite"
    )
    scene_model.add_argument("--force", action="store_true", help="rebuild even when the file is current")
    from export.concerns import evaluate as concerns

    concerns_eval = commands.add_parser(
        "concerns-eval", help="choose and fit the concern measures on data/ages' training part and data/faces"
    )
    concerns.add_arguments(concerns_eval, DEFAULT_DATA, ROOT)
    from export.concerns import served

    concerns_report = commands.add_parser(
        "concerns-report", help="the concern figures along the service's path, a version beside the previous"
    )
    served.add_arguments(concerns_report, DEFAULT_DATA, ROOT)
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "train-acne":
        from export.acne import train

        return int(train.main(rest) or 0)
    if args.command == "evaluate-acne":
        from export.acne import evaluate

        return int(evaluate.main(rest) or 0)
    if args.command == "scene-model":
        from export import scene

        if args.force or not scene.is_current(args.out):
            scene.write_scene_model(args.out)
        print(f"scene classifier: {args.out}")
        return 0
    if args.command == "concerns-eval":
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        concerns.design(args.data, args.cache, args.out, args.bootstrap, args.seed)
        print(f"report: {args.out / 'concerns_design.md'}")
        return 0
    if args.command == "concerns-report":
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        served.run(args.data, args.model_repo, args.versions, args.out, args.bootstrap, args.seed, args.note)
        print(f"report: {args.out / 'concerns_eval.md'}")
        return 0
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return _publish(args) if args.command == "publish" else _validate(args)


if __name__ == "__main__":
    sys.exit(main())
