"""The BPE tables cached on disk: reused while the files are unchanged, rebuilt when they change or when the
cache file is damaged or foreign, never able to run code, and skipped where nothing can be written."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

from tinygpt.errors import TokenizerError
from tinygpt.tokenizers import bpe, table_cache
from tinygpt.tokenizers.bpe import BPETokenizer

TEXT = "Hello world, it's 2026! Ünïcödé and  spaces <|endoftext|> end"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE", str(folder))
    return folder


@pytest.fixture
def model(gpt2_tokenizer_dir, tmp_path) -> Path:
    return Path(shutil.copytree(gpt2_tokenizer_dir, tmp_path / "model"))


def files(model: Path) -> tuple[Path, Path]:
    return model / "vocab.json", model / "merges.txt"


def no_building(monkeypatch) -> None:
    """Make building the tables from the files fail: a load that still works read them from the cache."""
    def refuse(*args):
        raise AssertionError("the tables were built, not read from the cache")
    monkeypatch.setattr(bpe, "_read_merges_txt", refuse)


def test_a_second_load_reads_the_tables_and_encodes_the_same(cache, model, monkeypatch):
    built = BPETokenizer.from_pretrained(model)
    assert [path.name.startswith("bpe-") for path in cache.iterdir()] == [True]
    no_building(monkeypatch)
    read = BPETokenizer.from_pretrained(model)
    assert read.encode(TEXT) == built.encode(TEXT)
    assert read.decode(read.encode(TEXT)) == TEXT
    assert (read.special_tokens, read.eos_token_id, read.vocab_size) == (
        built.special_tokens, built.eos_token_id, built.vocab_size)


def test_a_changed_file_is_read_again(cache, model):
    BPETokenizer.from_pretrained(model)
    merges = model / "merges.txt"
    lines = merges.read_text(encoding="utf-8").splitlines()
    merges.write_text("\n".join(lines[:-1000]) + "\n", encoding="utf-8")  # the last 1000 merges cut
    with pytest.raises(TokenizerError, match="the merges are empty or cut short"):
        BPETokenizer.from_pretrained(model)


def test_a_file_touched_in_place_is_rebuilt(cache, model, monkeypatch):
    BPETokenizer.from_pretrained(model)
    stat = (model / "vocab.json").stat()
    os.utime(model / "vocab.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    no_building(monkeypatch)
    with pytest.raises(AssertionError, match="were built"):
        BPETokenizer.from_pretrained(model)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign stamp"])
def test_a_damaged_or_foreign_cache_file_is_rebuilt(cache, model, damage):
    expected = BPETokenizer.from_pretrained(model).encode(TEXT)
    path = table_cache.file_for(files(model))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(table_cache.HEADER + b"\x80\x05not a pickle at all")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(table_cache.HEADER + pickle.dumps(("another stamp", ({}, {}, []))))
    assert BPETokenizer.from_pretrained(model).encode(TEXT) == expected
    assert path.read_bytes() == data  # written anew


class Trap:
    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_cache_file_that_would_run_code_is_refused(cache, model, tmp_path):
    expected = BPETokenizer.from_pretrained(model).encode(TEXT)
    path = table_cache.file_for(files(model))
    trap = Trap()
    trap.path = str(tmp_path / "ran")
    stamp = table_cache.key(files(model))
    path.write_bytes(table_cache.HEADER + pickle.dumps((stamp, trap)))
    assert BPETokenizer.from_pretrained(model).encode(TEXT) == expected
    assert not (tmp_path / "ran").exists()


def test_an_unwritable_cache_is_skipped_without_a_word(tmp_path, model, monkeypatch, recwarn):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TINYGPT_CACHE", str(blocker / "cache"))
    assert BPETokenizer.from_pretrained(model).decode(BPETokenizer.from_pretrained(model).encode(TEXT)) == TEXT
    assert not recwarn.list
