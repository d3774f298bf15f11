"""Reading JSON from a model directory: config.json, the tokenizer's files, the shard index and the header of
a safetensors file, each failure an error of the caller's kind (ConfigError, TokenizerError, WeightsError)
naming the file.

Python's parser recurses once per nesting level, so a file of 100 000 ``[`` raises a bare RecursionError that
says nothing of where; here it is reported like any other malformed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path


def parse_json(data: bytes, where: str, error: type[Exception], document: str = "file"):
    """The JSON value in ``data`` (UTF-8), read from ``where``; ``error`` naming ``where`` and the ``document``
    ("file", "safetensors header") if it is not UTF-8 JSON or nests too deeply to read."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"{where}: the JSON {document} nests too deeply to read") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise error(f"{where}: not a valid UTF-8 JSON {document} ({err})") from None


def read_json_object(path: Path, error: type[Exception]) -> dict:
    """The JSON object in the file ``path``; ``error`` naming the file if it is not UTF-8 JSON or not an
    object. An OSError (a missing or unreadable file) is left to the caller, which knows what the file is for."""
    data = parse_json(path.read_bytes(), str(path), error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data
