"""Where int8 weights are cached on disk, what a cache file is keyed by, and how one is written.

``dtype="int8"`` quantizes the linear weights and the LM head. Done at every load, that costs each process
the quantizing time and a private copy of the result (78 MB for distilgpt2). Instead the first load writes
the result to a safetensors file in the cache folder, and later loads memory-map it: no quantizing, and N
processes share one copy through the page cache (``tinygpt.weights`` reads and maps the file).

* Folder: ``TINYGPT_CACHE`` if set, else ``$XDG_CACHE_HOME/tinygpt``, else ``~/.cache/tinygpt``.
* Key: what the file was made from, the identity of each source weights file (resolved path, size,
  modification time in ns; a hub snapshot's files resolve to blobs named by their content hash, inside the
  repo's folder), and QUANTIZER_VERSION. The file's name is a hash of the source paths alone, and the whole
  key is in its metadata, checked at every read: a source that changed in place is found stale and its file
  rewritten under the same name, rather than leaving one orphaned file behind per version of the source.
* Written by the ``safetensors`` library to a temporary file in the same folder, flushed to disk, then
  renamed over the final name (atomic): two processes loading at once each write their own temporary file
  and the last rename wins (both files are the same bytes: the quantizers are deterministic), and a crash
  mid-write leaves at most a hidden temporary file, never a half-written file under the final name. A
  reader holding the old file's mapping keeps it: a rename replaces the name, not the mapped pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path

# Bump whenever what is written changes: the quantizers (kernels/quantized.py: quantize_rows,
# quantize_columns) or the layout of the file. Files of another version are stale and rebuilt.
QUANTIZER_VERSION = 1
FORMAT = "tinygpt-int8"
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


def key(sources: list[Path]) -> dict[str, str]:
    """The metadata a cache file made from ``sources`` (the safetensors files of one model) must carry."""
    return {"format": FORMAT, "quantizer_version": str(QUANTIZER_VERSION), "sources": source_identities(sources)}


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


def file_for(metadata: dict[str, str]) -> Path:
    """The cache file of a model whose key is ``metadata``: named by its source paths only (see above)."""
    paths = [source["path"] for source in json.loads(metadata["sources"])]
    digest = hashlib.sha256(json.dumps([FORMAT, paths]).encode()).hexdigest()[:32]
    return folder() / f"int8-{digest}.safetensors"


def write(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """Write ``tensors`` (name -> contiguous array) with ``metadata`` to ``path`` atomically (see above).
    Raises OSError when the folder cannot be made or written; nothing is left behind then."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    def save(temporary: Path) -> None:
        try:
            save_file(tensors, temporary, metadata=metadata)
        except SafetensorError as error:  # how safetensors reports a failed write (a full disk, say)
            raise OSError(str(error)) from None

    atomic_write(path, save)


def atomic_write(path: Path, save: Callable[[Path], None]) -> None:
    """Make ``path`` by ``save(temporary)``, a temporary file in the same folder then renamed to ``path``
    (see above). Raises OSError when the folder cannot be made or written; nothing is left behind then."""
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


def warn_unwritable(location: Path | None, error: OSError) -> None:
    """The one warning of a load that could not use the cache: quantized in memory instead."""
    where = f"the int8 weight cache in {location}" if location is not None else "an int8 weight cache"
    warnings.warn(f"tinygpt: cannot write {where} ({error.strerror or error}); the weights are quantized in "
                  f"memory at every load instead (set {ENV_VAR} to a writable folder to keep them)",
                  RuntimeWarning, stacklevel=4)
