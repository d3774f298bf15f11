"""tinygpt: GPT-2-family inference on NumPy and Numba.

The public names are imported on first use, so ``import tinygpt`` (and ``tinygpt --help``) stays fast:
Numba and the kernels load only when a model is built.
"""

from importlib import import_module

_EXPORTS = {
    "Model": "tinygpt.model",
    "KVCache": "tinygpt.model",
    "GPT2Config": "tinygpt.config",
    "Tokenizer": "tinygpt.tokenizers",
    "pipeline": "tinygpt.text_generation",
    "set_seed": "tinygpt.generation",
    "set_num_threads": "tinygpt.kernels.threads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tinygpt' has no attribute {name!r}")
