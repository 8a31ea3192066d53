"""One BLAS thread for the engine's own work.

The engine's heavy numerics run in numba kernels on all cores. Its BLAS calls are small: the active-set grade
(a row of dE/dtheta times a square matrix of the parameter count) at every MD or equilibration step, and
L-BFGS updates. OpenBLAS runs those on all cores too, and its threads spin while waiting; on two cores they
fight numba's threads for the CPU. Measured on 2 cores (``benchmarks/bench_md.py``: graded MD of 8-atom
cells, a level-10 potential with 306 parameters): 25-39 ms per step with BLAS on both cores, 1.6 ms with one
BLAS thread; ``mmtp train`` on 34 cells, 100 iterations: 9.5 s, then 3.5 s (docs/engine.md).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

from threadpoolctl import threadpool_limits

__all__ = ['single_blas_thread']

F = TypeVar('F', bound=Callable)


_active = threading.local()  # set while a limit is in force: nested calls (every MD step) skip the 0.2 ms scan


def single_blas_thread(func: F) -> F:
    """Run ``func`` with BLAS limited to one thread (the numba kernels keep theirs); restored afterwards.

    Only the outermost decorated call sets the limit: ``run_md`` equilibrates the moments at every step, and
    threadpoolctl's scan of the loaded libraries (0.2 ms) would otherwise be a tenth of a step."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if getattr(_active, 'on', False):
            return func(*args, **kwargs)
        _active.on = True
        try:
            with threadpool_limits(limits=1, user_api='blas'):
                return func(*args, **kwargs)
        finally:
            _active.on = False

    return wrapper  # type: ignore[return-value]
