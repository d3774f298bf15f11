"""Numba kernels, installed as ``tinygpt.kernels``. They know nothing about GPT-2.

matmul      linear (x @ w + b, fused GELU / accumulate), linear_nt (x @ w.T)
quantized   quantize_rows, quantize_columns, and linear_nt_int8: the same products on int8 weights
intdot      exact int16 x int8 dot products (LLVM IR vector multiply-adds) for the int8 decode products
gemm        the GEMM of products of many rows: 6x16 broadcast register tiles, float32 and exact int8
tiles       the 3x4 dot-product tile, the panel GEMM built around it (linear_nt), the weight streams of small
            products, the explicit-lane dot products that sum in one order for any number of rows
attention   attention: causal multi-head attention over a KV cache with left padding; paged_attention:
            queries of any sequences over a pool of key/value blocks, batch-invariant; packed_attention:
            sequences packed into one array of tokens, each attending within itself
softmax     cross_entropy: -log softmax(row)[target] of rows of logits, in float64
activations gelu_new (tanh GELU)
norm        layer_norm
checks      the argument contract of each kernel above, one check function per kernel, under its name
threads     set_num_threads / get_num_threads / available_cores (applies in every Python thread)
jit         how kernels are compiled: cached on disk, in memory when no cache directory is writable

One function per kernel. Kernels take float32 C-contiguous arrays (int8 weights from the quantizers), accept
``out=`` and check none of their arguments: tinygpt's forward pass, whose arrays are valid by construction,
makes ~44 kernel calls per decoded token. A caller passing arrays it did not build calls the kernel's check
first (``checks.linear(...)`` before ``linear(...)``), which raises ValueError naming the argument. Each
kernel applies the thread count of :func:`set_num_threads` to the Python thread calling it. Compiled code is
cached on disk (``cache=True``), so only the first run on a machine pays for compiling (see ``jit``).

Rows are independent: for up to SMALL_M (48) rows of x, every kernel's output row is bit-identical whatever
other rows share the call, at a fixed thread count (so a request's numbers do not depend on its batch); and
again among products of more than SMALL_M rows computed by our own GEMMs. int8 products give a row the same
bits for any number of rows.
"""

# threads first: it checks NUMBA_NUM_THREADS before anything imports Numba, which rejects a bad value unnamed
from .threads import available_cores, get_num_threads, set_num_threads  # isort: skip
from . import checks
from .activations import gelu_new
from .attention import attention, packed_attention, paged_attention
from .matmul import linear, linear_nt
from .norm import layer_norm
from .softmax import cross_entropy

__all__ = [
    "attention",
    "available_cores",
    "checks",
    "cross_entropy",
    "gelu_new",
    "get_num_threads",
    "layer_norm",
    "linear",
    "linear_nt",
    "packed_attention",
    "paged_attention",
    "set_num_threads",
]
