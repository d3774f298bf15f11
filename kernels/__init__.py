"""Numba kernels, installed as ``tinygpt.kernels``. They know nothing about GPT-2."""
