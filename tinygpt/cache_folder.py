"""The folder where tinygpt keeps what it derives from a model's files, and how a file there is named and written.

* The folder: ``TINYGPT_CACHE`` if set, else ``$XDG_CACHE_HOME/tinygpt``, else ``~/.cache/tinygpt``. It holds
  the int8 weights (``int8_cache``), the BPE tokenizer's tables (``tokenizers.table_cache``) and the record of
  float32 weights files found finite (``weights``). Deleting it is always safe: each is made again.
* A file made from sources (a model's files) is named by a hash of their resolved paths, and records their
  identity (resolved path, size, modification time in ns; a hub snapshot's files resolve to blobs named by
  their content hash), checked at every read: a source changed in place is found stale and its file rewritten
  under the same name, rather than one orphaned file left behind per version of the source.
* Every file is written to a temporary file in the same folder, flushed to disk, then renamed over the final
  name (atomic): two processes writing at once each write their own temporary file and the last rename wins,
  and a crash mid-write leaves at most a hidden temporary file, never a half-written file under the final name.
  A reader holding the old file's mapping keeps it: a rename replaces the name, not the mapped pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

ENV_VAR = "TINYGPT_CACHE"


def folder() -> Path:
    """The cache folder (not created here). OSError when no folder is configured and there is no home
    directory to put one in."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is invalid and must be ignored
        return Path(xdg) / "tinygpt"
    try:
        return Path.home() / ".cache" / "tinygpt"
    except RuntimeError:  # no HOME and no passwd entry (a container run under an arbitrary uid)
        raise OSError(f"there is no home directory to keep a cache in; set {ENV_VAR}") from None


def source_identities(sources: list[Path]) -> str:
    """What a cached file made from ``sources`` was made from, as JSON: each one's resolved path, size and
    modification time (ns). OSError when one of them is gone."""
    identities = []
    for source in sources:
        resolved = source.resolve()
        stat = resolved.stat()
        identities.append({"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return json.dumps(identities)


def file_named_for(kind: str, sources: list[Path], suffix: str) -> Path:
    """The cache file of ``kind`` made from ``sources``: named by a hash of their resolved paths only, so that
    a source changed in place has its file replaced, not a new one added (OSError without a cache folder)."""
    paths = [str(source.resolve()) for source in sources]
    digest = hashlib.sha256(json.dumps([kind, paths]).encode()).hexdigest()[:32]
    return folder() / f"{kind}-{digest}{suffix}"


def atomic_write(path: Path, save: Callable[[Path], None]) -> None:
    """Make ``path`` by ``save(temporary)``, a temporary file in the same folder then renamed to ``path``
    (see the module docstring). Raises OSError when the folder cannot be made or written; nothing is left
    behind then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        # The mode the umask gives a new file. Recent safetensors versions write through a private (0600)
        # file of their own, which would keep other users off a cache folder shared with them.
        mode = os.stat(temporary).st_mode & 0o777
        save(temporary)
        os.chmod(temporary, mode)
        # On disk before the rename: after a power loss the name must not point at a file whose data never
        # reached the disk (right size, zeros inside, which no check would catch).
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt: no temporary file left behind
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
