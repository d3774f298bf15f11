"""The argument contract of every kernel, checked: one function per kernel, under the kernel's name.

The kernels check nothing: tinygpt's forward pass makes ~44 kernel calls per decoded token on arrays that
are valid by construction (weights checked at load, activations and cache allocated by the model), and
should not pay for checks on each. A caller passing arrays it did not build calls the kernel's check with
the same arguments first::

    checks.linear(x, w, b, out, gelu=True)
    linear(x, w, b, out, gelu=True)

Each check raises ValueError naming the argument and what is wrong with it, and returns None. Arrays that
break a kernel's contract give wrong results or crash the process.
"""

import math
from numbers import Real

import numpy as np

GEMMS = ("auto", "numba", "blas")  # the kernels for products of many rows: see matmul.gemm_kernel


# --- one check per kernel ---------------------------------------------------------------------------------


def linear(x, w, b, out=None, *, accumulate=False, gelu=False, gemm="auto") -> None:
    """The contract of ``matmul.linear``: x [M, K], w [K, N], b [N], out None or [M, N], all float32."""
    check_f32("x", x, 2)
    check_f32("w", w, 2)
    check_f32("b", b, 1)
    rows, depth = x.shape
    if w.shape[0] != depth:
        raise ValueError(f"w must have shape ({depth}, N) to match x {x.shape}, got {w.shape}")
    n = w.shape[1]
    check_shape("b", b, (n,))
    check_gemm(gemm)
    _check_epilogue(out, accumulate, gelu)
    check_out(out, (rows, n), {"x": x, "w": w, "b": b})


def linear_nt(x, w, out=None, *, gemm="auto") -> None:
    """The contract of ``matmul.linear_nt``: x [M, K], w [N, K], out None or [M, N], all float32."""
    check_f32("x", x, 2)
    check_f32("w", w, 2)
    rows, depth = x.shape
    if w.shape[1] != depth:
        raise ValueError(f"w must have shape (N, {depth}) to match x {x.shape}, got {w.shape}")
    check_gemm(gemm)
    check_out(out, (rows, w.shape[0]), {"x": x, "w": w})


def linear_nt_int8(x, q, scale, b=None, out=None, *, accumulate=False, gelu=False) -> None:
    """The contract of ``quantized.linear_nt_int8``: x [M, K] float32, q [N, K] int8, scale [N] float32,
    b None or [N] float32, out None or [M, N] float32."""
    check_f32("x", x, 2)
    check_int8("q", q)
    rows, depth = x.shape
    if q.shape[1] != depth:
        raise ValueError(f"q must have shape (N, {depth}) to match x {x.shape}, got {q.shape}")
    n = q.shape[0]
    check_f32("scale", scale, 1)
    check_shape("scale", scale, (n,))
    inputs = {"x": x, "q": q, "scale": scale}
    if b is not None:
        check_f32("b", b, 1)
        check_shape("b", b, (n,))
        inputs["b"] = b
    _check_epilogue(out, accumulate, gelu)
    check_out(out, (rows, n), inputs)


def quantize_rows(w) -> None:
    """The contract of ``quantized.quantize_rows`` and ``quantize_columns``: w a 2-D float32 array."""
    check_f32("w", w, 2)


quantize_columns = quantize_rows


def layer_norm(x, gamma, beta, eps, out=None) -> None:
    """The contract of ``norm.layer_norm``: x [M, C] (C >= 1), gamma and beta [C], out None, x or [M, C], all
    float32; eps a finite number >= 0."""
    check_f32("x", x, 2)
    width = x.shape[1]
    if width == 0:
        raise ValueError("x must have at least one column to normalise")
    check_f32("gamma", gamma, 1)
    check_shape("gamma", gamma, (width,))
    check_f32("beta", beta, 1)
    check_shape("beta", beta, (width,))
    value = _finite_real(eps)
    if value is None or value < 0.0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if out is not x:
        check_out(out, x.shape, {"x": x, "gamma": gamma, "beta": beta})


def gelu_new(x, out=None) -> None:
    """The contract of ``activations.gelu_new``: x a float32 array, out None, x or an array of its shape."""
    check_f32("x", x)
    if out is not x:
        check_out(out, x.shape, {"x": x})


