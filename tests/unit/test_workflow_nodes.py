"""The workflow's function nodes, called as TorchServe's worker calls them (its own Context and batch)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ts.context import Context
from ts.service import Service

from handlers import workflow_nodes
from handlers.encode import encode_npy
from handlers.composition import CompositionConfig, MemberSpec, as_logits, weighted_mean
from handlers.config import InputContract
from handlers.bodies.npy import decode_npy
from handlers.encode import PredictionEncoder, encode_predictions
from servekit.examples.data import LABELS
from servekit.build.model_config import Batching, model_config, write_model_config
from support.torchserve_context import worker_batch

CONTRACT = InputContract("image", (8, 8), "float32", 0.0, 255.0)
WEIGHTS = {"mlp": 1.0, "cnn": 3.0}


@pytest.fixture
def node_context(tmp_path: Path) -> Context:
    """A function node's context: its model_dir holds the workflow's composition.yaml."""
    config = CompositionConfig(tuple(MemberSpec(n, f"{n}.onnx", w) for n, w in WEIGHTS.items()), scale=1 / 255)
    write_model_config(tmp_path / workflow_nodes.COMPOSITION_FILE,
                       model_config(CONTRACT, LABELS, Batching(), composition=config.to_dict()))
    workflow_nodes.load_settings.cache_clear()
    return Context("wf__node", str(tmp_path), {"model": {}}, 1, None, "0.12.0")


def call(node, context: Context, rows: list[dict]) -> list[bytes]:
    headers, data, request_ids = Service.retrieve_data_for_inference(rows)
    context.request_ids, context.request_processor = request_ids, headers
    return node(data, context)


def test_load_call_with_no_data_reads_the_settings(node_context: Context) -> None:
    assert workflow_nodes.preprocess(None, node_context) is None
    assert workflow_nodes.aggregate(None, node_context) is None


def test_preprocess_validates_once_and_hands_members_scaled_float32_npy(node_context: Context) -> None:
    image = np.full((8, 8), 255.0)
    [out] = call(workflow_nodes.preprocess, node_context,
                 worker_batch([(json.dumps({"data": image.tolist()}).encode(), "application/json")]))
    scaled = decode_npy(out)
    assert scaled.dtype == np.float32 and scaled.shape == (1, 8, 8) and float(scaled.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("body, message", [
    ({"data": [1, 2]}, "422 Unprocessable Entity: input 'image' has shape [2]"),
    ({"data": (np.ones((8, 8)) * 300).tolist()}, "above the allowed maximum 255"),
    ({"inputs": [{"name": "image", "shape": [8, 8], "datatype": "FP32", "data": [0.0] * 64}]}, "plain JSON only"),
])
def test_preprocess_rejects_bad_input_by_raising_so_no_member_runs(node_context: Context, body: dict,
                                                                   message: str) -> None:
    with pytest.raises(workflow_nodes.WorkflowInputRejected, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(workflow_nodes.preprocess, node_context, worker_batch([(json.dumps(body).encode(), "application/json")]))


def member_rows(bodies: dict[str, bytes]) -> list[dict]:
    """One request whose parameters are named after the parent nodes, as the DAG sends them."""
    return [{"requestId": b"r0", "parameters": [{"name": name, "contentType": "", "value": body}
                                                 for name, body in bodies.items()]}]


def test_aggregate_is_the_weighted_mean_the_in_process_model_computes(node_context: Context) -> None:
    mlp = np.array([[0.7, 0.2, 0.1] + [0.0] * 7], dtype=np.float32)
    cnn = np.array([[0.1, 0.8, 0.1] + [0.0] * 7], dtype=np.float32)
    [out] = call(workflow_nodes.aggregate, node_context, member_rows({"mlp": encode_npy(mlp), "cnn": encode_npy(cnn)}))
    expected = encode_predictions(PredictionEncoder(LABELS, 3).rows(as_logits(weighted_mean({"mlp": mlp, "cnn": cnn}, WEIGHTS))))
    assert out == expected
    assert json.loads(out)["predictions"][0]["class"] == 1


def test_aggregate_names_a_member_that_answered_an_error(node_context: Context) -> None:
    error = b'{"error":{"code":422,"message":"input \'image\' has shape [2]"}}'
    with pytest.raises(workflow_nodes.MemberAnswerInvalid, match="member 'cnn' answered"):
        call(workflow_nodes.aggregate, node_context,
             member_rows({"mlp": encode_npy(np.full((1, 10), 0.1, np.float32)), "cnn": error}))
