"""One module per task: classification (single- and multi-label), regression, embedding; JSON, binary and v2."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from handlers.tasks.classification import Classification, sigmoid
from handlers.tasks.embedding import Embedding
from handlers.tasks.regression import Regression


def test_single_label_classification_answers_as_before() -> None:
    task = Classification(["a", "b", "c"], top_k=2)
    [row] = task.json_rows([np.array([[0.0, 3.0, 1.0]])])
    answer = json.loads(row)
    assert answer["class"] == 1 and answer["label"] == "b" and [t["class"] for t in answer["top_k"]] == [1, 2]
    assert set(task.v2_tensors([np.array([[0.0, 3.0, 1.0]])])) == {"probabilities", "class", "label"}


def test_multi_label_uses_sigmoid_and_the_threshold() -> None:
    task = Classification(["a", "b", "c"], top_k=3, multi_label=True, threshold=0.5)
    logits = np.array([[2.0, -2.0, 0.1], [-5.0, -5.0, -5.0]])
    rows = [json.loads(r) for r in task.json_rows([logits])]
    assert rows[0]["labels"] == ["a", "c"] and rows[0]["classes"] == [0, 2]
    assert rows[1]["labels"] == [] and rows[1]["probabilities"] == pytest.approx(sigmoid(logits[1]), abs=1e-6)
    tensors = task.v2_tensors([logits])
    assert tensors["predicted"][2].tolist() == [[True, False, True], [False, False, False]]
    body, content_type = task.binary([logits])
    assert content_type == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body)), sigmoid(logits), rtol=1e-6)


def test_a_regressor_answers_its_number_never_a_class() -> None:
    task = Regression(["price"])
    rows = [json.loads(r) for r in task.json_rows([np.array([[3.2], [-1.5]], np.float32)])]
    assert rows == [{"value": 3.2}, {"value": -1.5}]
    vector = Regression(["xy"]).json_rows([np.array([[1.0, 2.0]], np.float32)])
    assert json.loads(vector[0]) == {"value": [1.0, 2.0]}
    assert task.v2_tensors([np.array([[3.2]], np.float32)])["price"][:2] == ("FP32", [1, 1])


def test_several_regression_outputs_are_named() -> None:
    task = Regression(["price", "range"])
    outputs = [np.array([3.0, 4.0], np.float32), np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)]
    assert [json.loads(r) for r in task.json_rows(outputs)] == [{"price": 3.0, "range": [1.0, 2.0]},
                                                               {"price": 4.0, "range": [3.0, 5.0]}]
    body, content_type = task.binary(outputs)
    assert content_type == "application/x-npz"
    with np.load(io.BytesIO(body), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["range"], outputs[1])


def test_embeddings_are_l2_normalised_when_asked_and_binary_on_request() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    rows = [json.loads(r) for r in Embedding("vector", normalize=True).json_rows([vectors])]
    assert rows[0]["embedding"] == pytest.approx([0.6, 0.8]) and rows[1]["embedding"] == [0.0, 0.0]
    assert json.loads(Embedding("vector").json_rows([vectors])[0]) == {"embedding": [3.0, 4.0]}
    body, content_type = Embedding("vector").binary([vectors])
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), vectors)
    assert Embedding("vector").v2_outputs == ("vector",)
