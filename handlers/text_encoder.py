"""Text in: the texts of a batch's text requests, tokenised once per batch by the archive's
``tokenizer.json`` (the ``tokenizers`` library) into the model's named inputs.

``tokenizers`` is imported here, where it is used, so other models never need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from handlers.config import QUESTION_ANSWERING, TOKEN_CLASSIFICATION, HandlerConfig
from handlers.errors import ConfigError, InvalidInput, RequestError, TooManyInstances
from handlers.signature import Range, Signature

# Which part of a tokenizers Encoding feeds which model input.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
# Texts are cut to max_length x this many characters before tokenising: a token of English text averages
# about 4 characters, so only text past the declared length is dropped, while 5 MB of text/plain no longer
# costs seconds of tokenising (it did: 8 s for 5 MB, for 128 tokens kept).
CHARS_PER_TOKEN = 32


class TextEncoder:
    """A tokenizer.json that turns texts into the signature's inputs, truncated at the declared maximum."""

    def __init__(self, path: Path, signature: Signature) -> None:
        from tokenizers import Tokenizer

        unknown = [name for name in signature.names if name not in ENCODING_FIELDS]
        if unknown:
            raise ConfigError(f"a tokenizer produces {sorted(ENCODING_FIELDS)}; inputs {unknown} cannot come from text")
        ranges = [d for spec in signature.inputs for d in spec.shape if isinstance(d, Range)]
        if len(ranges) != len(signature.inputs) or any(len(spec.shape) != 1 for spec in signature.inputs):
            raise ConfigError("text in needs every input to be one dynamic sequence dimension, e.g. [1..128]")
        self.max_length = min(r.high for r in ranges)
        self.max_chars = self.max_length * CHARS_PER_TOKEN  # per text, cut before tokenising
        self.signature = signature
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()  # the pipeline pads each batch to its longest
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, requests: Sequence[list[str]]) -> list[dict[str, np.ndarray]]:
        """Every request's texts in one ``encode_batch`` call; each request's arrays ``[n, its longest]``."""
        encodings = self.tokenizer.encode_batch([text for texts in requests for text in texts])
        out, start = [], 0
        for texts in requests:
            out.append(self._arrays(encodings[start:start + len(texts)]))
            start += len(texts)
        return out

    def encode_each(self, requests: Sequence[list[str]]) -> list[dict[str, np.ndarray] | Exception]:
        """Like ``encode``, one request at a time: a request the tokenizer refuses gets its exception, the
        others their arrays (the fallback when the batch's one call fails)."""
        out: list[dict[str, np.ndarray] | Exception] = []
        for texts in requests:
            try:
                out.append(self._arrays(self.tokenizer.encode_batch(texts)))
            except Exception as err:  # noqa: BLE001 - the tokenizer's own error becomes that request's 400
                out.append(err)
        return out

    def _arrays(self, encodings: Sequence) -> dict[str, np.ndarray]:
        longest = max(1, max(len(e.ids) for e in encodings))
        arrays = {}
        for spec in self.signature.inputs:
            array = np.full((len(encodings), longest), spec.pad_value, dtype=spec.dtype)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, ENCODING_FIELDS[spec.name])
                array[row, :len(values)] = values
            arrays[spec.name] = array
        return arrays


@dataclass(frozen=True)
class Tokens:
    """The tokenizer's view of one request, for tasks that answer about the text itself: one Encoding per
    instance row (its tokens, offsets into its text, special-token mask, word and sequence ids); for
    question answering one row per window of a context, ``owners`` saying which pair each row is from."""

    texts: list[str]  # token classification: the texts; question answering: the contexts
    encodings: list[Any]
    owners: list[int]
    unk_id: int | None = None  # the unknown token's id: it shows the text it stands for
    decode: Any = None  # tokens -> text (the tokenizer's decoder), for entities of several tokens


class PairsTooLong(InvalidInput):
    """A question leaves no room for its context within the model's length."""


class TooManyWindows(TooManyInstances):
    """A context needs more windows than one request may hold."""


