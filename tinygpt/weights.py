"""Read GPT-2 weights from safetensors files into named, shape-checked NumPy arrays.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range, then the raw little-endian data. We parse the header ourselves so float32
tensors can be memory-mapped in place: a 330 MB model costs no heap copy, and the OS shares the pages between
processes. float16 / bfloat16 files are converted to float32 once at load. For int8, linear weights are read
from the file and quantized piece by piece, so their float32 form never sits in memory as a whole; the result
is written to the int8 cache (``tinygpt.int8_cache``), a safetensors file that later loads map in the same way.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache_folder, int8_cache
from .checks import as_integer
from .config import GPT2Config
from .errors import InputError, WeightsError
from .jsonfile import parse_json, read_json_object

PREFIX = "transformer."
# Causal-mask buffers that published GPT-2 files carry (float32 in distilgpt2, uint8 in uer); we build the
# mask from positions instead.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# bfloat16 has no NumPy dtype: map its raw bits as uint16 and widen them at load.
DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16")
MAPPED_DTYPES = ("F32", "I8")  # read in place; the others are converted to float32
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Elements per NaN/inf check pass: a 256 KB mask at a time, never one the size of a tensor.
FINITE_CHECK_ITEMS = 1 << 18


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 checkpoint must hold, by canonical name (no ``transformer.`` prefix).

    Linear weights are in GPT-2's Conv1D layout ``[in, out]``.
    """
    C, I, V, P = config.n_embd, config.inner_dim, config.vocab_size, config.n_positions
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (P, C)}
    for i in range(config.n_layer):
        shapes.update({
            f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,),
            f"h.{i}.attn.c_attn.weight": (C, 3 * C), f"h.{i}.attn.c_attn.bias": (3 * C,),
            f"h.{i}.attn.c_proj.weight": (C, C), f"h.{i}.attn.c_proj.bias": (C,),
            f"h.{i}.ln_2.weight": (C,), f"h.{i}.ln_2.bias": (C,),
            f"h.{i}.mlp.c_fc.weight": (C, I), f"h.{i}.mlp.c_fc.bias": (I,),
            f"h.{i}.mlp.c_proj.weight": (I, C), f"h.{i}.mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file; nothing is read until asked."""

    path: Path
    name: str  # as stored, e.g. "transformer.h.0.attn.c_attn.weight"
    dtype_name: str  # safetensors dtype: F32, F16, BF16, ...
    shape: tuple[int, ...]
    offset: int  # of the first byte, from the start of the file

    def mapped(self) -> np.ndarray:
        """The whole tensor: F32 (and I8, in int8 cache files) memory-mapped in place (copy-on-write, so a
        writable view that never writes back), F16/BF16 converted into a new float32 array."""
        if self.dtype_name in MAPPED_DTYPES:
            dtype = DTYPES[self.dtype_name]
            if 0 in self.shape:
                return np.zeros(self.shape, dtype)
            mapped = np.memmap(self.path, dtype=dtype, mode="c", offset=self.offset, shape=self.shape)
            # A plain ndarray view: Numba and NumPy results stay ordinary arrays. Writable (copy-on-write), as
            # arrays computed in memory are: Numba compiles a kernel apart for read-only arguments.
            return np.asarray(mapped)
        return self.read_rows(0, self.shape[0])

    def rows_to_quantize(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32 for one pass of a quantizer or a NaN check: F32 mapped from the file
        (a mapping of its own, unmapped once the caller drops the array, so the file's pages leave this
        process's memory with it), F16/BF16 converted into a new array. Reading F32 rows into the heap
        instead left ~16 MB of freed blocks behind in the allocator after an int8 load."""
        if self.dtype_name == "F32" and start < stop and 0 not in self.shape:
            row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * DTYPES["F32"].itemsize
            mapped = np.memmap(self.path, dtype=DTYPES["F32"], mode="c", offset=self.offset + start * row_bytes,
                               shape=(stop - start, *self.shape[1:]))
            return np.asarray(mapped)  # writable (copy-on-write) plain ndarray: the kernels' cached signature
        return self.read_rows(start, stop)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (along the first axis) as a new float32 array, read from the file."""
        dtype = DTYPES[self.dtype_name]
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        raw = np.fromfile(self.path, dtype=dtype, count=(stop - start) * row_items,
                          offset=self.offset + start * row_items * dtype.itemsize)
        raw = raw.reshape((stop - start, *self.shape[1:]))
        if self.dtype_name == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)  # bfloat16 is the top half of a float32
        return raw.astype(np.float32, copy=False)


class LookupTable:
    """A float32 [rows, cols] tensor of a weights file that a forward pass only looks up by row: the token
    embedding of a model whose LM head is another array (int8's quantized head, or a head of its own).
    ``table[ids]`` reads the rows of ``ids`` (any shape) from the file, through the page cache, into a new
    array [*ids.shape, cols]; ``np.asarray(table)`` reads all of it.

    Not a memory mapping: a mapping keeps resident every page a lookup faults in, and the kernel maps a
    fault's cached neighbours along with it (~64 KB a row): a 512-token prompt left 39 MB of distilgpt2's
    154 MB table in the process's memory, for 1.5 MB of rows.
    """

    def __init__(self, tensor: StoredTensor):
        self.tensor = tensor
        self.shape = tensor.shape
        self.dtype = np.dtype(np.float32)
        self._row_bytes = self.dtype.itemsize * tensor.shape[1]
        self._file = open(tensor.path, "rb", buffering=0)  # kept open: the name may be replaced meanwhile

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        out = np.empty((*ids.shape, self.shape[1]), np.float32)
        descriptor, start, size = self._file.fileno(), self.tensor.offset, self._row_bytes
        for row, index in zip(out.reshape(-1, self.shape[1]), ids.reshape(-1).tolist()):
            if os.preadv(descriptor, [row], start + index * size) != size:
                raise WeightsError(f"{self.tensor.path}: tensor {self.tensor.name!r} ends before its row {index}: "
                                   "the file was cut short after the model was loaded")
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[np.arange(self.shape[0])]
        return whole if dtype is None else whole.astype(dtype)

    def __reduce__(self):
        return LookupTable, (self.tensor,)  # a pickled model opens the file again where it is unpickled


def _embedding(tensor: StoredTensor, is_head: bool) -> np.ndarray | LookupTable:
    """The float32 embedding ``tensor``, mapped; a :class:`LookupTable` when it is only looked up by row
    (not the tied LM head), stored as float32 and the platform reads at an offset (``os.preadv``)."""
    if is_head or tensor.dtype_name != "F32" or 0 in tensor.shape or not hasattr(os, "preadv"):
        return tensor.mapped()
    return LookupTable(tensor)


@dataclass(frozen=True)
class QuantizedWeight:
    """A linear weight as int8 with one float32 scale per output: the weight is ``q * scale[:, None]``.

    q: [out, in] int8 with its outputs as rows: GPT-2's Conv1D layers transposed from the file's [in, out]
    (decode takes one dot product per output: see tinygpt.kernels.quantized), and [vocab, n_embd] for the
    LM head as stored. scale: [out] float32.
    """

    q: np.ndarray
    scale: np.ndarray


# Linear-layer weights, by name suffix: what dtype="int8" stores as int8 (with the LM head).
LINEAR_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# An int8 load reads the LM head (to quantize it) and the embeddings (to check them) a slab of rows at a time:
# never a whole float32 head in memory.
ROWS_PER_READ = 4096
# Lookup tables: a forward pass reads only the rows of its tokens and positions.
EMBEDDINGS = ("wte.weight", "wpe.weight")
WEIGHT_DTYPES = ("float32", "int8")


def load_weights(model_dir: str | os.PathLike, config: GPT2Config, dtype: str = "float32") -> dict:
    """All tensors of a GPT-2 checkpoint, keyed by canonical name (no ``transformer.`` prefix).

    Reads ``model.safetensors`` or the shards listed in ``model.safetensors.index.json``. The result always
    has ``lm_head.weight`` [vocab, n_embd]: the file's own if present, else the token embedding ``wte``
    (GPT-2 ties them). dtype "float32": every tensor a float32 array. dtype "int8": the linear weights and
    the LM head are :class:`QuantizedWeight`, mapped from the int8 cache (quantized at the first load and
    written there, read from the source in slabs so no float32 copy of them stays in memory); embeddings,
    biases and LayerNorm parameters stay float32. A token embedding that is not the LM head (int8's, or an
    untied one) is a :class:`LookupTable`, read by row.
    Raises WeightsError naming the file and tensor of a NaN or infinite value, which would make every logit NaN.
    The check reads every byte; float32 files that passed it are recorded in the cache folder with their
    identity (path, size, modification time), and a later load of the same unchanged files skips it.
    """
    if dtype not in WEIGHT_DTYPES:
        raise InputError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    stored = stored_tensors(Path(model_dir), config)
    if dtype == "float32":
        sources = sorted({tensor.path for tensor in stored.values()})
        stamp, checked_before = _finite_record(sources)
        weights = {}
        tied = "lm_head.weight" not in stored
        for name, tensor in stored.items():
            if name in EMBEDDINGS and not checked_before:
                _check_lookup_table(tensor)
            if name == "wte.weight":
                weights[name] = _embedding(tensor, is_head=tied)
            elif checked_before or name in EMBEDDINGS:
                weights[name] = tensor.mapped()
            else:
                weights[name] = _finite(tensor, tensor.mapped())
        if not checked_before:
            _record_finite(sources, stamp)
        weights.setdefault("lm_head.weight", weights["wte.weight"])
        return weights
    # The tensors that stay float32 first, checked (the embedding that is the tied head is checked as it is
    # quantized): a cache file is then only ever written for a checkpoint that loads.
    head = stored.get("lm_head.weight", stored["wte.weight"])
    weights = {}
    for name, tensor in stored.items():
        if name in EMBEDDINGS:
            if tensor is not head:
                _check_lookup_table(tensor)
            weights[name] = _embedding(tensor, is_head=False) if name == "wte.weight" else tensor.mapped()
        elif not name.endswith(LINEAR_SUFFIXES) and name != "lm_head.weight":
            weights[name] = _finite(tensor, tensor.mapped())
    weights.update(_int8_weights(stored, head))
    return weights


def _int8_weights(stored: dict[str, StoredTensor], head: StoredTensor) -> dict[str, QuantizedWeight]:
    """The quantized linear weights and LM head, mapped from the int8 cache file; on a miss (no file, or a
    truncated, foreign or stale one) quantized here, written there and mapped back, so that this process
    shares the pages with the next ones too. Where the cache cannot be written: quantized here, one warning.
    Mapped weights skip the NaN/inf check: the file was written from checked weights, which its key says
    have not changed since."""
    shapes = {name: tensor.shape[::-1] for name, tensor in stored.items() if name.endswith(LINEAR_SUFFIXES)}
    shapes["lm_head.weight"] = head.shape  # [out, in] of every quantized weight
    try:
        metadata = int8_cache.key(sorted({tensor.path for tensor in stored.values()}))
        path = int8_cache.file_for(metadata)
    except OSError as error:  # no folder to use (no home directory)
        int8_cache.warn_unwritable(None, error)
        return _quantize(stored, head)
    cached = _read_int8_file(path, metadata, shapes)
    if cached is not None:
        return cached
    quantized = _quantize(stored, head)
    try:
        int8_cache.write(path, {f"{name}.{part}": getattr(weight, part) for name, weight in quantized.items()
                                for part in ("q", "scale")}, metadata)
    except OSError as error:
        int8_cache.warn_unwritable(path.parent, error)
        return quantized
    mapped = _read_int8_file(path, metadata, shapes)
    return quantized if mapped is None else mapped  # None: deleted since it was written (a cache cleared)


def _quantize(stored: dict[str, StoredTensor], head: StoredTensor) -> dict[str, QuantizedWeight]:
    """The quantized linear weights ([in, out] in the file, quantized into [out, in]) and LM head, each
    checked for NaN/inf as it is read."""
    from .kernels.quantized import quantize_columns, quantize_rows  # Numba: only when int8 is asked for

    weights = {}
    for name, tensor in stored.items():
        if name.endswith(LINEAR_SUFFIXES):
            weights[name] = QuantizedWeight(
                *quantize_columns(_finite(tensor, tensor.rows_to_quantize(0, tensor.shape[0]))))
    q = np.empty(head.shape, np.int8)
    scale = np.empty(head.shape[0], np.float32)
    for start, stop in _slabs(head):
        q[start:stop], scale[start:stop] = quantize_rows(_finite(head, head.rows_to_quantize(start, stop), start))
    weights["lm_head.weight"] = QuantizedWeight(q, scale)
    return weights


def _read_int8_file(path: Path, metadata: dict[str, str], shapes: dict[str, tuple[int, ...]]
                    ) -> dict[str, QuantizedWeight] | None:
    """The quantized weights in the int8 cache file ``path``, memory-mapped, if it is complete and was made
    by this quantizer from these sources (``metadata``) with these ``shapes`` ([out, in] by name); None
    otherwise: missing, unreadable, truncated, not safetensors, foreign or stale."""
    layout = {}
    for name, shape in shapes.items():
        layout[f"{name}.q"] = ("I8", shape)
        layout[f"{name}.scale"] = ("F32", shape[:1])
    try:
        tensors, found = _read_header(path, len(layout))
        by_name = {tensor.name: tensor for tensor in tensors}
        if found != metadata or {name: (t.dtype_name, t.shape) for name, t in by_name.items()} != layout:
            return None
        return {name: QuantizedWeight(by_name[f"{name}.q"].mapped(), by_name[f"{name}.scale"].mapped())
                for name in shapes}
    except (OSError, ValueError):  # ValueError: WeightsError, or NumPy's of a file cut short since its header
        return None


def _finite_record(sources: list[Path]) -> tuple[str | None, bool]:
    """(the identity of the weights files ``sources`` now, whether the cache folder records that files of
    that identity were found finite). The check reads every byte of the weights (it was most of a float32
    load's time); a load of files that passed it and have not changed since skips it. The identity is taken
    before the check, so that a file changed during it is never recorded as checked."""
    try:
        stamp = cache_folder.source_identities(sources)
    except OSError:
        return None, False
    try:
        return stamp, cache_folder.file_named_for("finite", sources, ".json").read_text(encoding="utf-8") == stamp
    except (OSError, UnicodeDecodeError):
        return stamp, False


def _record_finite(sources: list[Path], stamp: str | None) -> None:
    """Record that the weights files ``sources``, as they were at ``stamp``, are finite (nothing if the cache
    cannot be written: the next load checks them again)."""
    if stamp is None:
        return
    try:
        record = cache_folder.file_named_for("finite", sources, ".json")
        cache_folder.atomic_write(record, lambda temporary: temporary.write_text(stamp, encoding="utf-8"))
    except OSError:
        pass


def _check_lookup_table(tensor: StoredTensor) -> None:
    """The NaN/inf check of an embedding, through slabs mapped apart and dropped: checked in place, every page
    of it would stay in memory, where a forward pass reads only the rows of its tokens and positions."""
    for start, stop in _slabs(tensor):
        _finite(tensor, tensor.rows_to_quantize(start, stop), start)


def _slabs(tensor: StoredTensor) -> Iterator[tuple[int, int]]:
    """(start, stop) of each slab of ROWS_PER_READ rows of ``tensor``."""
    rows = tensor.shape[0]
    return ((start, min(start + ROWS_PER_READ, rows)) for start in range(0, rows, ROWS_PER_READ))


def _finite(tensor: StoredTensor, array: np.ndarray, first_row: int = 0) -> np.ndarray:
    """``array`` (rows ``first_row``... of ``tensor``) as given, or a WeightsError naming its first NaN or inf."""
    flat = array.reshape(-1)
    for start in range(0, flat.size, FINITE_CHECK_ITEMS):
        finite = np.isfinite(flat[start:start + FINITE_CHECK_ITEMS])
        if not finite.all():
            index = start + int(np.argmin(finite))
            position = [int(i) for i in np.unravel_index(index, array.shape)]
            position[0] += first_row
            raise WeightsError(f"{tensor.path}: tensor {tensor.name!r} has a non-finite value {flat[index]} "
                               f"at index {position}")
    return array


def stored_tensors(model_dir: Path, config: GPT2Config) -> dict[str, StoredTensor]:
    """Every tensor the model needs, by canonical name, checked against the config: names, shapes, dtypes."""
    expected = expected_shapes(config)
    # Each file can hold at most every expected tensor, the LM head and the mask buffers of every layer: a
    # header listing more is refused before its entries are checked one by one.
    max_tensors = len(expected) + 1 + len(IGNORED_SUFFIXES) * config.n_layer
    tensors: dict[str, StoredTensor] = {}
    for path in _safetensors_files(model_dir):
        for tensor in _read_header(path, max_tensors)[0]:
            name = _canonical_name(tensor.name)
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if name == "lm_head.weight":
                expected_shape = (config.vocab_size, config.n_embd)
            elif name in expected:
                expected_shape = expected[name]
            else:
                raise WeightsError(f"{path}: unexpected tensor {tensor.name!r} for a GPT-2 model")
            if tensor.shape != expected_shape:
                raise WeightsError(f"{path}: tensor {tensor.name!r} has shape {list(tensor.shape)}, "
                                   f"expected {list(expected_shape)}")
            if tensor.dtype_name not in FLOAT_DTYPES:
                raise WeightsError(f"{path}: tensor {tensor.name!r} has dtype {tensor.dtype_name}, "
                                   f"expected {', '.join(FLOAT_DTYPES)}")
            if name in tensors:
                raise _duplicate_error(tensors[name], tensor)
            tensors[name] = tensor
    missing = [name for name in expected if name not in tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise WeightsError(f"{model_dir}: tensor(s) missing from the checkpoint: {shown}")
    return tensors


def _canonical_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def _duplicate_error(first: StoredTensor, second: StoredTensor) -> WeightsError:
    """Two stored tensors with one canonical name: keeping either would be a silent choice (transformers and
    tinygpt would not even pick the same one)."""
    where = f"{second.path}" if second.path == first.path else f"{first.path} and {second.path}"
    return WeightsError(f"{where}: tensors {first.name!r} and {second.name!r} are both "
                        f"{_canonical_name(second.name)!r} (the {PREFIX!r} prefix is optional): a checkpoint must "
                        "hold each tensor once")


def _safetensors_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return _index_shards(index)
    raise WeightsError(
        f"{model_dir}: no model.safetensors (or model.safetensors.index.json); tinygpt reads safetensors only"
    )


def _index_shards(index: Path) -> list[Path]:
    """The shard files a model.safetensors.index.json maps tensors to, each checked to be in its directory."""
    try:
        weight_map = read_json_object(index, WeightsError).get("weight_map")
    except OSError as err:
        raise WeightsError(f"{index}: cannot read the safetensors index ({err})") from None
    if weight_map is None:
        raise WeightsError(f"{index}: not a valid safetensors index (no 'weight_map')")
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index}: weight_map must be an object mapping tensor name -> shard file name, "
                           f"got {type(weight_map).__name__}")
    for name, shard in weight_map.items():
        # A plain name only: "../x" or "/x" would read files outside the model directory.
        if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard:
            raise WeightsError(f"{index}: tensor {name!r} maps to {shard!r}, which is not a file name "
                               "in the model directory")
    shards = [index.parent / shard for shard in sorted(set(weight_map.values()))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise WeightsError(f"{index} lists shard(s) missing from {index.parent}: {', '.join(missing)}")
    return shards


def _read_header(path: Path, max_tensors: int) -> tuple[list[StoredTensor], object]:
    """The tensors listed in one safetensors file's header (at most ``max_tensors``), each checked to lie inside
    the file, none sharing a byte with another; and the header's ``__metadata__`` (None if it has none)."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"{path}: truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, file_size - 8):
            raise WeightsError(f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes)")
        header = parse_json(f.read(header_len), str(path), WeightsError, "safetensors header")
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: corrupt safetensors header (not a JSON object)")
    listed = len(header) - ("__metadata__" in header)
    if listed > max_tensors:
        raise WeightsError(f"{path}: lists {listed} tensors, more than the {max_tensors} a GPT-2 checkpoint of "
                           "this config.json can hold")
    data_start = 8 + header_len
    tensors, ranges = [], []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name, shape, (begin, end) = _tensor_info(path, name, info)
        if data_start + end > file_size:
            raise WeightsError(
                f"{path}: truncated file: tensor {name!r} ends at byte {data_start + end}, "
                f"file has {file_size}"
            )
        if end - begin != DTYPES[dtype_name].itemsize * math.prod(shape):
            raise WeightsError(f"{path}: tensor {name!r}: byte range does not match shape {list(shape)}")
        tensors.append(StoredTensor(path, name, dtype_name, shape, data_start + begin))
        ranges.append((begin, end, name))
    _check_no_overlap(path, ranges)
    return tensors, header.get("__metadata__")


def _tensor_info(path: Path, name: str, info) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """dtype, shape and byte range [begin, end) (from the end of the header) of one header entry."""
    try:
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError):
        raise WeightsError(f"{path}: tensor {name!r} has a malformed header entry") from None
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
    dims = _counts(shape)
    if dims is None:
        raise WeightsError(f"{path}: tensor {name!r} has shape {shape!r}, expected a list of integers >= 0")
    begin_end = _counts(offsets)
    if begin_end is None or len(begin_end) != 2 or begin_end[0] > begin_end[1]:
        raise WeightsError(f"{path}: tensor {name!r} has data_offsets {offsets!r}, expected [begin, end] "
                           "integers with 0 <= begin <= end")
    return dtype_name, dims, (begin_end[0], begin_end[1])


def _counts(values) -> tuple[int, ...] | None:
    """A JSON list of integers >= 0 as a tuple, else None (a float such as 0.5 or a true/false is no count)."""
    numbers = [as_integer(value) for value in values] if isinstance(values, list) else [None]
    return None if None in numbers or any(number < 0 for number in numbers) else tuple(numbers)


def _check_no_overlap(path: Path, ranges: list[tuple[int, int, str]]) -> None:
    """Two tensors sharing bytes would be silent aliases; sorted by start, any overlap shows between
    neighbours (empty tensors hold no bytes and are left out)."""
    ordered = sorted(r for r in ranges if r[0] < r[1])
    for (begin_a, end_a, a), (begin_b, end_b, b) in zip(ordered, ordered[1:]):
        if begin_b < end_a:
            raise WeightsError(f"{path}: tensors {a!r} (bytes {begin_a}..{end_a}) and {b!r} "
                               f"(bytes {begin_b}..{end_b}) overlap")
