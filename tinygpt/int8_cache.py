"""int8 weights cached on disk: what a cache file is keyed by, named and written with.

``dtype="int8"`` quantizes the linear weights and the LM head. Done at every load, that costs each process
the quantizing time and a private copy of the result (78 MB for distilgpt2). Instead the first load writes
the result to a safetensors file in tinygpt's cache folder, and later loads memory-map it: no quantizing, and
N processes share one copy through the page cache (``tinygpt.weights`` reads and maps the file).

Named, keyed and written as every file there (``cache_folder``): the key is the source weights files'
identity and QUANTIZER_VERSION, all in the file's metadata; the ``safetensors`` library writes it through
``atomic_write``. Two processes loading at once each write the same bytes (the quantizers are deterministic).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .cache_folder import ENV_VAR, atomic_write, file_named_for, source_identities

# Bump whenever what is written changes: the quantizers (kernels/quantized.py: quantize_rows,
# quantize_columns) or the layout of the file. Files of another version are stale and rebuilt.
QUANTIZER_VERSION = 1
FORMAT = "tinygpt-int8"


def key(sources: list[Path]) -> dict[str, str]:
    """The metadata a cache file made from ``sources`` (the safetensors files of one model) must carry."""
    return {"format": FORMAT, "quantizer_version": str(QUANTIZER_VERSION), "sources": source_identities(sources)}


def file_for(metadata: dict[str, str]) -> Path:
    """The cache file of a model whose key is ``metadata``: named by its source paths only."""
    return file_named_for("int8", [Path(source["path"]) for source in json.loads(metadata["sources"])],
                          ".safetensors")


def write(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """Write ``tensors`` (name -> contiguous array) with ``metadata`` to ``path`` atomically.
    Raises OSError when the folder cannot be made or written; nothing is left behind then."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    def save(temporary: Path) -> None:
        try:
            save_file(tensors, temporary, metadata=metadata)
        except SafetensorError as error:  # how safetensors reports a failed write (a full disk, say)
            raise OSError(str(error)) from None

    atomic_write(path, save)


def warn_unwritable(location: Path | None, error: OSError) -> None:
    """The one warning of a load that could not use the cache: quantized in memory instead."""
    where = f"the int8 weight cache in {location}" if location is not None else "an int8 weight cache"
    warnings.warn(f"tinygpt: cannot write {where} ({error.strerror or error}); the weights are quantized in "
                  f"memory at every load instead (set {ENV_VAR} to a writable folder to keep them)",
                  RuntimeWarning, stacklevel=4)