class TextRequestEncoder(TextEncoder):
    """A TextEncoder that also keeps each request's Encodings (token classification) and splits long contexts
    into overlapping windows (question answering, as transformers' pipeline does with ``doc_stride``)."""

    def __init__(self, path: Path, signature: Signature, window: int | None = None, stride: int = 0) -> None:
        super().__init__(path, signature)
        self.window = min(window or self.max_length, self.max_length)
        self.stride = stride
        if self.stride >= self.window:
            raise ConfigError(f"doc_stride {stride} must be less than the window of {self.window} tokens")
        processor = self.tokenizer.post_processor
        self.pair_specials = processor.num_special_tokens_to_add(True) if processor is not None else 0
        unknown = getattr(self.tokenizer.model, "unk_token", None)
        self.unk_id = self.tokenizer.token_to_id(unknown) if isinstance(unknown, str) else None
        decoder = self.tokenizer.decoder
        self.decode = decoder.decode if decoder is not None else None

    def encode(self, requests: Sequence[list[str]]) -> list[dict[str, np.ndarray]]:
        """As TextEncoder's (single texts, truncated at the declared maximum)."""
        return [arrays for arrays, _ in self.encode_texts(requests)]

    def encode_texts(self, requests: Sequence[list[str]]) -> list[tuple[dict[str, np.ndarray], Tokens]]:
        """Like ``encode``, with each request's Encodings."""
        self.tokenizer.enable_truncation(self.max_length)
        encodings = self.tokenizer.encode_batch([text for texts in requests for text in texts])
        out, start = [], 0
        for texts in requests:
            mine = encodings[start:start + len(texts)]
            start += len(texts)
            out.append((self._arrays(mine), Tokens(list(texts), mine, list(range(len(texts))), self.unk_id, self.decode)))
        return out

    def encode_pairs(self, requests: Sequence[list[tuple[str, str]]], max_rows: int
                     ) -> list[tuple[dict[str, np.ndarray], Tokens] | RequestError]:
        """Each request's (question, context) pairs as windows of at most ``window`` tokens overlapping by
        ``stride``; a request whose question is too long, or whose contexts need more than ``max_rows``
        windows, gets its error instead."""
        pairs = [pair for request in requests for pair in request]
        self.tokenizer.no_truncation()
        questions = self.tokenizer.encode_batch([q for q, _ in pairs], add_special_tokens=False)
        room = [self.window - len(q.ids) - self.pair_specials for q in questions]
        fits = [r > self.stride for r in room]
        # tokenizers panics (not raises) when the context has no room beyond the overlap: never ask it to
        self.tokenizer.enable_truncation(self.window, stride=self.stride, strategy="only_second")
        encoded = iter(self.tokenizer.encode_batch([p for p, ok in zip(pairs, fits) if ok]))
        out: list[tuple[dict[str, np.ndarray], Tokens] | RequestError] = []
        start = 0
        for request in requests:
            mine = range(start, start + len(request))
            start += len(request)
            windows, owners, error = [], [], None
            for number, index in enumerate(mine):
                if not fits[index]:
                    error = error or PairsTooLong(
                        f"question {number} is {len(questions[index].ids)} tokens; with the context in windows of "
                        f"{self.window} tokens overlapping by {self.stride}, at most "
                        f"{self.window - self.pair_specials - self.stride - 1} fit")
                    continue
                first = next(encoded)
                for window in [first, *first.overflowing]:
                    windows.append(window)
                    owners.append(number)
            if error is None and len(windows) > max_rows:
                error = TooManyWindows(f"the contexts need {len(windows)} windows of {self.window} tokens; at most "
                                       f"{max_rows} per request (shorten the contexts or send fewer questions)")
            out.append(error if error is not None else
                       (self._arrays(windows), Tokens([c for _, c in request], windows, owners, self.unk_id, self.decode)))
        return out


def make_text_encoder(path: Path, config: HandlerConfig) -> TextEncoder:
    """The encoder a model's task needs: token and span tasks keep each request's tokens (and QA its windows)."""
    if config.task == TOKEN_CLASSIFICATION:
        return TextRequestEncoder(path, config.signature)
    if config.task == QUESTION_ANSWERING:
        return TextRequestEncoder(path, config.signature, config.window, config.doc_stride)
    return TextEncoder(path, config.signature)
