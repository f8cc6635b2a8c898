"""Keep every field of a multipart form, in order, even when several share one name.

TorchServe's worker turns each request's parameters into a dict (``Service.retrieve_data_for_inference``:
``model_in.update({name: value})``), so ``curl -F file=@a.png -F file=@b.png -F file=@c.jpg`` reached the
handler as one field, the last: three images sent, one answered. That function is the only place where the
request's raw parameters are visible, so the handler wraps it once per worker: a repeated name keeps its
first field under its own name and the others as ``name#2``, ``name#3``..., in the order they were sent.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

REPEAT_MARK = "#"
_WRAPPED = "_keeps_repeated_fields"


def keep_repeated_fields() -> None:
    """Wrap ``ts.service.Service.retrieve_data_for_inference`` (idempotent)."""
    from ts.service import Service

    original = Service.__dict__["retrieve_data_for_inference"]
    function = original.__func__ if isinstance(original, staticmethod) else original
    if getattr(function, _WRAPPED, False):
        return
    Service.retrieve_data_for_inference = staticmethod(with_repeated_fields(function))


def with_repeated_fields(retrieve: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``retrieve`` whose rows hold every parameter of a request, repeated names renamed in order."""
    def retrieve_all(batch: Any) -> Any:
        result = retrieve(batch)
        if not isinstance(result, tuple) or len(result) != 3 or not isinstance(batch, list):
            return result  # another TorchServe: leave its rows alone
        headers, rows, ids = result
        for idx, request in enumerate(batch):
            parameters = request.get("parameters") or []
            names = [parameter["name"] for parameter in parameters]
            if len(set(names)) == len(names):
                continue
            seen: Counter = Counter()
            row: dict = {}
            for parameter in parameters:
                seen[parameter["name"]] += 1
                key = repeated_name(parameter["name"], seen[parameter["name"]])
                row[key] = parameter["value"]
                headers[idx].get_request_properties()[key] = {"content-type": parameter["contentType"]}
            rows[idx] = row
        return headers, rows, ids

    setattr(retrieve_all, _WRAPPED, True)
    return retrieve_all


def repeated_name(name: str, occurrence: int) -> str:
    """``file`` for the first field of that name, ``file#2`` for the second, and so on."""
    return name if occurrence == 1 else f"{name}{REPEAT_MARK}{occurrence}"
