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
        self.signature = signature
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()  # the pipeline pads each batch to its longest
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, requests: Sequence[list[str]]) -> list[dict[str, np.ndarray]]:
        """Every request's texts in one ``encode_batch`` call; each request's arrays ``[n, its longest]``."""
        encodings = self.tokenizer.encode_batch([text for texts in requests for text in texts])
        out, start = [], 0
        for texts in requests:
            mine = encodings[start:start + len(texts)]
            start += len(texts)
            longest = max(1, max(len(e.ids) for e in mine))
            arrays = {}
            for spec in self.signature.inputs:
                array = np.full((len(mine), longest), spec.pad_value, dtype=spec.dtype)
                for row, encoding in enumerate(mine):
                    values = getattr(encoding, ENCODING_FIELDS[spec.name])
                    array[row, :len(values)] = values
                arrays[spec.name] = array
            out.append(arrays)
        return out
