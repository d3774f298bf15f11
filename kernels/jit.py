"""How every kernel is compiled: ``numba.njit`` with the machine code cached on disk (``cache=True``).

Numba keeps the cache next to the source (``__pycache__``), else in ``NUMBA_CACHE_DIR`` or the user's cache
directory. When none of them can be written (a read-only install for a user without a home directory,
say), ``njit(cache=True)`` refuses to decorate at import; the kernels are then compiled in memory on every
run instead (correct, only slower to start), and one warning says how to get the cache back.

For whoever edits the kernels: Numba checks a cached kernel against its own source file only. A kernel that
calls a function from another file (quantized.py calling intdot.py, say) keeps its cached copy of the old
callee after that file changes; delete the caches (``find . -name '*.nb[ic]' -delete``) after such an edit.
The same holds for a kernel built by a factory in another file (``tiles.panel_gemm``): its cache sits with
the factory's file and does not see edits to the step it was built around. An installed package is replaced
whole, so users never meet this.

Loading from the cache skips what Numba does before every load: ``refresh`` the CPU target, which imports and
registers the typing and lowering of all it can compile (lists, dicts, sets, random, polynomials, jitclasses...)
and, at a process's first load, costs about as long as importing Numba. Code loaded from the cache is already
machine code: rebuilding it needs the target's code generator and Numba's runtime (``rtsys.initialize``), not
those registries. A kernel missing from the cache is compiled as before, and Numba's compiler refreshes the
target then (``compiler.compile_extra``). ``benchmarks/startup.py`` measures what this saves.
"""

import warnings

from numba import njit
from numba.core.caching import FunctionCache
from numba.core.runtime import rtsys
from numba.extending import register_jitable

_warned = False


def jit(**options):
    """``numba.njit(cache=True, **options)`` with the cache loaded as above, or without a cache when no cache
    directory is writable."""

    def decorate(function):
        global _warned
        dispatcher = njit(**options)(function)
        if not hasattr(dispatcher, "_cache"):  # NUMBA_DISABLE_JIT: the plain Python function
            return dispatcher
        try:
            # What ``cache=True`` does (``enable_caching``), with the class above: made once, since making one
            # probes the cache directory by writing a file there.
            dispatcher._cache = _CacheLoadedWithoutRegistries(function)
        except RuntimeError as error:  # Numba: "cannot cache function ...: no locator available"
            if not _warned:
                warnings.warn(f"tinygpt: {error}; kernels will be compiled on every run (set NUMBA_CACHE_DIR "
                              "to a writable directory to keep them)", RuntimeWarning, stacklevel=2)
                _warned = True
        return dispatcher

    return decorate


class _CacheLoadedWithoutRegistries(FunctionCache):
    """Numba's disk cache of a function, loaded without refreshing the target first (see the module docstring)."""

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # idempotent, as in the refresh it replaces
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def jit_step(**options):
    """A function compiled into each kernel that calls it, never on its own (``register_jitable``): for the
    steps a kernel factory closes over (``tiles.panel_gemm``'s packing step). Numba's disk cache keys a
    closure by a hash of what it closes over: a plain function hashes by its name, the same in every process,
    while a ``jit`` dispatcher pickles differently in each, so a kernel closing over one would be compiled
    again on every run."""
    return register_jitable(**options)
