"""Text in: raw strings through the archive's tokenizer.json, tokenised once per batch, truncated at the
declared maximum, in the same batches as requests that send token ids."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from handlers.handler import InferenceHandler
from handlers.signature import InputSpec, Signature
from handlers.errors import ConfigError
from handlers.text_encoder import TextEncoder
from support.torchserve_context import make_context, run_handler_raw

JSON = "application/json"


def expected_class(bert_build, text: str) -> int:
    tokenizer = Tokenizer.from_file(str(bert_build.task.tokenizer_path))
    ids = np.array([tokenizer.encode(text).ids[:64]], np.int64)
    with torch.inference_mode():
        return int(bert_build.task.model(torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids))).argmax())


def test_texts_and_token_ids_share_a_batch(bert_build) -> None:
    directory = bert_build.build_dir / "bert"
    context = make_context(directory, "model.onnx")
    handler = InferenceHandler()
    handler.initialize(context)
    texts = bert_build.task.test_texts[:4]
    long_text = " ".join(["rain"] * 200)  # 201 tokens with [CLS]: truncated at the declared 64, not refused
    ids = bert_build.task.test_inputs["input_ids"][5]
    mask = bert_build.task.test_inputs["attention_mask"][5]
    answers = run_handler_raw(handler, context, [
        (json.dumps({"text": texts[0]}).encode(), JSON),
        (json.dumps({"text": texts[1:3]}).encode(), JSON),
        (texts[3].encode(), "text/plain"),
        (long_text.encode(), "text/plain; charset=utf-8"),
        (json.dumps({"inputs": {"input_ids": ids[mask == 1].tolist(), "attention_mask": mask[mask == 1].tolist()}}
                    ).encode(), JSON),
        (json.dumps({"text": []}).encode(), JSON),
        (b"\xff\xfe", "text/plain"),
    ])
    assert [status for status, _, _ in answers] == [200] * 5 + [400, 400]
    classes = [[p["class"] for p in json.loads(body)["predictions"]] for _, body, _ in answers[:5]]
    assert classes[:4] == [[expected_class(bert_build, texts[0])],
                           [expected_class(bert_build, t) for t in texts[1:3]],
                           [expected_class(bert_build, texts[3])],
                           [expected_class(bert_build, long_text)]]
    assert json.loads(answers[3][1])["predictions"][0]["label"] == "weather"
    assert all("X-Batch-Instances" not in headers for _, _, headers in answers)


def test_a_tokenizer_must_be_able_to_feed_the_inputs(bert_build) -> None:
    with pytest.raises(ConfigError, match="cannot come from text"):
        TextEncoder(bert_build.task.tokenizer_path, Signature((InputSpec("pixels", ("1..8",)),)))
    with pytest.raises(ConfigError, match="one dynamic sequence dimension"):
        TextEncoder(bert_build.task.tokenizer_path, Signature((InputSpec("input_ids", (8,), "int64"),)))
