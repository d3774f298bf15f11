"""Every JSON a model directory holds is read by one reader: malformed or too deeply nested JSON is an error of
the file's kind (ConfigError, TokenizerError, WeightsError) naming the file, never a bare RecursionError."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from tinygpt import Model
from tinygpt.errors import ConfigError, TokenizerError, WeightsError

# Far deeper than Python's recursion limit: json.loads raised a bare RecursionError on these.
DEEP = b"[" * 100_000


@pytest.fixture
def model_dir(tiny_model_dir, gpt2_tokenizer_dir, tmp_path):
    """The tiny model with GPT-2's tokenizer files beside it (the tokenizer is read last, after the weights)."""
    directory = shutil.copytree(tiny_model_dir, tmp_path / "m")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_tokenizer_dir / name, directory / name)
    return directory


def _shard(directory, text: bytes) -> None:
    """Replace the weights by an index holding ``text``."""
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors.index.json").write_bytes(text)


def _tokenizer_json_only(directory, text: bytes) -> None:
    for name in ("vocab.json", "merges.txt"):
        (directory / name).unlink()
    (directory / "tokenizer.json").write_bytes(text)


def _header(directory, text: bytes) -> None:
    """A safetensors file whose JSON header is ``text``."""
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)


WRITERS = {
    "config.json": (lambda d, text: (d / "config.json").write_bytes(text), ConfigError, "file"),
    "vocab.json": (lambda d, text: (d / "vocab.json").write_bytes(text), TokenizerError, "file"),
    "tokenizer_config.json": (lambda d, text: (d / "tokenizer_config.json").write_bytes(text), TokenizerError, "file"),
    "special_tokens_map.json": (lambda d, text: (d / "special_tokens_map.json").write_bytes(text), TokenizerError,
                                "file"),
    "tokenizer.json": (_tokenizer_json_only, TokenizerError, "file"),
    "model.safetensors.index.json": (_shard, WeightsError, "file"),
    "model.safetensors": (_header, WeightsError, "safetensors header"),
}


@pytest.mark.parametrize("name", WRITERS)
def test_deeply_nested_json_is_an_error_naming_the_file(model_dir, name):
    write, error, document = WRITERS[name]
    write(model_dir, DEEP)
    with pytest.raises(error, match=rf"/m/{name}: the JSON {document} nests too deeply to read$"):
        Model.from_pretrained(model_dir)


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("text, reason", [(b'{"a": 1', "Expecting ',' delimiter"), (b'{"\xff": 1}', "can't decode"),
                                          (b'{"a": ' + b"1" * 5000 + b"}", "Exceeds the limit")],
                         ids=["cut", "not-utf8", "5000-digit-int"])
def test_malformed_json_is_an_error_naming_the_file(model_dir, name, text, reason):
    write, error, document = WRITERS[name]
    write(model_dir, text)
    with pytest.raises(error, match=rf"/m/{name}: not a valid UTF-8 JSON {document} \(.*{reason}"):
        Model.from_pretrained(model_dir)


@pytest.mark.parametrize("name", [name for name in WRITERS if name != "model.safetensors"])
def test_json_that_is_not_an_object_is_an_error_naming_the_file(model_dir, name):
    write, error, _ = WRITERS[name]
    write(model_dir, json.dumps([1, 2]).encode())
    with pytest.raises(error, match=rf"/m/{name}: expected a JSON object at the top level, got list"):
        Model.from_pretrained(model_dir)
