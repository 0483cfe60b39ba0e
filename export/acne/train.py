"""Train the acne lesion detector on ACNE04 train, select on valid, and write its weights and calibration.

    python -m export.acne.train --seed 7 --out build/acne

Test is never read here: the epoch, input scale, test-time flip, score threshold and grade bands are
all chosen on valid.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from export.acne.augmentation import jitter_colour
from export.acne.dataset import PatchSampler, load_images, load_split
from export.acne.inference import THRESHOLDS, make_predictor, match_split, predict_peaks, score_split
from export.acne.metrics import apply_bands, choose_threshold, count_table, fit_bands
from export.acne.network import build_detector, focal_loss, fold_batch_norm

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "acne04"
EVAL_SIZES_PX = (320, 384, 448, 512)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACNE04 folder with index.csv")
    parser.add_argument("--out", type=Path, default=Path("build/acne"), help="weights, log and calibration")
    parser.add_argument("--minutes", type=float, default=52.0, help="training time budget (wall clock)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--width", type=int, default=24, help="channels at stride 4")
    parser.add_argument(
        "--context", action="store_true", help="add the stride-32 context level (see build_detector)"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=192, help="training patch side, px")
    parser.add_argument("--scale-min", type=float, default=0.5, help="smallest scale vs native 640 px")
    parser.add_argument("--scale-max", type=float, default=0.85)
    parser.add_argument(
        "--lesion-focus", type=float, default=0.5, help="share of patches centred near a lesion"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up")
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--ema", type=float, default=0.998, help="weight moving-average decay")
    parser.add_argument("--eval-minutes", type=float, default=6.0, help="valid check interval")
    parser.add_argument("--eval-px", type=int, default=448, help="whole-image side for the periodic checks")
    return parser.parse_args(argv)


def configure_tensorflow(threads: int, seed: int) -> None:
    """Pin TensorFlow's thread pools and seeds before any op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)


def batch_stream(
    sampler: PatchSampler, batch: int, seed: int
) -> Iterator[tuple[NDArray[np.uint8], NDArray[np.float32]]]:
    """Endless stream of augmented (patches, heatmaps) batches from one seeded generator."""
    rng = np.random.default_rng(seed)
    while True:
        pairs = [sampler.sample(rng) for _ in range(batch)]
        yield np.stack([p for p, _ in pairs]), np.stack([h for _, h in pairs])


def learning_rate(peak: float, progress: float, step: int, warmup_steps: int = 200) -> float:
    """Linear warm-up, then cosine decay to 2% of peak over the time budget (Loshchilov & Hutter 2017)."""
    warm = min(1.0, (step + 1) / warmup_steps)
    cosine = 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak * warm * cosine


