"""Thread counts a run sets for its own duration and gives back afterwards.

Small per-client models train fastest and reproducibly on one thread, and an idle BLAS pool
waking up for every aggregation costs more than the aggregation itself, so a run pins torch's
intra-op threads and the BLAS pool to ``simulation.torch_threads``. These are process-wide
settings: :func:`run_threads` sets them on entry and restores the previous values on exit, so
importing fedfort or building a run changes nothing for the rest of the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["run_threads"]


@contextmanager
def run_threads(count: int, *, blas: bool = True) -> Iterator[None]:
    """torch (and, with ``blas``, the BLAS pool) use ``count`` threads inside the block."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        if blas:
            with threadpool_limits(count, user_api="blas"):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(previous)
