"""tinygpt: GPT-2-family inference on NumPy and Numba.

The public names are imported on first use, so ``import tinygpt`` (and ``tinygpt --help``) stays fast:
Numba and the kernels load only when a model is built.
"""

import os
import sys
from importlib import import_module

# The LM head over every position (Model.logits) runs on NumPy's BLAS, beside Numba's OpenMP pool on the same
# cores. Both pools keep their threads spinning for milliseconds after each call by default, stealing the cores
# from the other pool's next call. These shorten the spinning. Each is read once, when its library starts:
# OpenBLAS's when NumPy is first imported (so it only takes effect if tinygpt is imported first), libgomp's at
# our first kernel. A value the user set is kept. (Prompts no longer depend on this: every product of a
# prefill runs on Numba.)
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # ~0.1-0.3 ms: still bridges the gaps between decode kernels
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # 2**4 cycles, OpenBLAS's shortest

_EXPORTS = {
    "Model": "tinygpt.model",
    "KVCache": "tinygpt.model",
    "Engine": "tinygpt.engine",
    "GPT2Config": "tinygpt.config",
    "Tokenizer": "tinygpt.tokenizers",
    "pipeline": "tinygpt.text_generation",
    "set_seed": "tinygpt.generation",
    "set_num_threads": "tinygpt.kernels.threads",
    **{name: "tinygpt.errors" for name in ("TinyGPTError", "ConfigError", "WeightsError", "TokenizerError",
                                             "InputError", "NonFiniteError", "MissingFileError", "HubError")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tinygpt' has no attribute {name!r}")