def train(args: argparse.Namespace) -> dict[str, object]:
    """Run training and valid selection; writes weights, calibration and history under args.out."""
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    train_samples = load_split(args.data, "train")
    valid_samples = load_split(args.data, "valid")
    train_images = load_images(args.data, "train", train_samples, cache)
    valid_images = load_images(args.data, "valid", valid_samples, cache)
    logger.info(
        "data ready in %.0f s: %d train, %d valid",
        time.monotonic() - started,
        len(train_images),
        len(valid_images),
    )

    sampler = PatchSampler(
        train_images,
        train_samples,
        args.patch,
        args.scale_min,
        args.scale_max,
        lesion_focus=args.lesion_focus,
    )
    cells = args.patch // 4
    dataset = tf.data.Dataset.from_generator(
        lambda: batch_stream(sampler, args.batch, args.seed),
        output_signature=(
            tf.TensorSpec([args.batch, args.patch, args.patch, 3], tf.uint8),
            tf.TensorSpec([args.batch, cells, cells, 1], tf.float32),
        ),
    ).prefetch(4)

    model = build_detector(args.width, batch_norm=True, context=args.context)
    params = model.count_params()
    logger.info(
        "detector: %d parameters (%d in the served, folded form)",
        params,
        build_detector(args.width, context=args.context).count_params(),
    )
    optimizer = keras.optimizers.AdamW(learning_rate=args.lr, weight_decay=args.weight_decay)
    averaged = [tf.Variable(v, trainable=False) for v in model.trainable_variables]
    decay = tf.Variable(0.0, trainable=False)
    generator = tf.random.Generator.from_seed(args.seed)

    @tf.function
    def train_step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            jittered = jitter_colour(tf.cast(images, tf.float32), generator)
            loss = focal_loss(targets, model(jittered, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        for avg, var in zip(averaged, model.trainable_variables, strict=True):
            avg.assign(decay * avg + (1.0 - decay) * var)
        return loss

    def swap_in_average() -> list[NDArray[np.float32]]:
        live = [v.numpy() for v in model.trainable_variables]
        for var, avg in zip(model.trainable_variables, averaged, strict=True):
            var.assign(avg)
        return live

    def restore(live: list[NDArray[np.float32]]) -> None:
        for var, value in zip(model.trainable_variables, live, strict=True):
            var.assign(value)

    predictor = make_predictor(model, flip_tta=False)
    budget_s = args.minutes * 60.0
    train_start = time.monotonic()
    next_eval = train_start + args.eval_minutes * 60.0
    history: list[dict[str, float]] = []
    best_f1, losses, step = -1.0, [], 0
    best_path = out / "detector_train.weights.h5"
    for images, targets in dataset:
        elapsed = time.monotonic() - train_start
        optimizer.learning_rate.assign(learning_rate(args.lr, elapsed / budget_s, step, args.warmup_steps))
        decay.assign(min(args.ema, (1.0 + step) / (10.0 + step)))
        losses.append(float(train_step(images, targets)))
        step += 1
        done = elapsed >= budget_s
        if time.monotonic() >= next_eval or done:
            live = swap_in_average()
            score = score_split(
                match_split(predict_peaks(predictor, valid_images, args.eval_px), valid_samples)
            )
            row = {
                "step": step,
                "minutes": elapsed / 60,
                "loss": float(np.mean(losses)),
                "valid_f1": score.f1,
                "valid_mae": score.mae,
                "valid_threshold": score.threshold,
            }
            history.append(row)
            logger.info(
                "step %d (%.1f min, %d patches) loss %.3f | valid %s",
                step,
                elapsed / 60,
                step * args.batch,
                row["loss"],
                score.line(),
            )
            if score.f1 > best_f1:
                best_f1 = score.f1
                model.save_weights(best_path)
            restore(live)
            losses = []
            next_eval = time.monotonic() + args.eval_minutes * 60.0
        if done:
            break
    train_minutes = (time.monotonic() - train_start) / 60

    model.load_weights(best_path)
    served = fold_batch_norm(model, args.width, args.context)
    served.save_weights(out / "detector.weights.h5")
    choices = []
    plain = make_predictor(served, flip_tta=False)
    for size in EVAL_SIZES_PX:
        matches = match_split(predict_peaks(plain, valid_images, size), valid_samples)
        score = score_split(matches)
        logger.info("valid at %d px, flip_tta=False: %s", size, score.line())
        choices.append((score.f1, -score.mae, size, False, matches))
    size = max(choices, key=lambda c: (round(c[0], 3), c[1]))[2]
    matches = match_split(
        predict_peaks(make_predictor(served, flip_tta=True), valid_images, size), valid_samples
    )
    score = score_split(matches)
    logger.info("valid at %d px, flip_tta=True: %s", size, score.line())
    choices.append((score.f1, -score.mae, size, True, matches))
    _, _, size, flip, matches = max(choices, key=lambda c: (round(c[0], 3), c[1]))
    threshold = choose_threshold(matches, THRESHOLDS)
    table = count_table(matches, threshold)
    grades = np.array([s.grade for s in valid_samples])
    edges = fit_bands(table[:, 1], grades)
    true_edges = fit_bands(table[:, 2], grades)
    valid_score = score_split(matches, threshold)
    valid_accuracy = float(np.mean(apply_bands(table[:, 1], edges) == grades))
    logger.info(
        "chosen: %d px, flip_tta=%s, %s, bands %s, valid grading %.3f",
        size,
        flip,
        valid_score.line(),
        edges,
        valid_accuracy,
    )
    calibration: dict[str, object] = {
        "weights": "detector.weights.h5",
        "output": "logits; sigmoid gives lesion-centre probability per stride-4 cell",
        "input": f"float32 RGB 0..255, [B, H, W, 3], H and W divisible by {32 if args.context else 16}",
        "width": args.width,
        "context": args.context,
        "stride": 4,
        "score_threshold": threshold,
        "grade_band_edges": [float(e) for e in edges],
        "grade_rule": "grade = number of edges <= lesion count (0 mild, 1 moderate, 2 severe, 3 very severe)",
        "grade_band_edges_true_counts": [float(e) for e in true_edges],
        "eval_image_px": size,
        "eval_flip_tta": flip,
        "max_peaks_eval": 128,
        "train_scale_range": [args.scale_min, args.scale_max],
        "train_patch_px": args.patch,
        "train_lesion_focus": args.lesion_focus,
        "train_scale_note": "scale relative to ACNE04's native 640 px; served crops see ~0.5-0.9x",
        "seed": args.seed,
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.monotonic() - started) / 60, 2),
        "steps": step,
        "batch": args.batch,
        "parameters_served": int(served.count_params()),
        "valid": {
            "precision": valid_score.precision,
            "recall": valid_score.recall,
            "f1": valid_score.f1,
            "mae": valid_score.mae,
            "grading_accuracy": valid_accuracy,
            "images": len(valid_samples),
        },
        "command": " ".join(["python -m export.acne.train", *sys.argv[1:]]),
    }
    (out / "acne_calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    logger.info("wrote %s in %.1f min total", out / "acne_calibration.json", calibration["total_minutes"])
    return calibration


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export.acne.train`."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(args.out / "train.log")],
    )
    configure_tensorflow(args.threads, args.seed)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
