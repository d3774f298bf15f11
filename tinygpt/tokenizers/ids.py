"""Checks on the token ids given to the tokenizers' decoders, with errors that name the position of a bad id."""

from __future__ import annotations

import operator
from collections.abc import Sized
from typing import Any


def id_list(ids: Any) -> list[int]:
    """``ids`` as a list of Python ints, each checked by :func:`as_id` (which names its position)."""
    try:
        ids = list(ids)
    except TypeError:
        raise TypeError(f"expected a sequence of token ids, got {type(ids).__name__}") from None
    if set(map(type, ids)) <= {int}:  # the common case, checked in C
        return ids
    return [as_id(token_id, f"position {position}") for position, token_id in enumerate(ids)]


def as_id(token_id: Any, where: str) -> int:
    """``token_id`` as a Python int; TypeError for anything but an integer (NumPy's too), bools included: a
    dict lookup would take 15496.0 for 15496 and True for 1."""
    if type(token_id) is int:
        return token_id
    if not isinstance(token_id, bool):
        try:
            return operator.index(token_id)
        except TypeError:
            pass
    if isinstance(token_id, Sized) and not isinstance(token_id, (str, bytes)):
        raise TypeError(f"expected one sequence of token ids, but {where} holds a {type(token_id).__name__}: "
                        "decode a batch (such as the output of generate) one row at a time")
    raise TypeError(f"token id {token_id!r} at {where} is not an integer")
