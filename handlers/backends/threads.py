"""torch's intra-op thread count, scoped to one batch instead of set for the whole process."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then give the caller back its own count.

    ``torch.set_num_threads`` is process-wide. Set once at load, it leaked into whatever the process
    did next (in-process tools, tests that train afterwards and got a different model). Per batch it
    costs about a microsecond, and nothing when the count already matches. ``None`` leaves it alone.
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
