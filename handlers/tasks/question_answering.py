"""Extractive question answering: the answer's text, its character span in the request's own context and
its score, chosen as transformers' question-answering pipeline chooses it (top 1): per window of the
context, softmax over the context tokens (and CLS), p(start) x p(end) over spans of at most
``max_answer_length`` tokens, the best candidates widened to whole words, equal answers (ignoring case)
summed across candidates and windows, the highest wins.

A request that sent token ids instead of text gets the best token span (no text, so no characters).
"""
from __future__ import annotations

import io
import json
from typing import Any, Sequence

import numpy as np

from handlers.text_encoder import Tokens

NPZ_CONTENT_TYPE = "application/x-npz"
NO_ANSWER_LOGIT = -10000.0  # what transformers puts on tokens outside the context before the softmax
WORD_CANDIDATES = 12  # transformers: top_k * 2 + 10 candidates per window when answers widen to words
CONTEXT_SEQUENCE = 1  # the question comes first, the context second
SCORE_DIGITS = 6
MASK_INPUT = "attention_mask"


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def span_candidates(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, max_answer_length: int,
                    count: int) -> list[tuple[int, int, float]]:
    """The ``count`` best (start, end, p(start) x p(end)) token spans with start <= end < start + max_answer_length,
    both in ``allowed`` (a 0/1 mask over the window's own tokens); transformers' select_starts_ends + decode_spans."""
    start = _softmax(np.where(allowed == 0, NO_ANSWER_LOGIT, start_logits))
    end = _softmax(np.where(allowed == 0, NO_ANSWER_LOGIT, end_logits))
    start[0] = end[0] = 0.0  # the first token (CLS) takes part in the softmax, never in an answer
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_length - 1)
    flat = scores.ravel()
    if len(flat) <= count:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, count)[:count]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, scores.shape)
    # transformers tests membership against np.nonzero of a [1, n] mask, whose row indices let 0 through
    usable = np.concatenate([[0], np.flatnonzero(allowed)])
    keep = np.isin(starts, usable) & np.isin(ends, usable)
    return [(int(s), int(e), float(scores[s, e])) for s, e in zip(starts[keep], ends[keep])]


def char_span(encoding: Any, start: int, end: int) -> tuple[int, int]:
    """Token span -> character span in the context, widened to whole words (transformers' align_to_words)."""
    start_word, end_word = encoding.token_to_word(start), encoding.token_to_word(end)
    if start_word is not None and end_word is not None:
        first = encoding.word_to_chars(start_word, CONTEXT_SEQUENCE)
        last = encoding.word_to_chars(end_word, CONTEXT_SEQUENCE)
        if first is not None and last is not None:
            return first[0], last[1]
    return encoding.offsets[start][0], encoding.offsets[end][1]


def best_answer(start_logits: np.ndarray, end_logits: np.ndarray, windows: Sequence[Any], context: str,
                max_answer_length: int) -> dict:
    """The answer over every window of one (question, context); ``{"answer": None, ...}`` when none exists."""
    answers: list[dict] = []
    for row, encoding in enumerate(windows):
        length = len(encoding.ids)
        allowed = np.array([s == CONTEXT_SEQUENCE for s in encoding.sequence_ids], np.int64)
        if length and encoding.special_tokens_mask[0]:
            allowed[0] = 1  # a leading CLS scores "no answer" in transformers' softmax (p_mask unmasks cls_token)
        for s, e, score in span_candidates(np.asarray(start_logits[row][:length], np.float64),
                                           np.asarray(end_logits[row][:length], np.float64), allowed,
                                           max_answer_length, WORD_CANDIDATES):
            begin, finish = char_span(encoding, s, e)
            text = context[begin:finish]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score
            else:
                answers.append({"answer": text, "start": begin, "end": finish, "score": score})
    if not answers:
        return {"answer": None, "start": None, "end": None, "score": 0.0}
    best = max(answers, key=lambda a: a["score"])
    return {**best, "score": round(best["score"], SCORE_DIGITS)}


class QuestionAnswering:
    """Two outputs ``[n, length]``: start and end logits per token."""

    per_request = True  # answers need each request's own windows and contexts (the pipeline hands them over)

    def __init__(self, output_names: Sequence[str], max_answer_length: int = 15) -> None:
        self.names = tuple(output_names)
        self.max_answer_length = max_answer_length
        self.v2_outputs = self.names

    def request_rows(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray], tokens: Tokens | None
                     ) -> list[str]:
        """One ``{"answer", "start", "end", "score"}`` per (question, context); per instance of a token-id request,
        the best ``{"start_token", "end_token", "score"}``."""
        start_logits, end_logits = outputs[0], outputs[1]
        if tokens is not None:
            rows = []
            for pair, context in enumerate(tokens.texts):
                mine = [row for row, owner in enumerate(tokens.owners) if owner == pair]
                answer = best_answer(start_logits[mine], end_logits[mine], [tokens.encodings[r] for r in mine],
                                     context, self.max_answer_length)
                rows.append(json.dumps(answer, ensure_ascii=False, separators=(",", ":")))
            return rows
        lengths = (np.asarray(arrays[MASK_INPUT]).sum(axis=1) if MASK_INPUT in arrays
                   else np.full(len(start_logits), next(iter(arrays.values())).shape[1]))
        rows = []
        for row, length in enumerate(lengths.astype(int)):
            allowed = np.ones(length, np.int64)
            found = span_candidates(np.asarray(start_logits[row][:length], np.float64),
                                    np.asarray(end_logits[row][:length], np.float64), allowed,
                                    self.max_answer_length, 1)
            s, e, score = found[0] if found else (0, 0, 0.0)
            rows.append(json.dumps({"start_token": s, "end_token": e, "score": round(score, SCORE_DIGITS)}))
        return rows

    def _cropped(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        length = next(iter(arrays.values())).shape[1]  # the request's own longest, not the batch's
        return {name: np.asarray(output[:, :length], np.float32) for name, output in zip(self.names, outputs)}

    def request_binary(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
        """start and end logits as .npz ``[n, length]`` each (one row per window)."""
        buffer = io.BytesIO()
        np.savez(buffer, **self._cropped(outputs, arrays))
        return buffer.getvalue(), NPZ_CONTENT_TYPE

    def request_v2(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """start and end logits, FP32 ``[n, length]``."""
        return {name: ("FP32", list(value.shape), value) for name, value in self._cropped(outputs, arrays).items()}
