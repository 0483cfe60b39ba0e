"""Admission over a real local model server (in-process, 127.0.0.1:0) and a real model repository: a
good version is checked, loaded as a candidate, probed and only then served; each kind of bad version
is refused with its reason, never served, and unloaded; removals and ops go through the same path."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from serving import contract
from serving.admission.admitter import Admission, AdmissionError
from serving.admission.checks import warmup_requests
from serving.admission.control import ReloadRefused
from serving.admission.state import AdmissionState, Decision, read_state
from serving.ops import OpsError
from serving.tensors import make_ndarray
from tests.repos import BAD_VERSIONS, PUBLISHED_BASE
from tests.test_local_server import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    stack.admit({1})
    try:
        yield stack
    finally:
        stack.close()


def _stage(stack: Stack, version: int, edit: Callable[[Path], object] = lambda folder: None) -> None:
    staged = stack.base / f"_staging-{version}"
    shutil.copytree(stack.base / "1", staged)
    edit(staged)
    staged.rename(stack.base / str(version))


def _cycle(stack: Stack) -> AdmissionState:
    return stack.ops.admission.cycle()


def test_a_good_version_is_probed_then_served_with_one_to_roll_back_to(stack: Stack) -> None:
    assert "specific { versions: 1 }" in stack.config.read_text()
    _stage(stack, 2)
    state = _cycle(stack)
    assert state.served == (2, 1)
    assert state.decisions[2].verdict == "admitted" and state.decisions[2].fingerprint.startswith("sha256:")
    assert "specific { versions: 1 versions: 2 }" in stack.config.read_text()
    on_disk = read_state(stack.ops.admission.state_file)
    assert on_disk is not None and (on_disk.served, on_disk.decisions) == (state.served, state.decisions)
    assert stack.ops.available() == [1, 2]
    # A third: the oldest leaves (the state says so first), two stay loaded.
    _stage(stack, 3)
    assert _cycle(stack).served == (3, 2)
    stack.ops.settled({2, 3})


@pytest.mark.parametrize("code", sorted(BAD_VERSIONS))
def test_a_bad_version_is_refused_with_its_reason_never_served_and_unloaded(stack: Stack, code: str) -> None:
    _stage(stack, 2, BAD_VERSIONS[code])
    state = _cycle(stack)
    decision = state.decisions[2]
    assert (decision.verdict, decision.code) == ("refused", code), decision
    # Safe to show a client: names files inside the version at most, never where the repository is.
    assert decision.reason and str(stack.repo) not in decision.reason and " /" not in decision.reason
    assert state.served == (1,)
    assert stack.ops.status().get(2) in (None, "END")
    assert "specific { versions: 1 }" in stack.config.read_text()
    with pytest.raises(OpsError, match="refused"):
        stack.ops.pin(2)
    with pytest.raises(OpsError, match="refused"):
        stack.ops.label("canary", 2)
    # Removed (rm -rf): its refusal goes with it.
    shutil.rmtree(stack.base / "2")
    assert 2 not in _cycle(stack).decisions


def test_a_refused_folder_fixed_in_place_is_checked_again(stack: Stack) -> None:
    _stage(stack, 2, BAD_VERSIONS["empty"])
    assert _cycle(stack).decisions[2].code == "empty"
    shutil.rmtree(stack.base / "2")
    shutil.copytree(stack.base / "1", stack.base / "2")  # copied in place, by hand
    assert _cycle(stack).served == (2, 1)


def test_the_served_set_is_published_before_a_version_leaving_it_is_unloaded(stack: Stack) -> None:
    _stage(stack, 2)
    _cycle(stack)
    seen: list[tuple[tuple[int, ...], list[int]]] = []
    admission = stack.ops.admission

    def drain(seconds: float) -> None:
        state = read_state(admission.state_file)
        assert state is not None
        seen.append((state.served, stack.ops.available()))

    admission._sleep = drain
    _stage(stack, 3)
    _cycle(stack)
    assert seen == [((3, 2), [1, 2, 3])]  # routers told first; version 1 still loaded meanwhile
    stack.ops.settled({2, 3})
    # The served version removed: the one before serves, and the one before that is probed back in.
    shutil.rmtree(stack.base / "3")
    state = _cycle(stack)
    assert state.served == (2, 1)
    stack.ops.settled({1, 2})


def test_a_restarted_admission_keeps_the_served_set_while_it_checks_again(stack: Stack) -> None:
    _stage(stack, 2)
    _cycle(stack)
    _stage(stack, 3)  # dropped while admission was down: it must settle first
    restarted = Admission(stack.ops.control, stack.config, stack.repo, {"/models": stack.repo}, settle_s=60.0)
    state = restarted.cycle()
    assert state.served == (2, 1)  # checked and probed again at once, never dropped meanwhile
    assert 3 not in state.decisions and read_state(restarted.state_file).served == (2, 1)  # type: ignore[union-attr]


def test_ops_pin_rollback_and_labels_only_touch_versions_that_passed(stack: Stack) -> None:
    _stage(stack, 2)
    _cycle(stack)
    assert stack.ops.rollback() == 1
    assert stack.ops.state().served == (1,) and stack.ops.available() == [1]
    stack.ops.unpin()
    assert stack.ops.state().served == (2, 1)
    stack.ops.label("canary", 2)
    assert 'version_labels { key: "canary" value: 2 }' in stack.config.read_text()
    with pytest.raises(OpsError, match="not been admitted"):
        stack.ops.pin(7)
    stack.ops.unlabel("canary")
    assert "canary" not in stack.config.read_text()


def test_a_base_path_outside_the_repository_is_refused(stack: Stack, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / contract.MODEL_NAME
    shutil.copytree(stack.base / "1", outside / "1")
    text = stack.config.read_text().replace('"/models/skin_analyzer"', f'"{outside}"')
    with pytest.raises(ReloadRefused, match="outside the model repository"):
        stack.ops.control.reload(text)
    assert stack.ops.available() == [1]
    config = tmp_path / "outside.config"
    config.write_text(text)
    with pytest.raises(AdmissionError, match="outside the model repository"):
        Admission(stack.ops.control, config, stack.repo, {"/models": stack.repo})


def test_warmup_requests_read_without_tensorflow_are_tensorflows() -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    folder = PUBLISHED_BASE / str(max(int(p.name) for p in PUBLISHED_BASE.iterdir() if p.name.isdigit()))
    ours = warmup_requests(folder)
    path = str(folder / "assets.extra" / contract.WARMUP_FILE)
    theirs = [
        prediction_log_pb2.PredictionLog.FromString(raw.numpy()).predict_log.request
        for raw in tf.data.TFRecordDataset(path).take(len(ours))
    ]
    assert len(ours) == len(theirs) > 0
    for mine, official in zip(ours, theirs, strict=True):
        assert set(mine.inputs) == set(official.inputs) == set(contract.INPUT_NAMES)
        for name in contract.INPUT_NAMES:
            np.testing.assert_array_equal(
                make_ndarray(mine.inputs[name]), tf.make_ndarray(official.inputs[name])
            )


def test_the_state_file_reads_back_what_was_written(tmp_path: Path) -> None:
    state = AdmissionState(
        "skin_analyzer",
        served=(7, 6),
        labels={"canary": 7},
        decisions={
            6: Decision(6, "admitted", "sha256:" + "0" * 64, decided_unix=1.0),
            9: Decision(9, "refused", "", "empty", "the version folder is empty", 2.0),
        },
        updated_unix=3.0,
    )
    assert AdmissionState.from_json(state.to_json()) == state
    assert state.refused() == {9: state.decisions[9]} and state.admitted() == [6]
