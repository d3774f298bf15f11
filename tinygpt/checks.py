"""Argument checks of tinygpt's public entry points, in one place.

A public function checks what it is given once, here, and hands plain Python values (and int64 id arrays)
inward; internal loops call internal steps that check nothing again. Each check names the argument and says
what it must be. NumPy scalars act as the numbers they hold: ``np.uint64(64)`` is the int 64 (so no later
arithmetic can wrap), ``np.float32(0.5)`` the float 0.5; a bool is never a number (JSON ``true`` is not a
layer count). Every count has an upper bound, checked before anything is allocated for it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from .errors import InputError


def as_integer(value) -> int | None:
    """``value`` as a Python int if it is an integer (Python or NumPy, not a bool), else None: for checks whose
    message says more than one value can (a tensor's shape, a token id at a position)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def count(value, name: str, *, minimum: int = 0, maximum: int | None = None, error=InputError) -> int:
    """``value`` as a Python int, if it is an integer (Python or NumPy, not a bool) in [minimum, maximum]."""
    number = as_integer(value)
    if number is None:
        raise error(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}")
    if number < minimum or (maximum is not None and number > maximum):
        raise error(f"{name} must be an integer{_range(minimum, maximum)}, got {number}")
    return number


def _range(minimum: int, maximum: int | None) -> str:
    return f" >= {minimum}" if maximum is None else f" between {minimum} and {maximum}"


def real(value, name: str, valid: Callable[[float], bool], expected: str, *, error=InputError) -> float:
    """``value`` as a Python float, if it is a real number (int, float, NumPy, Fraction, Decimal; not a bool)
    that ``valid`` accepts; ``expected`` says what a valid one is, for the message. A number too large for a
    float (``10**400``) is refused by the same message, not an OverflowError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be {expected}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise error(f"{name} must be {expected}, got a number too large for a float ({_short(value)})") from None
    if math.isnan(number) or not valid(number):
        raise error(f"{name} must be {expected}, got {_short(value)}")
    return number


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def flag(value, name: str, *, error=InputError) -> bool:
    """``value`` as a bool, if it is one (Python or NumPy): "False" or 0 is not a yes-or-no answer."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {value!r}")
    return bool(value)


def token_ids(ids, vocab_size: int, *, name: str = "token ids") -> np.ndarray:
    """``ids`` ([T] or [B, T], rows of one length, at least one id) as an int64 array of ids in
    0..vocab_size-1; a bad one is named by its position. Vectorised: one pass, whatever the length."""
    try:
        array = np.asarray(ids)
    except ValueError:  # NumPy: "inhomogeneous shape"
        raise InputError(f"{name} must be a [T] or [B, T] sequence whose rows all have the same length") from None
    if array.ndim not in (1, 2) or 0 in array.shape:
        raise InputError(f"{name} must be a non-empty [T] or [B, T] sequence, got shape {list(array.shape)}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must be integers, got dtype {array.dtype}")
    outside = (array < 0) | (array >= vocab_size)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        position = where if array.ndim == 2 else where[0]
        raise InputError(f"token id {int(array[where])} at position {position} is outside the vocabulary "
                         f"(0..{vocab_size - 1})")
    return array.astype(np.int64, copy=False)
