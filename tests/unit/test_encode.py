"""encode: softmax, top-k and the JSON bodies."""
from __future__ import annotations

import json

import numpy as np

from handlers.encode import PredictionEncoder, encode_error, encode_predictions, predictions, softmax
from handlers.errors import InvalidInput


def test_softmax_is_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0]])


def test_predictions_rank_top_k_with_labels() -> None:
    rows = predictions(np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]]), ["cat", "dog", "owl"], top_k=2)
    assert [r["label"] for r in rows] == ["dog", "cat"]
    assert [t["class"] for t in rows[0]["top_k"]] == [1, 2]
    assert len(rows[0]["top_k"]) == 2
    assert rows[0]["top_k"][0]["probability"] > rows[0]["top_k"][1]["probability"]


def test_missing_labels_fall_back_to_class_index() -> None:
    assert predictions(np.array([[0.0, 1.0]]), [], top_k=5)[0]["label"] == "1"


def test_bodies_are_compact_json_bytes() -> None:
    rows = PredictionEncoder(['say "hi"', "b"], top_k=1).rows(np.array([[2.0, 0.0], [0.0, 2.0]]))
    body = encode_predictions(rows)
    assert isinstance(body, bytes) and body.startswith(b"{\"predictions\":[{\"class\":0,")
    decoded = json.loads(body)["predictions"]
    assert [p["label"] for p in decoded] == ['say "hi"', "b"]
    assert decoded[0]["top_k"] == [{"class": 0, "label": 'say "hi"', "probability": 0.880797}]
    error = json.loads(encode_error(InvalidInput("input 'x' has shape [3]")))
    assert error == {"error": {"code": 422, "type": "InvalidInput", "message": "input 'x' has shape [3]"}}
