"""Thread count of the Numba kernels: one process-wide setting, applied by every kernel call.

Numba's own ``numba.set_num_threads`` is *thread-local*: a new Python thread starts at the pool default
(``NUMBA_NUM_THREADS``, fixed when Numba is imported). So our setting lives here, process-wide, and every
kernel function starts with :func:`apply_num_threads`, which returns the count and copies it into the calling
Python thread's Numba setting when that thread last applied a different one (it remembers what it applied in
a ``threading.local``: Numba's own getter costs ten times as much). Kernels therefore honour
:func:`set_num_threads` in every Python thread that calls them. Set the count here, not with
``numba.set_num_threads``: a direct call is not seen, and holds in its thread until our setting changes.

Default count: the ``TINYGPT_NUM_THREADS`` environment variable if set, else :func:`available_cores`
(capped by Numba's pool size, ``NUMBA_NUM_THREADS``, which is checked here before Numba reads it).

Concurrent kernel calls from several Python threads need a thread-safe Numba threading layer (omp or tbb;
workqueue aborts the process). Unless the user chose one with ``NUMBA_THREADING_LAYER``, we ask Numba for a
thread-safe layer here, so a machine without one fails at the first kernel call, with an error that says
what to install, instead of crashing later under concurrency.
"""

import os
import threading


def _check_numba_pool_size() -> None:
    """Numba refuses ``NUMBA_NUM_THREADS`` below 1 at import with a message that does not name the variable;
    say which variable and what it must be instead. (Runs before ``import numba``: ``kernels/__init__.py``
    imports this module first.)"""
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    try:
        count = int(value)
    except ValueError:
        return  # unset, or not an integer: Numba warns naming the variable and keeps its default
    if count < 1:
        raise ValueError(f"NUMBA_NUM_THREADS must be a thread count of at least 1 (it sizes Numba's thread "
                         f"pool), got {value!r}: unset it or set it to a positive number")


_check_numba_pool_size()

import operator  # noqa: E402  (below: the check above must run before Numba is imported)

import numba  # noqa: E402

ENV_VAR = "TINYGPT_NUM_THREADS"

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

_num_threads: int | None = None  # resolved lazily so a bad environment variable fails at first use, not import
_applied = threading.local()  # .count: what this Python thread last passed to numba.set_num_threads


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports it, else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def max_threads() -> int:
    """Largest valid thread count: the available cores, capped by Numba's thread-pool size."""
    return min(available_cores(), numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 <= n <= :func:`max_threads`) in every kernel launched from now on, in any thread."""
    global _num_threads
    _num_threads = _validated_count(n, "n")


def get_num_threads() -> int:
    """The thread count our kernels run with."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_count()
    return _num_threads


def apply_num_threads() -> int:
    """Our thread count, made the calling Python thread's Numba setting if it is not already: every kernel
    function calls this before launching, and kernels that give each thread a slab of work take the count."""
    n = _num_threads if _num_threads is not None else get_num_threads()
    if getattr(_applied, "count", None) != n:
        _set_numba_count(n)
        _applied.count = n
    return n


def _set_numba_count(n: int) -> None:
    """``numba.set_num_threads(n)``. Its first call starts Numba's thread pool, which fails where neither
    thread-safe threading layer can be loaded (no libgomp, no TBB: a slim container image, say); that
    failure is reported as what to install rather than as Numba's traceback."""
    try:
        numba.set_num_threads(n)
    except ValueError as error:
        if "threading layer" not in str(error):
            raise
        raise RuntimeError(
            "tinygpt's kernels need a thread-safe Numba threading layer, and none could be loaded: install "
            "the OpenMP runtime (libgomp, e.g. `apt install libgomp1`) or Intel TBB (`pip install tbb`). "
            f"Numba said: {' '.join(str(error).split())}"
        ) from None


def _default_count() -> int:
    value = os.environ.get(ENV_VAR)
    if value is None:
        return max_threads()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be an integer thread count, got {value!r}") from None
    return _validated_count(n, ENV_VAR)


def _validated_count(n: object, name: str) -> int:
    if isinstance(n, bool):
        raise ValueError(f"{name} must be an integer thread count, got {n!r}")
    try:
        count = operator.index(n)
    except TypeError:
        raise ValueError(f"{name} must be an integer thread count, got {n!r}") from None
    limit = max_threads()
    if not 1 <= count <= limit:
        raise ValueError(
            f"{name} must be between 1 and {limit} (available cores, capped by NUMBA_NUM_THREADS), got {count}"
        )
    return count
