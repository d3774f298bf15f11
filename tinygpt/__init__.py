"""tinygpt: GPT-2-family inference on NumPy and Numba."""
