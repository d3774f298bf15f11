"""The BPE tokenizer's tables, cached on disk so that a load after the first reads them instead of building them.

Building the tables of GPT-2's vocab.json and merges.txt (parse 50,000 merges, look each one up, check them)
is most of a tokenizer load, and a command like ``tinygpt generate`` pays it before its first token. The first
load writes what it built to a file in tinygpt's cache folder (``cache_folder``); later loads read that file
back.

* Key: the identity of the tokenizer files the tables were built from and TABLES_VERSION, stored in the file
  and compared at every read; named and written as every file of the cache folder.
* Content: a header line, then a pickle of plain containers (dicts, lists, strs, ints). It is read with an
  unpickler that refuses any class or function, so a foreign file cannot run code; a truncated, foreign or
  stale file reads as None and is rebuilt.
* A cache that cannot be written is skipped without a word: the tables are then built at every load, which
  costs time, never a wrong token.

Only what the vocabulary and merges files determine is cached; the special tokens, read from their own small
files, are checked against the vocabulary at every load.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

from .. import cache_folder

# Bump whenever what is written changes (BPETokenizer's table layout, or this file's).
TABLES_VERSION = 1
HEADER = b"tinygpt-bpe-tables\n"


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"the tokenizer cache holds {module}.{name}, not plain data")


def key(sources: tuple[Path, ...]) -> str | None:
    """What a cache file of tables built from ``sources`` must say it was built from; None when a source
    cannot be looked at (its read will report that). Taken before the sources are read, so that tables built
    from a file changed meanwhile are never filed under its new identity."""
    try:
        return json.dumps({"version": TABLES_VERSION, "sources": cache_folder.source_identities(list(sources))})
    except OSError:
        return None


def file_for(sources: tuple[Path, ...]) -> Path:
    """The cache file of the tables of ``sources`` (OSError when there is no cache folder)."""
    return cache_folder.file_named_for("bpe", list(sources), ".pickle")


def read(sources: tuple[Path, ...], stamp: str | None) -> tuple | None:
    """The tables cached for ``sources`` under ``stamp`` (from :func:`key`), or None: no stamp, no file, or
    one that is unreadable, foreign or stale."""
    if stamp is None:
        return None
    try:
        data = file_for(sources).read_bytes()
        if not data.startswith(HEADER):
            return None
        stored_stamp, tables = _PlainUnpickler(io.BytesIO(data[len(HEADER):])).load()
        return tables if stored_stamp == stamp else None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError):  # what a damaged file raises
        return None


def write(sources: tuple[Path, ...], stamp: str | None, tables: tuple) -> None:
    """Cache ``tables`` (plain containers) as built from ``sources`` as they were at ``stamp``; nothing when
    there is no stamp or the cache cannot be written."""
    if stamp is None:
        return
    try:
        path = file_for(sources)
        data = HEADER + pickle.dumps((stamp, tables), protocol=pickle.HIGHEST_PROTOCOL)
        cache_folder.atomic_write(path, lambda temporary: temporary.write_bytes(data))
    except OSError:
        pass
