"""Decode JSON arrays: ``{"data": x}`` (or the input's name) for one input, ``{"inputs": {name: x}}`` for any."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from handlers.errors import InvalidInput, MalformedRequest, quoted

JSON_DATA_KEY = "data"
JSON_INPUTS_KEY = "inputs"  # {"inputs": {"input_ids": [...], "attention_mask": [...]}}


def arrays_from_json(document: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"data": x}`` (or ``{"<input name>": x}``) for one input; ``{"inputs": {name: x, ...}}`` for any."""
    if not isinstance(document, dict):
        raise MalformedRequest(f"JSON body must be an object like {{\"{JSON_DATA_KEY}\": [...]}}; got {type(document).__name__}")
    if set(document) == {JSON_INPUTS_KEY} and isinstance(document[JSON_INPUTS_KEY], dict):
        named = document[JSON_INPUTS_KEY]
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise MalformedRequest(f"JSON 'inputs' has {quoted(unknown)}; this model takes {list(names)}")
        return {name: _json_array(values, name, name) for name, values in named.items()}
    if len(names) != 1:
        raise MalformedRequest(f"this model takes inputs {list(names)}: send JSON "
                               f"{{\"{JSON_INPUTS_KEY}\": {{\"{names[0]}\": [...], ...}}}}")
    keys = set(document)
    accepted = {JSON_DATA_KEY, names[0]}
    if len(keys) != 1 or not keys <= accepted:
        raise MalformedRequest(
            f"JSON body must have exactly one key, '{JSON_DATA_KEY}' (or '{names[0]}'); got {quoted(sorted(keys))}"
        )
    return {names[0]: _json_array(document[keys.pop()], JSON_DATA_KEY, names[0])}


def _json_array(values: Any, key: str, input_name: str) -> np.ndarray:
    if not isinstance(values, list):
        raise MalformedRequest(f"'{key}' must be a (nested) list of numbers; got {type(values).__name__}")
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError, RecursionError) as err:  # ragged, 10**400 among floats, nested too deep
        raise MalformedRequest(f"'{key}' is not a rectangular array of numbers: {quoted(str(err), 200)}"
                               ) from None
    if array.dtype == object:
        raise MalformedRequest(f"'{key}' is ragged or holds non-numbers (null, objects); expected a rectangular array of numbers")
    if array.dtype.kind != "b" and holds_bool(values):  # numpy reads [1.5, true] as [1.5, 1.0]
        raise InvalidInput(f"input '{input_name}' holds booleans (JSON true/false); expected numbers")
    return array


def holds_bool(values: list) -> bool:
    """A rectangular nested list (as JSON gives it) with a true/false anywhere: numpy would read it as
    1/0 among numbers, but a boolean is not a number the model was trained on. One pass per row."""
    if not values:
        return False
    if isinstance(values[0], list):
        return any(holds_bool(row) for row in values)
    return bool in set(map(type, values))
