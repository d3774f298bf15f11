"""Numba kernels, installed as ``tinygpt.kernels``. They know nothing about GPT-2.

matmul      linear (x @ w + b, fused GELU / accumulate), linear_nt (x @ w.T)
quantized   the same products on int8 weights with per-output scales
intdot      exact int16 x int8 dot products (LLVM IR, vpmaddwd) for the int8 decode products
tiles       the 3x4 dot-product tile and panel walk of the blocked GEMMs
attention   causal multi-head attention over a KV cache with left padding
activations gelu_new (tanh GELU)
norm        layer_norm
threads     set_num_threads / get_num_threads / available_cores (applies in every Python thread)
jit         how kernels are compiled: cached on disk, in memory when no cache directory is writable

All take float32 C-contiguous arrays, validate them (ValueError naming the argument) and accept ``out=``.
linear, linear_nt, linear_nt_int8, layer_norm and attention each have a ``*_unchecked`` twin without the
checks, for tinygpt's forward pass, whose arrays are valid by construction (the checks cost ~0.2 ms a token).
Compiled code is cached on disk (``cache=True``), so only the first run on a machine pays for compiling
(see ``jit``).
"""

from .activations import gelu_new
from .attention import attention
from .matmul import linear, linear_nt
from .norm import layer_norm
from .threads import available_cores, get_num_threads, set_num_threads

__all__ = [
    "attention",
    "available_cores",
    "gelu_new",
    "get_num_threads",
    "layer_norm",
    "linear",
    "linear_nt",
    "set_num_threads",
]
