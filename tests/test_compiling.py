"""While Numba compiles: the command line's one notice of a cold cache, and Ctrl-C held until a safe point.

The command-line test compiles kernels from an empty Numba cache (tens of seconds on two cores): one such run,
interrupted at several points, then completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tinygpt.cli import COMPILING

COMMAND = [sys.executable, "-m", "tinygpt.cli"]

# A fresh process, whose first compile gets a SIGINT from a listener of its third pass. Prints, in order: the
# notice; where the KeyboardInterrupt came out: at a pass start (the watch's listener of the third, which runs
# after that one), not within the listener where the signal arrived, whose loop ran on; whether the usual
# handler is back; and the result of compiling and calling the function afterwards.
HELD_UNTIL_THE_NEXT_PASS = textwrap.dedent("""
    import os, signal
    from numba import njit
    from numba.core import event
    from tinygpt.compiling import watch

    class InterruptAtPass(event.Listener):
        def __init__(self):
            self.passes = 0
            self.ran_on = False
        def on_start(self, ev):
            self.passes += 1
            if self.passes == 3:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # bytecodes: a handler that raised would have raised here
                    pass
                self.ran_on = True
        def on_end(self, ev):
            pass

    passes = InterruptAtPass()
    event.register("numba:run_pass", passes)  # before the watch: it counts a pass before the watch sees it
    watch(lambda: print("notice"))

    @njit
    def add_one(x):
        return x + 1

    try:
        add_one(1)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted at pass", passes.passes, "after the loop" if passes.ran_on else "in the loop")
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    passes.passes = 100  # no more signals
    print(add_one(1))
""")


def test_a_sigint_during_a_compile_comes_out_at_the_next_pass_and_numba_stays_usable():
    result = subprocess.run([sys.executable, "-c", HELD_UNTIL_THE_NEXT_PASS], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["notice", "interrupted at pass 3 after the loop", "True", "2"]
    assert result.stderr == ""


def compiled_entries(folder) -> dict[str, int]:
    """The compiled kernels in Numba's cache under ``folder`` (one .nbc file each; the .nbi index of a function
    is rewritten when it gains an entry): path -> modification time."""
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names if name.endswith(".nbc")}


def test_ctrl_c_in_a_cold_compile_exits_130_quietly_and_the_next_run_reuses_what_was_cached(small_gpt2_dir,
                                                                                          tmp_path):
    """Interrupted at several moments of its compile (each run starting from what the last one cached), a cold
    `tinygpt generate` exits with 130, says nothing but the one notice, and leaves a cache that a later run
    completes without compiling again what was written; a warm run then says nothing."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "TINYGPT_NUM_THREADS": "1"}
    args = [*COMMAND, "generate", "Hello", "--model", str(small_gpt2_dir), "--greedy", "--max-new-tokens", "2"]
    for delay in (0.0, 1.5, 4.0):  # seconds after the notice
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        notice = process.stderr.readline()
        assert notice == COMPILING + "\n"
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
        assert (process.returncode, stderr) == (130, ""), stderr  # no traceback, no "Exception ignored"
        assert stdout == "Hello\n"  # the prompt, then its line ended

    cached = compiled_entries(tmp_path / "numba")
    assert cached
    completed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == COMPILING + "\n"  # what was still missing
    assert completed.stdout.startswith("Hello") and len(completed.stdout) > len("Hello\n")
    after = compiled_entries(tmp_path / "numba")
    assert {path: after.get(path) for path in cached} == cached  # nothing written before was compiled again

    warm = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert (warm.returncode, warm.stderr, warm.stdout) == (0, "", completed.stdout)


@pytest.mark.parametrize("stdout_is_a_terminal", [False, True])
def test_the_notice_takes_a_line_of_its_own_after_a_prompt_on_a_terminal(monkeypatch, capsys, stdout_is_a_terminal):
    from tinygpt import cli

    monkeypatch.setattr(cli, "_stdout_line_open", False)
    for stream in (sys.stdout, sys.stderr):
        monkeypatch.setattr(stream, "isatty", lambda: stdout_is_a_terminal)
    cli._write("Hello")
    cli._say_compiling()
    captured = capsys.readouterr()
    assert captured.out == "Hello"
    assert captured.err == ("\n" if stdout_is_a_terminal else "") + COMPILING + "\n"
