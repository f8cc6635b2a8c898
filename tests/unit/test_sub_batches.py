"""Length-aware batching: sub-batches of similar length, answers in the order the requests came, padding
within the bound; and through the pipeline, the model sees only those sub-batches."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from handlers.bodies.request import RequestInput
from handlers.config import HandlerConfig
from handlers.pipeline import InferencePipeline
from handlers.signature import InputSpec, Signature
from handlers.sub_batches import Item, SubBatchPolicy, padding_efficiency, plan_sub_batches

MAX_LENGTH = 128
SIGNATURE = Signature((InputSpec("x", (f"1..{MAX_LENGTH}",), "float32", 0.0, 10.0),))


class LengthBackend:
    """Answers each row with a one-hot at its real length (non-zero values), and records every batch it ran."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def run_named(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = inputs["x"]
        self.batches.append(batch)
        logits = np.zeros((batch.shape[0], MAX_LENGTH + 1), np.float32)
        logits[np.arange(batch.shape[0]), np.count_nonzero(batch, axis=1)] = 10.0
        return [logits]

    def describe(self) -> str:
        return "length backend"


def random_case(rng: random.Random) -> tuple[list[Item], SubBatchPolicy]:
    items = [Item(rng.randint(1, 3), rng.randint(1, MAX_LENGTH)) for _ in range(rng.randint(1, 24))]
    return items, SubBatchPolicy(rng.choice([0.5, 0.85, 1.0]), rng.choice([0, 300]), rng.random() < 0.2)


def test_every_request_lands_in_exactly_one_sub_batch_within_the_bounds() -> None:
    rng = random.Random(0)
    for _ in range(500):
        items, policy = random_case(rng)
        groups = plan_sub_batches(items, policy)
        assert sorted(i for group in groups for i in group) == list(range(len(items)))
        for group in groups:
            if len(group) == 1:
                continue  # one request alone pads nothing, whatever its size
            assert padding_efficiency(items, [group]) >= policy.min_efficiency - 1e-9
            if policy.max_tokens:
                assert sum(items[i].rows for i in group) * max(items[i].length for i in group) <= policy.max_tokens
            if policy.equal_lengths_only:
                assert len({items[i].length for i in group}) == 1


def test_equal_lengths_stay_one_batch_and_mixed_lengths_are_cut() -> None:
    assert plan_sub_batches([Item(1, 10)] * 5, SubBatchPolicy()) == [[0, 1, 2, 3, 4]]
    groups = plan_sub_batches([Item(1, 100), Item(1, 5), Item(1, 6), Item(1, 98)], SubBatchPolicy(0.85))
    assert groups == [[1, 2], [3, 0]]  # shortest first; each pair pads at most a few tokens
    assert padding_efficiency([Item(1, 100), Item(1, 5), Item(1, 6), Item(1, 98)], groups) > 0.95
    assert plan_sub_batches([Item(1, 4), Item(1, 5)], SubBatchPolicy(0.5, equal_lengths_only=True)) == [[0], [1]]


def request(length: int, rows: int = 1) -> RequestInput:
    return RequestInput(json.dumps({"data": [[1.0] * length] * rows}).encode(), "application/json")


@pytest.mark.parametrize("seed", range(5))
def test_the_pipeline_answers_in_request_order_and_pads_within_the_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(24), 0.7, 16)), 1, MAX_LENGTH).astype(int).tolist()
    rows = [1 + int(rng.integers(0, 2)) for _ in lengths]
    backend = LengthBackend()
    config = HandlerConfig(signature=SIGNATURE, min_padding_efficiency=0.85)
    answers, times = InferencePipeline(config, backend).run([request(n, r) for n, r in zip(lengths, rows)])
    classes = [[p["class"] for p in json.loads(answer.body)["predictions"]] for answer in answers]
    assert classes == [[n] * r for n, r in zip(lengths, rows)]  # each its own length: the original order kept
    for batch in backend.batches:
        if batch.shape[0] > 1 and len({int(np.count_nonzero(row)) for row in batch}) > 1:
            assert np.count_nonzero(batch) / batch.size >= 0.85
    assert len(backend.batches) == times.sub_batches > 1
    assert times.instances == sum(rows)
    assert times.real_tokens == sum(n * r for n, r in zip(lengths, rows))
    assert times.computed_tokens == sum(batch.size for batch in backend.batches)
    assert times.padding_efficiency >= 0.85


def test_a_model_that_padding_changes_runs_equal_lengths_only() -> None:
    backend = LengthBackend()
    config = HandlerConfig(signature=SIGNATURE, padding_invariant=False)
    answers, times = InferencePipeline(config, backend).run([request(n) for n in (7, 9, 7, 30, 9)])
    assert [json.loads(a.body)["predictions"][0]["class"] for a in answers] == [7, 9, 7, 30, 9]
    assert sorted(batch.shape for batch in backend.batches) == [(1, 30), (2, 7), (2, 9)]
    assert times.padding_efficiency == 1.0


def test_a_bad_request_in_a_sub_batch_costs_only_itself() -> None:
    backend = LengthBackend()
    config = HandlerConfig(signature=SIGNATURE)
    bad = RequestInput(json.dumps({"data": [[1.0] * 5 + [99.0]]}).encode(), "application/json")  # above max 10
    answers, _ = InferencePipeline(config, backend).run([request(6), bad, request(40), request(6)])
    assert [a.status for a in answers] == [200, 422, 200, 200]  # out of range: the signature's 422
    assert [json.loads(answers[i].body)["predictions"][0]["class"] for i in (0, 2, 3)] == [6, 40, 6]