def attention(q, k_cache, v_cache, n_past, kv_start, scale, out=None) -> None:
    """The contract of ``attention.attention``: q [B, T, H, D], k_cache and v_cache [B, H, S, D] with
    S >= n_past + T, all float32; n_past an integer >= 0; kv_start [B] int64 >= 0; scale finite; out None or
    [B, T, H * D] float32."""
    check_f32("q", q, 4)
    check_f32("k_cache", k_cache, 4)
    check_f32("v_cache", v_cache, 4)
    batch, steps, heads, dim = q.shape
    check_n_past(n_past)
    n_past = int(n_past)  # a NumPy unsigned int would wrap in the sum below
    capacity = k_cache.shape[2]
    if k_cache.shape[:2] != (batch, heads) or k_cache.shape[3] != dim:
        raise ValueError(
            f"k_cache must have shape ({batch}, {heads}, S, {dim}) to match q {q.shape}, got {k_cache.shape}"
        )
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache must have the shape of k_cache {k_cache.shape}, got {v_cache.shape}")
    if capacity < n_past + steps:
        raise ValueError(f"k_cache holds {capacity} positions, fewer than n_past + T = {n_past + steps}")
    check_kv_start(kv_start, batch)
    if _finite_real(scale) is None:
        raise ValueError(f"scale must be finite, got {scale!r}")
    check_out(out, (batch, steps, heads * dim), {"q": q, "k_cache": k_cache, "v_cache": v_cache})


def paged_attention(q, k_pool, v_pool, tables, token_seq, token_pos, scale, out=None) -> None:
    """The contract of ``attention.paged_attention``: q [T, H, D], k_pool [n_blocks, H, D, BS] (BS >= 1) and
    v_pool [n_blocks, H, BS, D], all float32; tables [S, max_blocks], token_seq and token_pos [T], all int32,
    with 0 <= token_seq < S, 0 <= token_pos < max_blocks * BS, and every block id a query reads (tables[s,
    0 .. pos // BS]) in 0 .. n_blocks-1; scale finite; out None or [T, H * D] float32. (Whether the positions
    a query reads were written to the pool is the caller's to know.)"""
    check_f32("q", q, 3)
    check_f32("k_pool", k_pool, 4)
    check_f32("v_pool", v_pool, 4)
    n_tokens, heads, dim = q.shape
    n_blocks, slots = k_pool.shape[0], k_pool.shape[3]
    if k_pool.shape[1:3] != (heads, dim) or slots < 1:
        raise ValueError(f"k_pool must have shape (n_blocks, {heads}, {dim}, BS) with BS >= 1 to match q {q.shape}, "
                         f"got {k_pool.shape}")
    if v_pool.shape != (n_blocks, heads, slots, dim):
        raise ValueError(f"v_pool must have shape {(n_blocks, heads, slots, dim)} to match k_pool {k_pool.shape}, "
                         f"got {v_pool.shape}")
    check_int32("tables", tables, 2)
    check_int32("token_seq", token_seq, 1)
    check_shape("token_seq", token_seq, (n_tokens,))
    check_int32("token_pos", token_pos, 1)
    check_shape("token_pos", token_pos, (n_tokens,))
    n_seqs, max_blocks = tables.shape
    if n_tokens:
        if token_seq.min() < 0 or token_seq.max() >= n_seqs:
            raise ValueError(f"token_seq must be in 0 .. {n_seqs - 1} (rows of tables), got {token_seq.tolist()}")
        if token_pos.min() < 0 or token_pos.max() >= max_blocks * slots:
            raise ValueError(f"token_pos must be in 0 .. {max_blocks * slots - 1} (max_blocks * BS - 1), got "
                             f"{token_pos.tolist()}")
        read = np.arange(max_blocks) <= (token_pos // slots)[:, None]  # [T, max_blocks]: the entries each reads
        ids = tables[token_seq][read]
        if ids.min() < 0 or ids.max() >= n_blocks:
            raise ValueError(f"tables must hold block ids in 0 .. {n_blocks - 1} where the queries read them, got "
                             f"{sorted(set(ids[(ids < 0) | (ids >= n_blocks)].tolist()))[:8]}")
    if _finite_real(scale) is None:
        raise ValueError(f"scale must be finite, got {scale!r}")
    check_out(out, (n_tokens, heads * dim), {"q": q, "k_pool": k_pool, "v_pool": v_pool})


def packed_attention(qkv, offsets, scale, out=None) -> None:
    """The contract of ``attention.packed_attention``: qkv [N, 3, H, D] float32; offsets [S + 1] int64 rising
    from 0 to N (never falling); scale finite; out None or [N, H * D] float32."""
    check_f32("qkv", qkv, 4)
    n_tokens, three, heads, dim = qkv.shape
    if three != 3:
        raise ValueError(f"qkv must have shape (N, 3, H, D): query, key and value of each token, got {qkv.shape}")
    check_int64("offsets", offsets, 1)
    if offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != n_tokens or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets must rise from 0 to N = {n_tokens} (the tokens of qkv), never falling, got "
                         f"{offsets.tolist()[:16]}")
    if _finite_real(scale) is None:
        raise ValueError(f"scale must be finite, got {scale!r}")
    check_out(out, (n_tokens, heads * dim), {"qkv": qkv})


