"""The row-independence check of the kernels: for up to SMALL_M rows, out[i] must be bit-identical whatever
other rows share the call (the engine mixes decode rows and chunks of prompts in one product, and a request's
result must not depend on its neighbours). Each check computes every row alone, then every prefix x[:M],
M = 1..rows, and shuffled subsets (each row at other positions among other rows)."""

import numpy as np
import pytest


def assert_rows_independent(product, rows: int, rng: np.random.Generator) -> None:
    """product(index) -> the kernel's output for the rows x[index]; each row must equal that row alone."""
    alone = np.concatenate([product(np.array([i])) for i in range(rows)]).view(np.int32)
    for m in range(1, rows + 1):
        got = product(np.arange(m)).view(np.int32)
        assert np.array_equal(got, alone[:m]), f"M = {m}: rows {np.flatnonzero((got != alone[:m]).any(axis=1))}"
    for _ in range(4):
        index = rng.permutation(rows)[: rng.integers(2, rows + 1)]
        assert np.array_equal(product(index).view(np.int32), alone[index]), f"rows {index}"


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def thread_count(request):
    from tinygpt.kernels import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(request.param)
    yield request.param
    set_num_threads(before)
