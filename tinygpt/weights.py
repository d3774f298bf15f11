"""Read GPT-2 weights from safetensors files into named, shape-checked NumPy arrays.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range, then the raw little-endian data. We parse the header ourselves so float32
tensors can be memory-mapped in place: a 330 MB model costs no heap copy, and the OS shares the pages between
processes. float16 / bfloat16 files are converted to float32 once at load.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .config import GPT2Config

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
MAX_HEADER_BYTES = 100 * 1024 * 1024


class WeightsError(ValueError):
    """A weights file is unreadable, truncated, or does not match the config."""


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


def load_weights(model_dir: str | os.PathLike, config: GPT2Config) -> dict[str, np.ndarray]:
    """All tensors of a GPT-2 checkpoint as float32 arrays keyed by canonical name.

    Reads ``model.safetensors`` or the shards listed in ``model.safetensors.index.json``. The result always
    has ``lm_head.weight`` [vocab, n_embd]: the file's own if present, else the same array as ``wte.weight``
    (GPT-2 ties them).
    """
    model_dir = Path(model_dir)
    files = _safetensors_files(model_dir)
    expected = expected_shapes(config)
    weights: dict[str, np.ndarray] = {}
    for path in files:
        for raw_name, (dtype_name, array) in _read_safetensors(path).items():
            name = _canonical_name(raw_name)
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if name == "lm_head.weight":
                expected_shape = (config.vocab_size, config.n_embd)
            elif name in expected:
                expected_shape = expected[name]
            else:
                raise WeightsError(f"{path}: unexpected tensor {raw_name!r} for a GPT-2 model")
            weights[name] = _as_float32(array, dtype_name, path, raw_name, expected_shape)
    missing = [name for name in expected if name not in weights]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise WeightsError(f"{model_dir}: tensor(s) missing from the checkpoint: {shown}")
    weights.setdefault("lm_head.weight", weights["wte.weight"])
    return weights


def _canonical_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def _safetensors_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"{index}: not a valid safetensors index ({err})") from None
        return [model_dir / shard for shard in sorted(set(weight_map.values()))]
    raise WeightsError(
        f"{model_dir}: no model.safetensors (or model.safetensors.index.json); tinygpt reads safetensors only"
    )


def _read_safetensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Memory-map every tensor of one safetensors file: name -> (safetensors dtype name, array).

    Copy-on-write mapping, so the arrays are writable views that never write back to the file.
    """
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"{path}: truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, file_size - 8):
            raise WeightsError(f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as err:
            raise WeightsError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + header_len
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name, shape, (begin, end) = _tensor_info(path, name, info)
        dtype = DTYPES[dtype_name]
        if data_start + end > file_size:
            raise WeightsError(
                f"{path}: truncated file: tensor {name!r} ends at byte {data_start + end}, "
                f"file has {file_size}"
            )
        if end - begin != dtype.itemsize * int(np.prod(shape)):
            raise WeightsError(f"{path}: tensor {name!r}: byte range does not match shape {shape}")
        if end == begin:
            array = np.zeros(shape, dtype)
        else:
            mapped = np.memmap(path, dtype=dtype, mode="c", offset=data_start + begin, shape=tuple(shape))
            array = np.asarray(mapped)  # a plain ndarray view: Numba and NumPy results stay ordinary arrays
        arrays[name] = (dtype_name, array)
    return arrays


def _tensor_info(path: Path, name: str, info) -> tuple[str, list[int], tuple[int, int]]:
    try:
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        begin, end = (int(v) for v in offsets)
        shape = [int(d) for d in shape]
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{path}: tensor {name!r} has a malformed header entry") from None
    if dtype_name not in DTYPES:
        raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
    return dtype_name, shape, (begin, end)


def _as_float32(
    array: np.ndarray, dtype_name: str, path: Path, name: str, shape: tuple[int, ...]
) -> np.ndarray:
    if tuple(array.shape) != shape:
        raise WeightsError(f"{path}: tensor {name!r} has shape {list(array.shape)}, expected {list(shape)}")
    if dtype_name == "F32":
        return array
    if dtype_name == "F16":
        return np.ascontiguousarray(array, dtype=np.float32)
    if dtype_name == "BF16":
        # bfloat16 is the top half of a float32: shift its bits into place.
        return (array.astype(np.uint32) << 16).view(np.float32)
    raise WeightsError(f"{path}: tensor {name!r} has dtype {dtype_name}, expected F32, F16 or BF16")