def cross_entropy(logits, targets, out=None) -> None:
    """The contract of ``softmax.cross_entropy``: logits [M, V] float32 with V >= 1; targets [M] int64 in
    0 .. V-1; out None or a writable C-contiguous [M] float64 array overlapping neither."""
    check_f32("logits", logits, 2)
    rows, width = logits.shape
    if width < 1:
        raise ValueError(f"logits must have at least one column, got shape {logits.shape}")
    check_int64("targets", targets, 1)
    check_shape("targets", targets, (rows,))
    if rows and (targets.min() < 0 or targets.max() >= width):
        raise ValueError(f"targets must be in 0 .. {width - 1} (columns of logits), got "
                         f"{targets[(targets < 0) | (targets >= width)].tolist()[:8]}")
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape != (rows,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape ({rows},)")
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    for name, a in {"logits": logits, "targets": targets}.items():
        if np.may_share_memory(out, a):
            raise ValueError(f"out must not overlap {name}")


# --- shared by the checks above ---------------------------------------------------------------------------


def check_f32(name: str, a: object, ndim: int | None = None) -> None:
    """Raise ValueError unless ``a`` is a C-contiguous float32 ndarray (with ``ndim`` dims if given)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def check_int8(name: str, a: object) -> None:
    """Raise ValueError unless ``a`` is a 2-D C-contiguous int8 ndarray."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.int8:
        raise ValueError(f"{name} must be int8 (from quantize_rows), got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def check_int32(name: str, a: object, ndim: int) -> None:
    """Raise ValueError unless ``a`` is a C-contiguous int32 ndarray with ``ndim`` dimensions."""
    check_integers(name, a, ndim, np.int32)


def check_int64(name: str, a: object, ndim: int) -> None:
    """Raise ValueError unless ``a`` is a C-contiguous int64 ndarray with ``ndim`` dimensions."""
    check_integers(name, a, ndim, np.int64)


def check_integers(name: str, a: object, ndim: int, dtype) -> None:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def check_shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``a.shape == shape``."""
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def check_out(out: object, shape: tuple[int, ...], inputs: dict[str, np.ndarray]) -> None:
    """Nothing for out=None (the kernel allocates); else raise ValueError unless ``out`` is a writable
    C-contiguous float32 array of ``shape`` that overlaps none of ``inputs`` (name -> array)."""
    if out is None:
        return
    check_f32("out", out)
    check_shape("out", out, shape)
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    for name, a in inputs.items():
        if np.may_share_memory(out, a):
            raise ValueError(f"out must not overlap {name}")


def check_gemm(choice: object) -> None:
    """Checked whatever M: a wrong name must not pass just because this M needs no GEMM."""
    if choice not in GEMMS:
        raise ValueError(f'gemm must be "auto", "numba" or "blas", got {choice!r}')


def check_n_past(n_past: object) -> None:
    """Raise ValueError unless ``n_past`` is an integer >= 0 (a NumPy one too; not a bool)."""
    if isinstance(n_past, bool) or not isinstance(n_past, (int, np.integer)) or n_past < 0:
        raise ValueError(f"n_past must be a non-negative integer, got {n_past!r}")


def check_kv_start(kv_start: object, batch: int) -> None:
    """Raise ValueError unless ``kv_start`` is a contiguous int64 array of shape (batch,) with no value < 0."""
    if not isinstance(kv_start, np.ndarray) or kv_start.dtype != np.int64:
        got = kv_start.dtype if isinstance(kv_start, np.ndarray) else type(kv_start).__name__
        raise ValueError(f"kv_start must be an int64 numpy array, got {got}")
    if kv_start.shape != (batch,) or not kv_start.flags.c_contiguous:
        raise ValueError(f"kv_start must be a contiguous array of shape ({batch},), got shape {kv_start.shape}")
    if batch and kv_start.min() < 0:
        raise ValueError(f"kv_start must be >= 0, got {kv_start.tolist()}")


def _check_epilogue(out: object, accumulate: bool, gelu: bool) -> None:
    """What a linear kernel does after its product: add into out, or apply GELU, not both."""
    if gelu and accumulate:
        raise ValueError("gelu and accumulate cannot be combined")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out (the array to add into)")


def _finite_real(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past float's range
        return None
    return number if math.isfinite(number) else None
