"""The contract's signature check: a version is refused only for what would make its answer wrong."""

from __future__ import annotations

import pytest

from serving import contract

INPUTS = {spec.name: (spec.dtype, spec.shape) for spec in contract.INPUTS}
PATCHED = {spec.name: (spec.dtype, spec.shape) for spec in (*contract.INPUTS, *contract.PATCH_INPUTS)}


def _signature(*outputs: contract.TensorSpec, inputs: dict | None = None) -> contract.Signature:
    return {
        "inputs": INPUTS if inputs is None else inputs,
        "outputs": {spec.name: (spec.dtype, spec.shape) for spec in outputs},
    }


def test_contract_2_versions_are_read_through_their_named_signal_axis() -> None:
    signature = _signature(contract.SIGNAL_AXIS, contract.ACNE_PEAKS)
    assert contract.signature_problem(signature) is None
    layout = contract.read_layout(signature)
    assert layout.signal_axis and layout.acne
    assert layout.outputs == ("signals", "acne_peaks")
    assert layout.signals == contract.SIGNAL_AXIS_NAMES


def test_what_export_writes_is_read_whole() -> None:
    signature = _signature(*contract.outputs(), inputs=PATCHED)
    assert contract.signature_problem(signature) is None
    layout = contract.read_layout(signature)
    assert layout.signals == contract.signal_names() and not layout.signal_axis
    assert layout.patches and layout.zone_measures == contract.zone_measure_names()
    assert set(layout.outputs) == {spec.name for spec in contract.outputs()}


def test_a_version_without_patch_inputs_is_sent_none_and_its_zone_outputs_are_not_read() -> None:
    layout = contract.read_layout(_signature(*contract.outputs()))
    assert not layout.patches and not layout.zone_measures
    assert not any(name.startswith(contract.ZONE_PREFIX) for name in layout.outputs)


def test_patch_slots_are_one_per_group_and_zone() -> None:
    assert len(set(contract.PATCH_SLOTS)) == len(contract.PATCH_SLOTS)
    assert {m.group for m in contract.ZONE_MEASURES} <= {g.name for g in contract.PATCH_GROUPS}


def test_unknown_outputs_are_ignored_and_missing_optional_signals_only_narrow_the_layout() -> None:
    kept = [n for n in contract.signal_names() if n != "wrinkles"]
    extra = contract.TensorSpec("signal_from_the_future", "float32", (None, 3, 3))
    signature = _signature(*(contract.signal_output(n) for n in kept), extra)
    assert contract.signature_problem(signature) is None
    layout = contract.read_layout(signature)
    assert "wrinkles" not in layout.signals and not layout.acne
    assert extra.name not in layout.outputs


@pytest.mark.parametrize(
    ("signature", "words"),
    [
        (_signature(*contract.outputs(), inputs={"face": INPUTS["face"]}), "signature inputs"),
        (
            _signature(*contract.outputs(), inputs={**INPUTS, "scale": ("float32", (None,))}),
            "signature inputs",
        ),
        (
            _signature(*contract.outputs(), inputs={**INPUTS, "mask": ("int32", INPUTS["mask"][1])}),
            "input mask is int32",
        ),
        (
            _signature(*contract.outputs(), inputs={**PATCHED, "patch_skin": ("uint8", (None, 3, 176, 176))}),
            "input patch_skin is uint8",
        ),
        (
            _signature(*contract.outputs(), inputs={**INPUTS, "patches": PATCHED["patches"]}),
            "signature inputs",
        ),
        (_signature(contract.TensorSpec("acne_peaks", "float64", (None, 128, 3))), "output acne_peaks"),
        (_signature(contract.TensorSpec("signals", "float32", (None, 8, 13))), "output signals"),
        (_signature(contract.ACNE_PEAKS), "lack the signals lab_l, lab_a, lab_b, skin_fraction"),
    ],
    ids=[
        "missing-input",
        "input-it-cannot-send",
        "input-dtype",
        "patch-slots",
        "patches-without-skin",
        "output-dtype",
        "axis-shape",
        "no-signals",
    ],
)
def test_a_version_that_would_answer_wrongly_is_refused_with_the_reason(
    signature: contract.Signature, words: str
) -> None:
    problem = contract.signature_problem(signature)
    assert problem is not None and words in problem
