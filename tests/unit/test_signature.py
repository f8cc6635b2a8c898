"""The model signature: dims and ranges, per-request checks, shared lengths, padding a batch to its longest."""
from __future__ import annotations

import numpy as np
import pytest

from handlers.config import HandlerConfig
from handlers.errors import InvalidInput, TooManyInstances
from handlers.signature import InputSpec, Range, Signature, parse_dim
from handlers.errors import ConfigError

IDS = InputSpec("input_ids", ("1..8",), "int64", 0, 99)
MASK = InputSpec("attention_mask", ("1..8",), "int64", 0, 1)
TEXT = Signature((IDS, MASK), ("logits",))


def test_dims_parse_sizes_and_ranges() -> None:
    assert parse_dim(16) == 16 and parse_dim("16") == 16 and parse_dim("1..128") == Range(1, 128)
    assert IDS.shape == (Range(1, 8),) and IDS.to_dict()["shape"] == ["1..8"]
    assert InputSpec.from_dict(IDS.to_dict()) == IDS
    for bad in ("0..4", "5..2", "x"):
        with pytest.raises(ConfigError):
            parse_dim(bad)


def test_one_instance_or_several_of_any_declared_length() -> None:
    assert IDS.as_batch(np.arange(5), max_instances=4).shape == (1, 5)
    assert IDS.as_batch(np.zeros((3, 8), np.int64), max_instances=4).shape == (3, 8)
    with pytest.raises(InvalidInput, match=r"has shape \[1, 9\]; expected \[1..8\] or \[N, 1..8\]"):
        IDS.as_batch(np.zeros((1, 9), np.int64), max_instances=4)
    with pytest.raises(TooManyInstances):
        IDS.as_batch(np.zeros((5, 2), np.int64), max_instances=4)


def test_integer_inputs_keep_their_dtype_and_refuse_fractions_and_wrapping() -> None:
    assert IDS.as_batch(np.array([1, 2], np.int32), max_instances=1).dtype == np.int64
    with pytest.raises(InvalidInput, match="dtype float64; expected int64"):
        IDS.as_batch(np.array([1.5, 2.0]), max_instances=1)
    small = InputSpec("pixels", (2,), "uint8")
    with pytest.raises(InvalidInput, match=r"holds 300, outside uint8 \[0, 255\]"):
        small.as_batch(np.array([300, 1]), max_instances=1)


def test_a_request_must_send_every_input_with_matching_counts_and_lengths() -> None:
    ok = TEXT.check_request({"input_ids": np.array([5, 6, 7]), "attention_mask": np.array([1, 1, 1])}, 4)
    assert {k: v.shape for k, v in ok.items()} == {"input_ids": (1, 3), "attention_mask": (1, 3)}
    with pytest.raises(InvalidInput, match="this model takes"):
        TEXT.check_request({"input_ids": np.array([5])}, 4)
    with pytest.raises(InvalidInput, match="input 'attention_mask' has length 2 on dim1; input 'input_ids' has 3"):
        TEXT.check_request({"input_ids": np.array([5, 6, 7]), "attention_mask": np.array([1, 1])}, 4)
    with pytest.raises(InvalidInput, match="different numbers of instances"):
        TEXT.check_request({"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.ones((1, 3), np.int64)}, 4)


def test_a_batch_is_padded_to_its_longest_never_to_the_maximum() -> None:
    requests = [{"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.array([[1, 1, 1]])},
                {"input_ids": np.array([[4, 5], [6, 7]]), "attention_mask": np.array([[1, 1], [1, 0]])}]
    batch = Signature((IDS, InputSpec("attention_mask", ("1..8",), "int64", pad_value=0)),).stack(requests)
    np.testing.assert_array_equal(batch["input_ids"], [[1, 2, 3], [4, 5, 0], [6, 7, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    padded = InputSpec("x", ("1..8",), "float32", pad_value=-1.0)
    out = Signature((padded,)).stack([{"x": np.ones((1, 1), np.float32)}, {"x": np.ones((1, 2), np.float32)}])
    np.testing.assert_array_equal(out["x"], [[1, -1], [1, 1]])


def test_values_are_checked_per_input() -> None:
    with pytest.raises(InvalidInput, match="input 'input_ids' has a value 100 above the allowed maximum 99"):
        TEXT.check_values({"input_ids": np.array([[100]]), "attention_mask": np.array([[1]])})
    assert not TEXT.values_ok({"input_ids": np.array([[1]]), "attention_mask": np.array([[2]])})


def test_validation_lengths_are_shortest_middle_longest() -> None:
    assert TEXT.lengths() == (1, 4, 8)
    assert Signature((InputSpec("x", (4,)),)).lengths() == ()


def test_model_yaml_with_several_inputs_round_trips() -> None:
    config = HandlerConfig(signature=TEXT, task="regression")
    again = HandlerConfig.from_model_yaml({"handler": config.to_section()})
    assert again.signature == TEXT and again.task == "regression" and again.input is None
    with pytest.raises(ConfigError, match="'input' .* or 'inputs'"):
        HandlerConfig.from_model_yaml({"handler": {}})
    with pytest.raises(ConfigError, match="are for classification"):
        HandlerConfig(signature=TEXT, task="embedding", labels=("a",))
