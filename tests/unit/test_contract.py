"""InputContract and HandlerConfig: per-request checks and model-config.yaml parsing."""
from __future__ import annotations

import numpy as np
import pytest

from handlers.config import HandlerConfig, InputContract
from handlers.errors import ConfigError
from handlers.errors import InvalidInput, TooManyInstances

CONTRACT = InputContract("pixels", (2, 2), "float32", 0.0, 1.0)


def test_single_instance_gets_a_batch_axis() -> None:
    batch = CONTRACT.as_batch(np.full((2, 2), 0.5), max_instances=4)
    assert batch.shape == (1, 2, 2) and batch.dtype == np.float32


def test_several_instances_keep_their_count() -> None:
    assert CONTRACT.as_batch(np.zeros((3, 2, 2), np.float64), max_instances=4).shape == (3, 2, 2)


def test_integers_are_accepted_as_float_input() -> None:
    assert CONTRACT.as_batch(np.ones((2, 2), np.int64), max_instances=1).dtype == np.float32


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((2, 3)), r"shape \[2, 3\]; expected \[2, 2\] or \[N, 2, 2\]"),
    (np.zeros((1, 1, 2, 2)), r"shape \[1, 1, 2, 2\]"),
    (np.zeros((0, 2, 2)), "no instances"),
    (np.array([[np.nan, 0], [0, 0]]), "1 NaN/Inf"),
    (np.array([[np.inf, 0], [0, 0]]), "NaN/Inf"),
    (np.array([[2.0, 0], [0, 0]]), "above the allowed maximum 1"),
    (np.array([[-0.5, 0], [0, 0]]), "below the allowed minimum 0"),
    (np.array([["a", "b"], ["c", "d"]]), "dtype <U1; expected numbers"),
    (np.array([[True, False], [True, False]]), "dtype bool"),
    (np.zeros((2, 2), np.complex64), "dtype complex64"),
])
def test_contract_violations_are_422_with_reason(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        CONTRACT.check_values(CONTRACT.as_batch(array, max_instances=4))
    assert err.value.status == 422


@pytest.mark.parametrize(("value", "ok"), [(0.5, True), (1.0, True), (1.01, False), (-0.1, False),
                                           (np.nan, False), (np.inf, False), (-np.inf, False)])
def test_batch_level_value_check_agrees_with_per_request_check(value: float, ok: bool) -> None:
    batch = np.full((3, 2, 2), 0.5, np.float32)
    batch[1, 0, 1] = value
    assert bool(CONTRACT.values_ok(batch)) == ok
    if not ok:
        with pytest.raises(InvalidInput):
            CONTRACT.check_values(batch)


def test_too_many_instances_is_413() -> None:
    with pytest.raises(TooManyInstances, match="holds 5 instances; at most 4") as err:
        CONTRACT.as_batch(np.zeros((5, 2, 2)), max_instances=4)
    assert err.value.status == 413


def test_handler_config_from_model_yaml() -> None:
    config = HandlerConfig.from_model_yaml({
        "maxWorkers": 2,
        "handler": {"input": {"name": "x", "shape": [64], "min": 0, "max": 1}, "labels": ["a", "b"], "top_k": 2},
    })
    assert config.input == InputContract("x", (64,), "float32", 0.0, 1.0)
    assert config.labels == ("a", "b") and config.top_k == 2 and config.workers == 2


@pytest.mark.parametrize(("yaml_doc", "message"), [
    ({}, "no 'handler' section"),
    ({"handler": {}}, "needs 'input'"),
    ({"handler": {"input": {"shape": [3]}}}, "needs 'name'"),
    ({"handler": {"input": {"name": "x", "shape": [0]}}}, "positive dims"),
    ({"handler": {"input": {"name": "x", "shape": [3], "dtype": "object"}}}, "dtype 'object'"),
    ({"handler": {"input": {"name": "x", "shape": [3], "min": 2, "max": 1}}}, "min 2.0 > max 1.0"),
    ({"handler": {"input": {"name": "x", "shape": [3]}, "top_k": 0}}, "top_k must be >= 1"),
])
def test_bad_model_config_names_the_setting(yaml_doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HandlerConfig.from_model_yaml(yaml_doc)
