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
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import InputError, NonFiniteError

if TYPE_CHECKING:
    import numpy as np

# NumPy is imported inside the checks of arrays only: the tokenizers use the scalar checks, and `tinygpt
# tokenize` runs without NumPy (importing it costs that command a third of its time). A NumPy bool is neither
# numbers.Integral nor numbers.Real, so the scalar checks refuse it without naming NumPy.


def as_integer(value) -> int | None:
    """``value`` as a Python int if it is an integer (Python or NumPy, not a bool), else None: for checks whose
    message says more than one value can (a tensor's shape, a token id at a position)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def count(value, name: str, *, minimum: int = 0, maximum: int | None = None, maximum_name: str | None = None,
          error=InputError) -> int:
    """``value`` as a Python int, if it is an integer (Python or NumPy, not a bool) in [minimum, maximum].
    ``maximum_name`` says where the maximum comes from ("n_positions"), for the message."""
    span = _range(minimum, maximum, maximum_name)
    number = as_integer(value)
    if number is None:
        raise error(f"{name} must be an integer{span}, got {value!r}")
    if number < minimum or (maximum is not None and number > maximum):
        raise error(f"{name} must be an integer{span}, got {number}")
    return number


def counts(values, name: str, length: int, *, minimum: int = 0, maximum: int, maximum_name: str | None = None,
           error=InputError) -> np.ndarray:
    """``values`` ([length] integers of an integer dtype, each in [minimum, maximum]) as int64 [length].
    Vectorised; 0.7 is not a count, so float arrays are refused rather than truncated."""
    import numpy as np

    span = _range(minimum, maximum, maximum_name)
    try:
        array = np.asarray(values)
    except ValueError:  # NumPy: "inhomogeneous shape"
        array = None
    if array is None or array.shape != (length,) or array.dtype == np.bool_ or not np.issubdtype(
            array.dtype, np.integer):
        shape = "ragged" if array is None else list(array.shape)
        raise error(f"{name} must be {length} integers{span}, got {values!r} (shape {shape})")
    if length and (array.min() < minimum or array.max() > maximum):  # before the cast: no uint64 wraps
        raise error(f"{name} must be {length} integers{span}, got {array.tolist()}")
    return array.astype(np.int64)


def _range(minimum: int, maximum: int | None, maximum_name: str | None = None) -> str:
    if maximum is None:
        return f" >= {minimum}"
    return f" between {minimum} and {maximum if maximum_name is None else f'{maximum_name} ({maximum})'}"


def real(value, name: str, valid: Callable[[float], bool], expected: str, *, error=InputError) -> float:
    """``value`` as a Python float, if it is a real number (int, float, NumPy, Fraction; not a bool)
    that ``valid`` accepts; ``expected`` says what a valid one is, for the message. A number too large for a
    float (``10**400``) is refused by the same message, not an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
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
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {value!r}")
    return bool(value)


def token_ids(ids, vocab_size: int, *, name: str = "token ids") -> np.ndarray:
    """``ids`` ([T] or [B, T], rows of one length, at least one id) as an int64 array of ids in
    0..vocab_size-1; a bad one is named by its position. Vectorised: one pass, whatever the length."""
    import numpy as np

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


def token_id(value, vocab_size: int, name: str) -> int:
    """``value`` as a Python int, if it is one id of a vocabulary of ``vocab_size`` (an option such as
    pad_token_id; for a sequence of ids use :func:`token_ids`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab_size:
        raise InputError(f"{name} {value!r} is not an id of the vocabulary (0..{vocab_size - 1})")
    return int(value)


def finite(values: np.ndarray, what: str, axes: Sequence[str]) -> np.ndarray:
    """``values`` [*axes, N] if every entry is a finite number; otherwise a NonFiniteError naming ``what`` and
    the first place (one index per name in ``axes``) that holds a NaN or infinity. Finite weights can still
    overflow float32 on the way, so outputs are checked, not just the files. One pass in the usual case."""
    import numpy as np

    if np.isfinite(values).all():
        return values
    where = np.argwhere(~np.isfinite(values))[0][:len(axes)]
    place = ", ".join(f"{axis} {int(index)}" for axis, index in zip(axes, where))
    raise NonFiniteError(f"NaN or infinity in {what}{' at ' + place if place else ''}: the computation overflowed "
                         "float32 (extreme weights or activations)")


def fits_in_memory(n_bytes: int, what: str, advice: str) -> None:
    """Refuse ``what`` when its ``n_bytes`` exceed this machine's physical memory, before anything is
    allocated: NumPy would fail only after minutes of building the request, or the machine would swap."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise InputError(f"{what} would need {_size(n_bytes)} of memory, more than this machine's "
                         f"{_size(total)}: {advice}")


def physical_memory() -> int | None:
    """Bytes of RAM, or None where the system does not say (sysconf is POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes} bytes"
