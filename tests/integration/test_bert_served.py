"""The BERT-style model in a real TorchServe: ORT FP32, ORT dynamic INT8 and TorchScript serve
variable-length two-input requests in shared (padded) batches, each equal to its in-process answer."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from servekit.build.validate import onnx_runner
from support.serving import BATCH_SIZE, MAX_BATCH_DELAY_MS, batch_counters, mean_batch_size, run_archive_sh, send_together

pytestmark = pytest.mark.integration
JSON = "application/json"
ARCHIVES = ("bert_onnx", "bert_ts", "bert_int8_onnx")
REQUESTS = 32
# Dynamic INT8 quantizes activations with one scale per tensor, i.e. per batch: a request padded into
# a shared batch is not bit-equal to itself alone. Its probabilities stay this close.
INT8_PROBABILITY_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def served_bert(live, model_store: Path, bert_build):
    result = run_archive_sh(model_store, bert_build.build_dir / "bert", bert_build.build_dir / "bert_int8")
    assert result.returncode == 0, result.stderr
    for archive in ARCHIVES:
        live.client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
    yield live.client
    for archive in ARCHIVES:
        live.client.unregister(archive)


def unpadded_requests(bert_build) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each held-out sentence at its own length (no padding): lengths differ from request to request."""
    inputs = bert_build.task.test_inputs
    out = []
    for ids, mask in zip(inputs["input_ids"][:REQUESTS], inputs["attention_mask"][:REQUESTS]):
        length = int(mask.sum())
        out.append((ids[:length], mask[:length]))
    return out


def body(ids: np.ndarray, mask: np.ndarray, as_npz: bool) -> tuple[bytes, str]:
    if as_npz:
        buffer = io.BytesIO()
        np.savez(buffer, input_ids=ids, attention_mask=mask)
        return buffer.getvalue(), "application/x-npz"
    return json.dumps({"inputs": {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}}).encode(), JSON


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def in_process(bert_build, archive: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The request alone, in this process: eager FP32 for FP32 archives, the INT8 ONNX file for INT8."""
    if archive == "bert_int8_onnx":
        logits = onnx_runner(bert_build.build_dir / "bert_int8" / "model.onnx")(ids[None], mask[None])
    else:
        with torch.inference_mode():
            logits = bert_build.task.model(torch.from_numpy(ids[None]), torch.from_numpy(mask[None])).numpy()
    return softmax(np.asarray(logits, np.float64))[0]


@pytest.mark.parametrize("archive", ARCHIVES)
def test_variable_length_requests_in_shared_batches_match_in_process(served_bert, bert_build, archive: str) -> None:
    requests = unpadded_requests(bert_build)
    assert len({len(ids) for ids, _ in requests}) > 5  # really variable length
    bad = [body(np.array([5, 6, 7]), np.array([1, 1]), False), body(np.array([5, 999]), np.array([1, 1]), True)]
    before = batch_counters(served_bert, archive)
    responses = send_together(served_bert, archive, [body(*r, i % 2 == 1) for i, r in enumerate(requests)] + bad)
    assert [r.status_code for r in responses] == [200] * len(requests) + [422, 422]
    tolerance = INT8_PROBABILITY_TOLERANCE if "int8" in archive else 1e-4
    for response, (ids, mask) in zip(responses, requests):
        expected = in_process(bert_build, archive, ids, mask)
        answer = response.json()["predictions"][0]
        assert answer["class"] == int(expected.argmax())
        assert answer["top_k"][0]["probability"] == pytest.approx(float(expected.max()), abs=tolerance)
    assert mean_batch_size(served_bert, archive, before, len(requests)) > 1


def test_raw_text_is_answered_through_the_archived_tokenizer(served_bert, bert_build) -> None:
    texts = bert_build.task.test_texts[:12]
    bodies = [(t.encode(), "text/plain") if i % 2 else (json.dumps({"text": t}).encode(), JSON)
              for i, t in enumerate(texts)]
    responses = send_together(served_bert, "bert_int8_onnx", bodies + [(b"", "text/plain")])
    assert [r.status_code for r in responses] == [200] * len(texts) + [400]
    served = [r.json()["predictions"][0]["class"] for r in responses[:-1]]
    fp32 = [int(in_process(bert_build, "bert_onnx", ids[mask == 1], mask[mask == 1]).argmax())
            for ids, mask in zip(bert_build.task.test_inputs["input_ids"][:12],
                                 bert_build.task.test_inputs["attention_mask"][:12])]
    assert np.mean(np.array(served) == np.array(fp32)) >= 0.9  # INT8 agrees with FP32 on the same texts
