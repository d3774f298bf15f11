"""What the command line does while Numba compiles kernels: say so once, and keep Ctrl-C from breaking it.

The kernels are compiled on the first run on a machine (Numba then caches the machine code on disk): 15-20 s
of silence without a word. Numba announces each compile it actually does (not a load from its cache) as a
``numba:compile`` event; the first one is the sign of a cold cache, and the notice is given then, once.

Ctrl-C in the middle of a compile broke it: Python runs a signal handler between any two bytecodes, including
inside the callbacks through which LLVM hands Numba each compiled object. A KeyboardInterrupt raised there is
swallowed by ctypes ("Exception ignored on calling ctypes callback function"): the run went on to the end
with exit status 0, or failed when Numba came to cache the object it never received ("no compiled object
yet for <Library ...>"). So while the main thread holds Numba's compiler lock, SIGINT is only recorded, and
delivered, to the handler that was there before, at the next safe point: the start of a compiler pass
(plain Python in Numba's pipeline, never inside a callback) or the release of the lock. Numba writes each
cache file under a temporary name and renames it into place, so a compile stopped there leaves its cache
usable: what was written loads on the next run, the rest is compiled then.

Only the main thread is watched: signal handlers run there and nowhere else, so a compile in another thread
(the engine's thread in ``tinygpt serve``) never sees a KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from numba.core import event

_COMPILE, _LOCK, _PASS = "numba:compile", "numba:compiler_lock", "numba:run_pass"


class _Watch(event.Listener):
    def __init__(self, notice: Callable[[], None]):
        self.notice: Callable[[], None] | None = notice  # None once given
        self.depth = 0  # how deep the main thread is in Numba's (reentrant) compiler lock
        self.previous = None  # the SIGINT handler outside compiles
        self.interrupted = False

    def on_start(self, ev: event.Event) -> None:
        if ev.kind == _COMPILE and self.notice is not None:
            notice, self.notice = self.notice, None
            notice()
        if threading.current_thread() is not threading.main_thread():
            return
        if ev.kind == _LOCK:
            # Never raise here: the event comes before Numba takes the lock, whose release would then never
            # be announced.
            self.depth += 1
            if self.depth == 1:
                self.previous = signal.signal(signal.SIGINT, self._hold)
        elif ev.kind == _PASS and self.interrupted:
            self._deliver()

    def on_end(self, ev: event.Event) -> None:
        if ev.kind != _LOCK or threading.current_thread() is not threading.main_thread():
            return
        self.depth -= 1
        if self.depth == 0:
            if self.interrupted:
                self._deliver()
            else:
                self._restore()

    def _hold(self, signum, frame) -> None:
        self.interrupted = True

    def _restore(self) -> None:
        if signal.getsignal(signal.SIGINT) == self._hold:  # not yet restored by a delivery inside this compile
            previous = self.previous if self.previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)

    def _deliver(self) -> None:
        """The held Ctrl-C, to the handler it was meant for: raise_signal runs that handler before returning,
        so its KeyboardInterrupt (if it raises one) comes from here."""
        self.interrupted = False
        self._restore()
        signal.raise_signal(signal.SIGINT)


_watch: _Watch | None = None


def watch(notice: Callable[[], None]) -> None:
    """From now on in this process: call ``notice()`` at Numba's first compile (not at loads from its cache),
    and hold SIGINT during compiles in the main thread (see above). Once per process; later calls do nothing."""
    global _watch
    if _watch is not None:
        return
    _watch = _Watch(notice)
    for kind in (_COMPILE, _LOCK, _PASS):
        event.register(kind, _watch)
