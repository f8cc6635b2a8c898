"""Token classification (NER): a label per token of each request's own text, never the batch's padding, and
entities with character offsets into that text, as transformers' token-classification pipeline gives them
(``aggregation``: ``none`` = every token, ``simple`` = adjacent tokens of one tag joined; ``O`` left out).

A request that sent token ids instead of text gets each token's label (no text, so no offsets).
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from handlers.encode import encode_npy, label_name
from handlers.text_encoder import Tokens

NPY_CONTENT_TYPE = "application/x-npy"
OUTSIDE = ("O",)  # labels never reported (transformers' default ignore_labels)
MASK_INPUT = "attention_mask"
SCORE_DIGITS = 6


def token_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the label axis (last), in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def own_lengths(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Each instance's own token count: its attention mask's ones, else the request's length."""
    if MASK_INPUT in arrays:
        return np.asarray(arrays[MASK_INPUT]).sum(axis=1).astype(int)
    first = next(iter(arrays.values()))
    return np.full(first.shape[0], first.shape[1], int)


def _tag(label: str) -> tuple[str, str]:
    """``B-PER`` -> (B, PER); a label without a B-/I- prefix continues like an I- one (as transformers reads it)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def group_simple(tokens: list[dict], decode: Any) -> list[dict]:
    """Adjacent tokens of one tag become one entity (a B- starts a new one): transformers' ``group_entities``."""
    groups: list[list[dict]] = []
    for token in tokens:
        bi, tag = _tag(token["entity"])
        if groups and bi != "B" and _tag(groups[-1][-1]["entity"])[1] == tag:
            groups[-1].append(token)
        else:
            groups.append([token])
    return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
             "score": round(float(np.mean([t["score"] for t in group])), SCORE_DIGITS),
             "word": decode([t["word"] for t in group]) if decode is not None else " ".join(t["word"] for t in group),
             "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


class TokenClassification:
    """The one output ``[n, length, labels]`` holds a logit per token and label."""

    per_request = True  # answers need each request's own tokens and text (the pipeline hands them over)

    def __init__(self, labels: Sequence[str], aggregation: str = "simple", output_name: str = "logits") -> None:
        self.labels = list(labels)
        self.aggregation = aggregation
        self.v2_outputs = ("probabilities",)
        self.output_name = output_name

    def text_entities(self, logits: np.ndarray, encoding: Any, text: str, tokens: Tokens) -> list[dict]:
        """One text's entities (every token for ``none``) with character offsets into ``text``."""
        probabilities = token_probabilities(logits[:len(encoding.ids)])
        found = []
        for index, (special, token, (start, end), token_id) in enumerate(zip(
                encoding.special_tokens_mask, encoding.tokens, encoding.offsets, encoding.ids)):
            if special:
                continue
            best = int(probabilities[index].argmax())
            # an unknown token shows the text it stands for, as transformers does
            word = text[start:end] if tokens.unk_id is not None and token_id == tokens.unk_id else token
            found.append({"entity": label_name(self.labels, best), "score": round(float(probabilities[index, best]),
                                                                                  SCORE_DIGITS),
                          "index": index, "word": word, "start": start, "end": end})
        if self.aggregation == "simple":
            return [e for e in group_simple(found, tokens.decode) if e["entity_group"] not in OUTSIDE]
        return [e for e in found if e["entity"] not in OUTSIDE]

    def request_rows(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray], tokens: Tokens | None
                     ) -> list[str]:
        """One ``{"entities": [...]}`` per text; ``{"tokens": [...]}`` per instance of a token-id request."""
        logits = outputs[0]
        if tokens is not None:
            return [json.dumps({"entities": self.text_entities(logits[row], encoding, tokens.texts[row], tokens)},
                               ensure_ascii=False, separators=(",", ":"))
                    for row, encoding in enumerate(tokens.encodings)]
        rows = []
        for row, length in zip(logits, own_lengths(arrays)):
            probabilities = token_probabilities(row[:length])
            best = probabilities.argmax(axis=-1)
            rows.append(json.dumps({"tokens": [
                {"index": i, "entity": label_name(self.labels, int(c)), "score": round(float(probabilities[i, c]), SCORE_DIGITS)}
                for i, c in enumerate(best)]}, separators=(",", ":")))
        return rows

    def probabilities(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 ``[n, the request's length, labels]``; a shorter instance's padding positions are zero."""
        length = next(iter(arrays.values())).shape[1]  # the request's own longest, not the batch's
        probabilities = token_probabilities(outputs[0][:, :length]).astype(np.float32)
        for row, length in enumerate(own_lengths(arrays)):
            probabilities[row, length:] = 0.0
        return probabilities

    def request_binary(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
        """Token probabilities as float32 .npy ``[n, length, labels]``."""
        return encode_npy(self.probabilities(outputs, arrays)), NPY_CONTENT_TYPE

    def request_v2(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """``probabilities`` FP32 ``[n, length, labels]``."""
        probabilities = self.probabilities(outputs, arrays)
        return {"probabilities": ("FP32", list(probabilities.shape), probabilities)}

