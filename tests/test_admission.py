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
from serving.admission.admitter import Admission, require_admitted, rollback_target, served_target
from serving.admission.bucket import BucketLink, seed
from serving.admission.checks import warmup_requests
from serving.admission.control import ReloadRefused
from serving.admission.errors import AdmissionError
from serving.admission.state import AdmissionState, Decision, read_state
from serving.cluster import REQUEST_FILE, ClusterOps, ClusterOpsError, OpsRequest
from serving.ops import OpsError
from serving.tensors import make_ndarray
from tests.conftest import Clock
from tests.objectstore import WRITER, SeaweedServer, seaweed
from tests.repos import BAD_VERSIONS, PUBLISHED_BASE, calibration_of_another_model
from tests.test_local_server import Stack

__all__ = ["seaweed"]  # the fixture, used by name


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
        assert set(mine.inputs) == set(official.inputs) >= set(contract.INPUT_NAMES)
        for name in official.inputs:
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


def test_the_served_set_pin_and_rollback_follow_the_decisions_alone() -> None:
    decisions = {
        3: Decision(3, "admitted"),
        4: Decision(4, "admitted"),
        5: Decision(5, "refused", code="probe", reason="it failed its warmup requests (INTERNAL)"),
        6: Decision(6, "admitted"),
    }
    state = AdmissionState("skin_analyzer", served=(6, 4), decisions=decisions)
    assert served_target(state) == (6, 4)  # the newest admitted and one to roll back to; 5 never
    assert served_target(AdmissionState("skin_analyzer", pinned=3, decisions=decisions)) == (3,)
    assert served_target(AdmissionState("skin_analyzer", pinned=5, decisions=decisions)) == (6, 4)
    assert served_target(AdmissionState("skin_analyzer")) == ()
    assert rollback_target(state) == 4
    with pytest.raises(AdmissionError, match="nothing to roll back to"):
        rollback_target(AdmissionState("skin_analyzer", served=(3,), decisions=decisions))
    with pytest.raises(AdmissionError, match="nothing to roll back to"):
        rollback_target(AdmissionState("skin_analyzer", decisions=decisions))
    require_admitted(state, 3)
    with pytest.raises(AdmissionError, match=r"refused \(probe\)"):
        require_admitted(state, 5)
    with pytest.raises(AdmissionError, match="has not been admitted"):
        require_admitted(state, 7)


def test_for_a_cluster_decisions_go_to_the_bucket_and_ops_requests_come_through_admission(
    stack: Stack, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    writer = seaweed.bucket(WRITER, prefix="admission")
    clock = Clock()
    link = BucketLink(stack.ops.admission, writer, drain_s=5.0, request_poll_s=0.0, clock=clock)
    state_key = writer.url.key(contract.MODEL_NAME, "admission.json")

    def served_config() -> str:
        return (writer.get(writer.url.key("models.config")) or b"").decode()

    assert link.publish() == [f"{contract.MODEL_NAME}/admission.json", "models.config"]  # config last
    assert "specific { versions: 1 }" in served_config() and link.publish() == []
    _stage(stack, 2)
    _cycle(stack)
    _stage(stack, 3, calibration_of_another_model)
    _cycle(stack)
    link.publish()
    # Replicas are told exactly the served versions; the refused one is named, with its reason, only
    # in the state.
    assert "specific { versions: 1 versions: 2 }" in served_config() and "3" not in served_config()
    pushed = AdmissionState.from_json((writer.get(state_key) or b"").decode())
    assert pushed.served == (2, 1) and pushed.decisions[3].code == "calibration_mismatch"
    ops = ClusterOps(writer, answer_timeout_s=0.0)
    for refused in (lambda: ops.pin(3), lambda: ops.label("stable", 3), lambda: ops.pin(9)):
        with pytest.raises(ClusterOpsError, match=r"refused by admission|not been admitted"):
            refused()
    assert writer.get(writer.url.key(contract.MODEL_NAME, REQUEST_FILE)) is None  # nothing left to do

    # A request left by ops is carried out through admission and answered in the state; the config
    # that takes version 2 out of service follows the state only after the drain.
    writer.put(
        writer.url.key(contract.MODEL_NAME, REQUEST_FILE), OpsRequest("r1", "pin", version=1).to_json()
    )
    outcome = link.take_request()
    assert outcome is not None and outcome.ok and outcome.version == 1
    assert link.take_request() is None  # answered once
    assert link.publish() == [f"{contract.MODEL_NAME}/admission.json"]
    assert "versions: 2" in served_config()
    clock.now += 5.0
    assert link.publish() == ["models.config"]
    assert "specific { versions: 1 }" in served_config()
    pushed = AdmissionState.from_json((writer.get(state_key) or b"").decode())
    assert pushed.served == (1,) and pushed.request is not None and pushed.request.id == "r1"
    # One admission may not do what it refuses locally: a label on a version it no longer serves.
    writer.put(
        writer.url.key(contract.MODEL_NAME, REQUEST_FILE),
        OpsRequest("r2", "label", version=2, label="stable").to_json(),
    )
    outcome = link.take_request()
    assert outcome is not None and not outcome.ok and "not served" in outcome.message

    # A new pod starts from what the bucket holds: the served config and the state (pin, last answer).
    mirrored = tmp_path / "bucket-config"
    (mirrored / contract.MODEL_NAME).mkdir(parents=True)
    (mirrored / "models.config").write_text(served_config())
    (mirrored / contract.MODEL_NAME / "admission.json").write_bytes(writer.get(state_key) or b"")
    fresh = tmp_path / "fresh"
    written = seed(fresh / "models.config", fresh, mirrored)
    assert written == [fresh / "models.config", fresh / contract.MODEL_NAME / "admission.json"]
    seeded = read_state(fresh / contract.MODEL_NAME / "admission.json")
    assert seeded is not None and seeded.pinned == 1 and seeded.request is not None
    assert seed(fresh / "models.config", fresh, mirrored) == []  # its own files are never replaced
