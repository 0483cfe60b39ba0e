"""The model client against a real gRPC server that fails on purpose: retries, deadlines, the breaker,
and the contract check on answers. Callers only ever see Shine's errors."""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
import pytest

from orchestrator.errors import ModelBadResponse, ModelTimeout, ModelUnavailable, VersionGone
from orchestrator.predict.client import PredictClient
from orchestrator.settings import Settings
from serving import contract
from tests.conftest import free_port
from tests.fakes import Script, fake_model_server

SIZE = contract.FACE_SIZE_PX
FACE = np.zeros((SIZE, SIZE, 3), np.uint8)
MASK = np.zeros((SIZE, SIZE), np.uint8)


def _client(address: str, **overrides: object) -> PredictClient:
    values = {"model_server_address": address, "predict_timeout_s": 1.0, "retry_backoff_s": 0.01}
    values.update(overrides)
    return PredictClient(Settings(**values))  # type: ignore[arg-type]


def test_answer_names_its_version_and_carries_the_servers_values() -> None:
    script = Script(version=4)
    with fake_model_server(script) as address:
        prediction = _client(address).predict(FACE, MASK)
    assert prediction.version == 4
    # The client refuses any other shape, so the shapes are given; the values are what the fake sent.
    assert set(prediction.signals) == set(contract.SIGNAL_AXIS_NAMES)
    assert all(np.all(column == 1.0) for column in prediction.signals.values())
    assert prediction.acne_peaks is not None and not np.any(prediction.acne_peaks)


def test_a_version_asked_for_is_the_one_that_answers() -> None:
    script = Script(version=4, versions=(3, 4))
    with fake_model_server(script) as address:
        prediction = _client(address).predict(FACE, MASK, version=3)
    assert prediction.version == 3
    assert script.asked_versions == [3]


def test_a_version_that_went_away_is_version_gone() -> None:
    with fake_model_server(Script(version=4)) as address, pytest.raises(VersionGone):
        _client(address).predict(FACE, MASK, version=2)


def test_signature_is_read_from_model_metadata() -> None:
    with fake_model_server(Script(versions=(1, 2), broken_signature=frozenset({2}))) as address:
        client = _client(address)
        good, broken = client.signature(1), client.signature(2)
    assert good["inputs"] == {spec.name: (spec.dtype, spec.shape) for spec in contract.INPUTS}
    assert good["outputs"] == {
        spec.name: (spec.dtype, spec.shape) for spec in (contract.SIGNAL_AXIS, contract.ACNE_PEAKS)
    }
    assert broken["inputs"]["face"] == ("uint8", contract.INPUTS[0].shape[:-1])


def test_outputs_are_read_by_name_and_only_those_of_the_layout_are_asked_for() -> None:
    """A contract-3 version answers one output per signal; the request's output_filter names only the
    outputs this service reads, and an output the version has but the service does not know is never
    asked for."""
    names = ("lab_l", "lab_a", "lab_b", "skin_fraction", "pores")
    outputs = (
        *(contract.signal_output(n) for n in names),
        contract.TensorSpec("future", "float32", (None, 8)),
    )
    script = Script(version=7, outputs={7: outputs})
    with fake_model_server(script) as address:
        client = _client(address)
        signature = client.signature(7)
        assert contract.signature_problem(signature) is None
        layout = contract.read_layout(signature)
        prediction = client.predict(FACE, MASK, version=7, layout=layout)
    assert script.output_filters == [
        tuple(contract.SIGNAL_PREFIX + n for n in contract.signal_names() if n in names)
    ]
    assert set(prediction.signals) == set(names)
    assert prediction.acne_peaks is None


def test_unavailable_is_retried_within_the_deadline() -> None:
    script = Script(fail_code=grpc.StatusCode.UNAVAILABLE, fail_first=2)
    with fake_model_server(script) as address:
        prediction = _client(address, predict_retries=2).predict(FACE, MASK)
    assert prediction.version == 1
    assert script.calls == 3


def test_unavailable_past_the_retries_is_model_unavailable() -> None:
    script = Script(fail_code=grpc.StatusCode.UNAVAILABLE, fail_first=100)
    with fake_model_server(script) as address, pytest.raises(ModelUnavailable) as raised:
        _client(address, predict_retries=2).predict(FACE, MASK)
    assert script.calls == 3
    assert raised.value.retry_after_s is not None


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL])
def test_other_errors_are_not_retried(code: grpc.StatusCode) -> None:
    script = Script(fail_code=code, fail_first=100)
    with fake_model_server(script) as address, pytest.raises(ModelBadResponse):
        _client(address).predict(FACE, MASK)
    assert script.calls == 1


def test_slow_server_is_model_timeout_at_the_deadline() -> None:
    script = Script(delay_s=2.0)
    with fake_model_server(script) as address:
        started = time.monotonic()
        with pytest.raises(ModelTimeout):
            _client(address, predict_timeout_s=0.3).predict(FACE, MASK)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("script", [Script(signals_shape=(1, 7, 3)), Script(nan=True)])
def test_answer_breaking_the_contract_is_model_bad_response(script: Script) -> None:
    with fake_model_server(script) as address, pytest.raises(ModelBadResponse):
        _client(address).predict(FACE, MASK)


def test_dead_server_opens_the_breaker_and_then_costs_microseconds() -> None:
    client = _client(
        f"127.0.0.1:{free_port()}",
        predict_timeout_s=0.5,
        predict_retries=0,
        breaker_failures=2,
        breaker_open_s=30.0,
    )
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            client.predict(FACE, MASK)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as raised:
        client.predict(FACE, MASK)
    assert time.perf_counter() - started < 0.01
    assert raised.value.retry_after_s and raised.value.retry_after_s > 1


def test_model_status_lists_versions() -> None:
    with fake_model_server(Script(version=2)) as address:
        states = _client(address).model_status()
    assert [(s.version, s.state) for s in states] == [(2, "AVAILABLE")]


def test_channel_is_rebuilt_in_a_forked_process() -> None:
    with fake_model_server(Script()) as address:
        client = _client(address)
        client.predict(FACE, MASK)
        first = client._channel
        client._pid = -1  # what a fork looks like to the client: another process id
        client.predict(FACE, MASK)
        assert client._channel is not first


class FailingTrial(grpc.UnaryUnaryClientInterceptor):
    """Raises a plain Python exception (not a gRPC error) on the calls it is armed for: a bug in the
    call path, say, or a channel closed under the call."""

    def __init__(self) -> None:
        self.armed = 0

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if self.armed:
            self.armed -= 1
            raise RuntimeError("not a gRPC error")
        return continuation(client_call_details, request)


def test_a_half_open_trial_that_raises_anything_is_released() -> None:
    script = Script(fail_code=grpc.StatusCode.UNAVAILABLE, fail_first=1)
    trial = FailingTrial()
    with fake_model_server(script) as address:
        settings = Settings(
            model_server_address=address,
            predict_retries=0,
            breaker_failures=1,
            breaker_open_s=0.2,
        )
        client = PredictClient(settings, interceptors=(trial,))
        with pytest.raises(ModelUnavailable):
            client.predict(FACE, MASK)  # the one failure opens the circuit
        time.sleep(0.3)  # half-open: the next call is the one trial
        trial.armed = 1
        with pytest.raises(RuntimeError):
            client.predict(FACE, MASK)
        # The trial ended, so the circuit lets the next call through to the (now healthy) server.
        assert client.predict(FACE, MASK).version == 1
