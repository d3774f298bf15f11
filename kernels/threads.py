"""Thread count of the Numba kernels, and the checks every kernel wrapper runs before launching one.

Numba's own ``numba.set_num_threads`` is *thread-local*: a new Python thread starts at the pool default
(``NUMBA_NUM_THREADS``, fixed when Numba is imported). So our setting lives here, process-wide, and each
kernel wrapper calls :func:`apply_num_threads` right before launching, which copies it into the calling
thread's Numba setting when they differ (a check of 1-2 microseconds; the ``*_unchecked`` kernels leave
it to their caller: the model applies it once per forward pass). Kernels therefore honour
:func:`set_num_threads` in every Python thread that calls them. Calling ``numba.set_num_threads`` directly
has no lasting effect on our kernels: the next kernel call in that thread restores our count.

Default count: the ``TINYGPT_NUM_THREADS`` environment variable if set, else :func:`available_cores`
(capped by Numba's pool size).

Concurrent kernel calls from several Python threads need a thread-safe Numba threading layer (omp or tbb;
workqueue aborts the process). Unless the user chose one with ``NUMBA_THREADING_LAYER``, we ask Numba for a
thread-safe layer here, so a machine without one fails at the first kernel call, with an error that says
what to install, instead of crashing later under concurrency.
"""

import operator
import os

import numba
import numpy as np

ENV_VAR = "TINYGPT_NUM_THREADS"

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

_num_threads: int | None = None  # resolved lazily so a bad environment variable fails at first use, not import


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


def apply_num_threads() -> None:
    """Make the calling Python thread launch Numba kernels with our thread count."""
    n = get_num_threads()
    if _numba_thread_count() != n:
        numba.set_num_threads(n)


def _numba_thread_count() -> int:
    """``numba.get_num_threads()``. Its first call starts Numba's thread pool, which fails where neither
    thread-safe threading layer can be loaded (no libgomp, no TBB: a slim container image, say); that
    failure is reported as what to install rather than as Numba's traceback."""
    try:
        return numba.get_num_threads()
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


# --- argument checks shared by the kernel wrappers -------------------------------------------------------


def check_f32(name: str, a: object, ndim: int | None = None) -> np.ndarray:
    """Return ``a`` if it is a C-contiguous float32 ndarray (with ``ndim`` dims if given), else raise ValueError."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def check_shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``a.shape == shape``."""
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def output_array(out: object, shape: tuple[int, ...], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """A fresh float32 array of ``shape`` if ``out`` is None, else ``out`` after checking it is a writable
    C-contiguous float32 array of that shape that overlaps none of ``inputs`` (name -> array)."""
    if out is None:
        return np.empty(shape, np.float32)
    check_f32("out", out)
    check_shape("out", out, shape)
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    for name, a in inputs.items():
        if np.may_share_memory(out, a):
            raise ValueError(f"out must not overlap {name}")
    return out
