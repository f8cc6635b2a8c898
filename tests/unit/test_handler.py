"""The TorchServe adapter driven through TorchServe's own Context, as the worker calls it."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from handlers.handler import InferenceHandler
from support.models import eager_predictions
from support.torchserve_context import ARTIFACTS, make_context, run_handler



def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def json_body(array: np.ndarray) -> tuple[bytes, str]:
    return json.dumps({"data": array.tolist()}).encode(), "application/json"


def test_initialize_bounds_threads_and_reads_contract(mlp_handler) -> None:
    handler, _, built = mlp_handler
    assert handler.pipeline.config.input == built.contract
    assert "intra-op threads" in handler.pipeline.backend.describe()


def test_seven_good_and_one_malformed_in_one_batch(mlp_handler) -> None:
    handler, context, built = mlp_handler
    good = [json_body(x) for x in built.x_test[:7]]
    answers = run_handler(handler, context, good[:3] + [(b"{not json", "application/json")] + good[3:])
    statuses = [status for status, _ in answers]
    assert statuses == [200, 200, 200, 400, 200, 200, 200, 200]
    assert "not valid JSON" in answers[3][1]["error"]["message"]
    served = [body["predictions"][0]["class"] for status, body in answers if status == 200]
    assert served == eager_predictions(built.model, built.x_test[:7]).tolist()
    # Nothing tells a client about its batch-mates: the old X-Batch-Instances header said how many instances
    # the other clients of its batch had sent.
    assert not any("batch" in name.lower() for idx in range(8) for name in context.get_response_headers(idx))


def test_each_bad_request_gets_its_own_status(mlp_handler) -> None:
    handler, context, built = mlp_handler
    bodies = [
        json_body(built.x_test[0]),
        (b"\x89PNG....", "image/png"),                                   # 415
        json_body(np.zeros(63)),                                          # 422 shape
        json_body(np.full(64, 2.0)),                                      # 422 range
        (npy(np.zeros((65, 64), np.float32)), "application/x-npy"),      # 413
        (npy(built.x_test[1:3]), "application/x-npy"),                   # 200, two instances
        (b"", "application/json"),                                        # 400 empty
    ]
    answers = run_handler(handler, context, bodies)
    assert [status for status, _ in answers] == [200, 415, 422, 422, 413, 200, 400]
    assert "shape [63]; expected [64]" in answers[2][1]["error"]["message"]
    assert "above the allowed maximum 1" in answers[3][1]["error"]["message"]
    assert len(answers[5][1]["predictions"]) == 2


def test_npy_and_json_give_the_same_answer(mlp_handler) -> None:
    handler, context, built = mlp_handler
    answers = run_handler(handler, context, [json_body(built.x_test[:4]), (npy(built.x_test[:4]), "application/x-npy")])
    assert answers[0] == answers[1]
    assert [p["class"] for p in answers[0][1]["predictions"]] == eager_predictions(built.model, built.x_test[:4]).tolist()


def test_all_bad_batch_never_calls_the_model(mlp_handler) -> None:
    handler, context, _ = mlp_handler
    handler.pipeline.backend = None  # would raise if touched
    answers = run_handler(handler, context, [(b"{", "application/json"), (b"", "application/x-npy"),
                                             json_body(np.full(64, np.nan)), json_body(np.full(64, 7.0))])
    assert [status for status, _ in answers] == [400, 400, 422, 422]


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_cnn_top_k_probabilities(built_models, artifact: str) -> None:
    built = built_models["digits_cnn"]
    context = make_context(built.directory, artifact)
    handler = InferenceHandler()
    handler.initialize(context)
    [(status, body)] = run_handler(handler, context, [(npy(built.x_test[:5]), "application/x-npy")])
    assert status == 200
    for row, expected in zip(body["predictions"], eager_predictions(built.model, built.x_test[:5])):
        assert row["class"] == expected and row["label"] == str(expected)
        probabilities = [t["probability"] for t in row["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)


def test_workflow_style_load_call_with_no_data(mlp_handler) -> None:
    handler, context, _ = mlp_handler
    assert handler.handle(None, context) is None


def v2_body(instances: np.ndarray, name: str = "pixels", request_id: str = "abc") -> tuple[bytes, str]:
    request = {"id": request_id, "inputs": [{"name": name, "shape": list(instances.shape), "datatype": "FP32",
                                             "data": instances.ravel().tolist()}]}
    return json.dumps(request).encode(), "application/json"


def test_open_inference_protocol_round_trip_in_a_mixed_batch(mlp_handler) -> None:
    handler, context, built = mlp_handler
    x = built.x_test[:5]
    answers = run_handler(handler, context, [v2_body(x[:3]), json_body(x[3]), v2_body(x[4:5], name="wrong")])
    assert [status for status, _ in answers] == [200, 200, 400]
    v2 = answers[0][1]
    assert v2["id"] == "abc" and v2["model_name"] == "test"
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 10] and outputs["probabilities"]["datatype"] == "FP32"
    expected = eager_predictions(built.model, x[:3]).tolist()
    assert outputs["class"]["data"] == expected and outputs["label"]["data"] == [str(c) for c in expected]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert answers[1][1]["predictions"][0]["class"] == eager_predictions(built.model, x[3:4])[0]
    # Open Inference Protocol errors are {"error": "<message>"}: its clients read a string there.
    assert answers[2][1] == {"error": "v2 input is named 'wrong'; this model's input is 'pixels'"}


def test_a_form_encoded_request_gets_415_naming_the_header_and_its_batch_mates_200(mlp_handler) -> None:
    """What TorchServe hands the worker for curl's default --data type: no body, only the request's header."""
    handler, context, built = mlp_handler
    form = (None, None, {"Content-Type": "application/x-www-form-urlencoded"})
    no_type = (json.dumps({"data": built.x_test[1].tolist()}).encode(), None)
    answers = run_handler(handler, context, [json_body(built.x_test[0]), form, no_type, (npy(built.x_test[2]), None)])
    assert [status for status, _ in answers] == [200, 415, 200, 200]
    assert "set the Content-Type header to application/json" in answers[1][1]["error"]["message"]
    served = [answers[i][1]["predictions"][0]["class"] for i in (0, 2, 3)]
    assert served == eager_predictions(built.model, built.x_test[[0, 1, 2]]).tolist()
