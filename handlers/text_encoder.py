"""Text in: the texts of a batch's text requests, tokenised once per batch by the archive's
``tokenizer.json`` (the ``tokenizers`` library) into the model's named inputs.

``tokenizers`` is imported here, where it is used, so other models never need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from handlers.errors import ConfigError
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
