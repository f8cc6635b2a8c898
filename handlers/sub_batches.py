"""Length-aware batching: one TorchServe batch of mixed-length requests run as a few sub-batches of
similar length, so the model computes few padding tokens (Hugging Face text-embeddings-inference sorts
and packs by a token budget the same way)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

DEFAULT_MIN_PADDING_EFFICIENCY = 0.85


@dataclass(frozen=True)
class Item:
    """One request as batching sees it: its instances (rows) and its length on the dynamic dimensions."""

    rows: int
    length: int


@dataclass(frozen=True)
class SubBatchPolicy:
    """When to cut: below ``min_efficiency`` real/computed tokens, above ``max_tokens`` (0 = no budget), or on any
    change of length when padding would change answers (``equal_lengths_only``)."""

    min_efficiency: float = DEFAULT_MIN_PADDING_EFFICIENCY
    max_tokens: int = 0
    equal_lengths_only: bool = False


def plan_sub_batches(items: Sequence[Item], policy: SubBatchPolicy) -> list[list[int]]:
    """Indices of ``items`` grouped into sub-batches, shortest first; every group keeps its padding within the policy.

    Greedy over the items sorted by length: a group grows while adding the next (longer) item keeps
    real tokens / computed tokens at or above the bound and the computed tokens within the budget. A
    single item always forms a group of its own, even above the budget.
    """
    order = sorted(range(len(items)), key=lambda i: (items[i].length, i))
    groups: list[list[int]] = []
    rows = real = 0
    for index in order:
        item = items[index]
        if groups and rows and _fits(policy, rows, real, items[groups[-1][-1]].length, item):
            groups[-1].append(index)
        else:
            groups.append([index])
            rows = real = 0
        rows += item.rows
        real += item.rows * item.length
    return groups


def _fits(policy: SubBatchPolicy, rows: int, real: int, longest: int, item: Item) -> bool:
    if policy.equal_lengths_only and item.length != longest:
        return False
    computed = (rows + item.rows) * item.length  # sorted: the newcomer is the longest
    if policy.max_tokens and computed > policy.max_tokens:
        return False
    return (real + item.rows * item.length) >= policy.min_efficiency * computed


def padding_efficiency(items: Sequence[Item], groups: Sequence[Sequence[int]]) -> float:
    """Real tokens over computed tokens (each group padded to its longest); 1.0 means no padding at all."""
    real = sum(item.rows * item.length for item in items)
    computed = sum(sum(items[i].rows for i in group) * max(items[i].length for i in group) for group in groups)
    return real / computed if computed else 1.0
