"""What the kernel tests compare against: float32 rounding-error bounds and float64 reference functions."""

import numpy as np

U = 2.0**-24  # unit roundoff of float32


def sum_error_bound(terms: int, magnitude: np.ndarray) -> np.ndarray:
    """Rounding error bound of a float32 sum of ``terms`` products, in any order: gamma_n * sum|terms|,
    gamma_n = n*u / (1 - n*u) (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5).
    Holds for blocked, vectorised (reassociated) accumulation just as for a plain loop."""
    n = terms + 1  # +1: a multiply rounds before it is added (no FMA assumed)
    return n * U / (1 - n * U) * magnitude


def gelu64(y: np.ndarray) -> np.ndarray:
    """GPT-2's tanh GELU in float64."""
    return 0.5 * y * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (y + 0.044715 * y**3)))


def random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard-normal float32 values of the given shape."""
    return rng.standard_normal(shape, dtype=np.float32)
