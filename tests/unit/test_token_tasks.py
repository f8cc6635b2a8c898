"""Token classification and extractive question answering through the handler (as a worker runs it, batches
mixing requests of different lengths) give what transformers' own pipelines give on the same model and text:
entities and their offsets, answers and their spans."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from handlers.handler import InferenceHandler
from support.torchserve_context import make_context, model_calls, run_handler_raw

JSON = "application/json"
NER_TEXTS = ["john smith works in paris for acme corp", "mary jones and the new york globex",
             "Berlin, London -- and PARIS!", "xyzzy lives by the river in berlin .", "a",
             "émile zola à paris ; qqq mary"]
QA_CASES = [("who works in paris ?", "john smith works in paris and lives in london ."),
            ("where is acme corp ?", "Acme Corp, in New York! The river north of the city, by the lake."),
            ("what did she say ?", "she said: 'london' -- then left. " * 3),
            ("who ?", " ".join(["the goal of the team and the coach was a score in the match"] * 30)),  # 7 windows
            ("zzz", "émile zola à paris ; xyzzy")]
SCORE_TOLERANCE = 1e-4  # ONNX Runtime against eager PyTorch, after a softmax


def handler_for(directory: Path, artifact: str = "model.onnx", **settings) -> tuple[InferenceHandler, object]:
    if settings:  # the same export served with other handler settings
        changed = directory.parent / f"{directory.name}-{'-'.join(f'{k}-{v}' for k, v in settings.items())}"
        if not changed.exists():
            shutil.copytree(directory, changed)
            document = yaml.safe_load((changed / "model-config.yaml").read_text())
            document["handler"].update(settings)
            (changed / "model-config.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        directory = changed
    context = make_context(directory, artifact)
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context


def predictions(answer: tuple[int, bytes, dict]) -> list:
    status, body, _ = answer
    assert status == 200, body
    return json.loads(body)["predictions"]


def same_entities(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs), (ours, theirs)
    for mine, reference in zip(ours, theirs):
        assert {k: v for k, v in mine.items() if k != "score"} == {
            k: (int(v) if k in ("start", "end", "index") else v) for k, v in reference.items() if k != "score"}
        assert mine["score"] == pytest.approx(float(reference["score"]), abs=SCORE_TOLERANCE)


@pytest.mark.parametrize("aggregation", ["simple", "none"])
def test_entities_equal_the_token_classification_pipeline(checkpoints, aggregation: str) -> None:
    from transformers import pipeline

    ner = checkpoints["bert-ner"]
    handler, context = handler_for(ner.directory, aggregation=aggregation)
    pipe = pipeline("token-classification", model=str(ner.folder), aggregation_strategy=aggregation)
    with model_calls(handler) as calls:
        answers = run_handler_raw(handler, context, [
            (json.dumps({"text": NER_TEXTS[0]}).encode(), JSON),
            (json.dumps({"text": NER_TEXTS[1:4]}).encode(), JSON),  # three texts of different lengths in one request
            (NER_TEXTS[4].encode(), "text/plain"),
            (json.dumps({"text": NER_TEXTS[5]}, ensure_ascii=False).encode(), JSON)])
    ours = [row["entities"] for answer in answers for row in predictions(answer)]
    assert len(ours) == len(NER_TEXTS)
    assert sum(calls) == len(NER_TEXTS)  # each text ran once, none twice and none left out
    for text, entities in zip(NER_TEXTS, ours):
        same_entities(entities, pipe(text))
        for entity in entities:  # offsets point into the request's own text
            assert entity["word"].replace(" ", "").replace("##", "") in text.lower().replace(" ", "") or \
                entity["word"] == text[entity["start"]:entity["end"]]
    if aggregation == "simple":  # the trained model finds people, places and organisations of several tokens
        groups = {(e["entity_group"], e["word"]) for e in ours[0]}
        assert {("PER", "john smith"), ("LOC", "paris"), ("ORG", "acme corp")} <= groups


def test_token_answers_are_cropped_to_each_request(checkpoints) -> None:
    """A short request batched with a long one gets its own tokens only, in every answer format."""
    ner = checkpoints["bert-ner"]
    handler, context = handler_for(ner.directory, "model.pt")
    short_ids = [[2, 40, 41, 3]]
    answers = run_handler_raw(handler, context, [
        (json.dumps({"text": " ".join(["paris"] * 40)}).encode(), JSON),
        (json.dumps({"inputs": {"input_ids": short_ids, "attention_mask": [[1, 1, 1, 1]],
                                "token_type_ids": [[0, 0, 0, 0]]}}).encode(), JSON),
        (json.dumps({"text": "john"}).encode(), JSON, {"Accept": "application/x-npy"}),
        (json.dumps({"inputs": [{"name": "input_ids", "shape": [1, 4], "datatype": "INT64", "data": short_ids[0]},
                                {"name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 1]},
                                {"name": "token_type_ids", "shape": [1, 4], "datatype": "INT64",
                                 "data": [0, 0, 0, 0]}]}).encode(), JSON)])
    assert len(predictions(answers[0])[0]["entities"]) == 40
    tokens = predictions(answers[1])[0]["tokens"]
    assert [t["index"] for t in tokens] == [0, 1, 2, 3]
    status, body, headers = answers[2]
    array = np.load(__import__("io").BytesIO(body))
    assert status == 200 and array.shape == (1, 3, 7)  # [CLS] john [SEP], seven labels: not the batch's 42
    np.testing.assert_allclose(array.sum(-1), 1.0, atol=1e-5)
    v2 = json.loads(answers[3][1])
    assert v2["outputs"][0]["name"] == "probabilities" and v2["outputs"][0]["shape"] == [1, 4, 7]


def reference_answer(model, tokenizer, question: str, context: str) -> dict:
    """transformers 4.x's question-answering pipeline (removed in 5.x) from its parts that 5.x still ships:
    the tokenizer's overflowing windows, each run alone, ``select_starts_ends`` (its copy in the document QA
    pipeline), words aligned and equal answers summed as its ``postprocess`` did."""
    import torch
    from transformers.pipelines.document_question_answering import select_starts_ends

    max_length = min(tokenizer.model_max_length, 384)
    encoded = tokenizer(question, context, truncation="only_second", max_length=max_length,
                        stride=min(max_length // 2, 128), return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_token_type_ids=True, return_special_tokens_mask=True)
    answers: list[dict] = []
    for span in range(len(encoded["input_ids"])):
        ids = encoded["input_ids"][span]
        p_mask = np.array([token != 1 for token in encoded.sequence_ids(span)])
        p_mask[np.array(ids) == tokenizer.cls_token_id] = 0
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.tensor([encoded["attention_mask"][span]]),
                  "token_type_ids": torch.tensor([encoded["token_type_ids"][span]])}
        with torch.no_grad():
            out = model(**inputs)
        starts, ends, scores, _ = select_starts_ends(out.start_logits.numpy(), out.end_logits.numpy(), p_mask,
                                                     inputs["attention_mask"].numpy(), top_k=12)
        encoding = encoded.encodings[span]
        for s, e, score in zip(starts, ends, scores):
            try:
                begin = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
                finish = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
            except Exception:  # noqa: BLE001 - the pipeline's own fallback for tokens without a word
                begin, finish = encoding.offsets[s][0], encoding.offsets[e][1]
            text = context[begin:finish]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": begin, "end": finish, "answer": text})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[0]


def test_answers_equal_the_question_answering_pipeline(checkpoints) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    qa = checkpoints["bert-qa"]
    model = AutoModelForQuestionAnswering.from_pretrained(qa.folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(qa.folder, local_files_only=True)
    handler, context = handler_for(qa.directory)
    pairs = [{"question": q, "context": c} for q, c in QA_CASES]
    with model_calls(handler) as calls:
        answers = run_handler_raw(handler, context, [
            (json.dumps(pairs[0]).encode(), JSON),
            (json.dumps({"inputs": pairs[1:4]}).encode(), JSON),  # one request: three questions, one of 7 windows
            (json.dumps({"inputs": pairs[4]}, ensure_ascii=False).encode(), JSON)])
    ours = [row for answer in answers for row in predictions(answer)]
    assert sum(calls) == 1 + 1 + 1 + 7 + 1  # every window ran (in sub-batches of similar length)
    for (question, text), mine in zip(QA_CASES, ours):
        theirs = reference_answer(model, tokenizer, question, text)
        assert (mine["answer"], mine["start"], mine["end"]) == (theirs["answer"], theirs["start"], theirs["end"])
        assert mine["score"] == pytest.approx(theirs["score"], abs=SCORE_TOLERANCE)
        assert text[mine["start"]:mine["end"]] == mine["answer"]


def test_questions_that_cannot_be_answered_are_refused_alone(checkpoints) -> None:
    qa = checkpoints["bert-qa"]
    handler, context = handler_for(qa.directory)
    good = {"question": "who works ?", "context": "john works"}
    answers = run_handler_raw(handler, context, [
        (json.dumps({"question": "who " * 100, "context": "john works"}).encode(), JSON),
        (json.dumps({"question": "who ?", "context": "word " * 5000}).encode(), JSON),
        (json.dumps(good).encode(), JSON),
        (json.dumps({"question": "who ?"}).encode(), JSON),
        (json.dumps({"question": "", "context": "x"}).encode(), JSON),
        (b"who works?", "text/plain"),
        (json.dumps({"inputs": [good, {"question": 1, "context": "x"}]}).encode(), JSON)])
    statuses = [status for status, _, _ in answers]
    assert statuses == [422, 413, 200, 400, 400, 415, 400]
    messages = [json.loads(body)["error"]["message"] for status, body, _ in answers if status != 200]
    assert "question 0 is 100 tokens" in messages[0]
    assert re.search(r"need \d{3} windows of 128 tokens; at most 64 per request", messages[1])
    assert predictions(answers[2])[0]["answer"] in ("john", "works", "john works")


def test_question_answering_over_token_ids_crops_to_the_request(checkpoints) -> None:
    qa = checkpoints["bert-qa"]
    handler, context = handler_for(qa.directory)
    ids = {"input_ids": [[2, 40, 3, 41, 42, 3]], "attention_mask": [[1] * 6], "token_type_ids": [[0, 0, 0, 1, 1, 1]]}
    answers = run_handler_raw(handler, context, [
        (json.dumps({"inputs": ids}).encode(), JSON),
        (json.dumps({"inputs": ids}).encode(), JSON, {"Accept": "application/x-npy"}),
        (json.dumps({"question": "who ?", "context": " ".join(["paris"] * 60)}).encode(), JSON)])
    row = predictions(answers[0])[0]
    assert 0 <= row["start_token"] <= row["end_token"] < 6
    arrays = np.load(__import__("io").BytesIO(answers[1][1]))
    assert arrays["start_logits"].shape == arrays["end_logits"].shape == (1, 6)


def test_the_mean_pooled_embedder_leaves_padding_out(checkpoints) -> None:
    """A text's vector is the same alone and batched with a longer one (padding never enters the mean)."""
    embedder = checkpoints["bert-embedder"]
    handler, context = handler_for(embedder.directory)
    alone = predictions(run_handler_raw(handler, context, [(json.dumps({"text": "john works"}).encode(), JSON)])[0])
    batched = run_handler_raw(handler, context, [(json.dumps({"text": "john works"}).encode(), JSON),
                                                 (json.dumps({"text": "paris " * 50}).encode(), JSON)])
    np.testing.assert_allclose(predictions(batched[0])[0]["embedding"], alone[0]["embedding"], atol=1e-5)


@pytest.mark.parametrize("name", ["bert-ner", "bert-qa"])
def test_the_bad_input_matrix_of_text_models(checkpoints, name: str) -> None:
    """Each bad text or question body gets its own 4xx; the good request batched beside it gets 200."""
    from servekit.measure.bad_inputs import bad_questions, bad_texts

    handler, context = handler_for(checkpoints[name].directory)
    cases = bad_questions(64) if name == "bert-qa" else bad_texts(64, handler.pipeline.signature.names)
    good = (json.dumps({"question": "who ?", "context": "john works"} if name == "bert-qa" else {"text": "john"}
                       ).encode(), JSON)
    answers = run_handler_raw(handler, context, [body for case in cases for body in ((case.body, case.content_type), good)])
    for case, bad, mate in zip(cases, answers[0::2], answers[1::2]):
        assert bad[0] == case.status, (case.name, bad[1])
        if case.status != 200:
            assert case.message in json.loads(bad[1])["error"]["message"], (case.name, bad[1])
        assert mate[0] == 200
