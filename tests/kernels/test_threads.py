"""Thread-count setting: validation, the environment default, and that it holds in other Python threads."""

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

from tinygpt.kernels import threads
from tinygpt.kernels.matmul import linear
from tinygpt.kernels.norm import layer_norm


@pytest.fixture(autouse=True)
def restore_setting(monkeypatch):
    """Each test starts from the unresolved default and leaves no setting behind."""
    saved = threads._num_threads
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    threads._num_threads = None
    yield
    threads._num_threads = saved


def test_available_cores_matches_affinity():
    if hasattr(os, "sched_getaffinity"):
        assert threads.available_cores() == len(os.sched_getaffinity(0))
    else:  # macOS, Windows: no affinity to read
        assert threads.available_cores() == os.cpu_count()


def test_default_is_all_usable_cores():
    assert threads.get_num_threads() == min(threads.available_cores(), numba.config.NUMBA_NUM_THREADS)


def test_environment_variable_sets_default(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "1")
    assert threads.get_num_threads() == 1


@pytest.mark.parametrize("value", ["zero", "0", "-2", "1.5", str(threads.max_threads() + 1)])
def test_bad_environment_variable_is_named(monkeypatch, value):
    monkeypatch.setenv(threads.ENV_VAR, value)
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.get_num_threads()


def test_set_then_get():
    for n in range(1, threads.max_threads() + 1):
        threads.set_num_threads(n)
        assert threads.get_num_threads() == n
    threads.set_num_threads(np.int64(1))
    assert threads.get_num_threads() == 1


@pytest.mark.parametrize("n", [0, -1, threads.max_threads() + 1, 1.0, "1", True, None])
def test_invalid_counts_raise(n):
    with pytest.raises(ValueError, match="n must be"):
        threads.set_num_threads(n)


def test_kernels_apply_setting_in_calling_thread():
    threads.set_num_threads(1)
    layer_norm(np.ones((2, 3), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5)
    assert numba.get_num_threads() == 1
    threads.set_num_threads(threads.max_threads())
    layer_norm(np.ones((2, 3), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5)
    assert numba.get_num_threads() == threads.max_threads()


def test_apply_num_threads_returns_the_count_it_applied():
    threads.set_num_threads(1)
    assert threads.apply_num_threads() == 1
    assert numba.get_num_threads() == 1


@pytest.mark.skipif(threads.max_threads() < 2, reason="needs 2 cores to tell a setting of 1 from the default")
def test_a_new_setting_reaches_a_thread_that_applied_the_old_one():
    """Each Python thread remembers the count it last applied, to skip Numba's getter: a new setting made in
    another thread must still reach it at its next kernel call."""
    threads.set_num_threads(threads.max_threads())
    ran, changed, seen = threading.Event(), threading.Event(), []
    ones = np.ones((2, 3), np.float32)

    def worker():
        layer_norm(ones, ones[0], ones[0], 1e-5)
        seen.append(numba.get_num_threads())
        ran.set()
        changed.wait()
        layer_norm(ones, ones[0], ones[0], 1e-5)
        seen.append(numba.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    ran.wait()
    threads.set_num_threads(1)
    changed.set()
    thread.join()
    assert seen == [threads.max_threads(), 1]


@pytest.mark.skipif(threads.max_threads() < 2, reason="needs 2 cores to tell a setting of 1 from the default")
def test_setting_holds_in_a_new_python_thread():
    """Numba's own setting is per thread: a new thread starts at the pool size, not at our setting."""
    threads.set_num_threads(1)
    seen = {}

    def worker():
        seen["before"] = numba.get_num_threads()
        x = np.ones((1, 8), np.float32)
        linear(x, np.ones((8, 4), np.float32), np.zeros(4, np.float32))
        seen["after"] = numba.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"before": numba.config.NUMBA_NUM_THREADS, "after": 1}


def test_concurrent_calls_from_several_threads():
    """Kernels launched at once from several Python threads (needs a thread-safe threading layer)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 64), dtype=np.float32)
    w = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal(48, dtype=np.float32)
    want = linear(x, w, b)
    results = [None] * 4

    def worker(slot):
        for _ in range(20):
            results[slot] = linear(x, w, b)

    workers = [threading.Thread(target=worker, args=(slot,)) for slot in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert all(np.array_equal(r, want) for r in results)
    assert numba.threading_layer() in ("omp", "tbb")


def test_missing_threading_layer_says_what_to_install():
    """Without libgomp and TBB (a slim container image), the first kernel call names both fixes."""
    script = (
        "import sys\n"
        "sys.modules['numba.np.ufunc.omppool'] = None  # as if libgomp were not installed\n"
        "sys.modules['numba.np.ufunc.tbbpool'] = None  # nor TBB\n"
        "import numpy as np\n"
        "from tinygpt.kernels.norm import layer_norm\n"
        "ones = np.ones((1, 4), np.float32)\n"
        "layer_norm(ones, ones[0], ones[0], 1e-5)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("RuntimeError: tinygpt's kernels need a thread-safe Numba threading layer")
    assert "apt install libgomp1" in last_line and "pip install tbb" in last_line


@pytest.mark.parametrize("value", ["0", "-2"])
def test_numba_pool_size_below_one_is_named(value):
    """Numba rejects NUMBA_NUM_THREADS=0 at import without naming the variable; importing the kernels names it."""
    env = {**os.environ, "NUMBA_NUM_THREADS": value}
    done = subprocess.run([sys.executable, "-c", "from tinygpt.kernels.norm import layer_norm"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ValueError: NUMBA_NUM_THREADS must be a thread count of at least 1")
    assert repr(value) in last_line
