"""Checks on what the tokenizers are given: text to encode, token ids to decode. Each error is a
TokenizerError naming the position of what is wrong."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from ..checks import as_integer
from ..errors import TokenizerError


def check_text(text: Any, caller: str) -> str:
    """``text`` if it is a str; TokenizerError naming ``caller`` (e.g. "encode") otherwise."""
    if not isinstance(text, str):
        raise TokenizerError(f"{caller} expects a str, got {type(text).__name__}")
    return text


def check_texts(texts: Any) -> None:
    """A str or bytes given to encode_batch would be taken one character (or byte, as an int) at a time."""
    if isinstance(texts, (str, bytes)):
        raise TokenizerError(f"encode_batch expects a list of str, got {type(texts).__name__}")


def unencodable_text_error(text: str) -> TokenizerError:
    """The error for text that has no UTF-8 form, and so no tokens: it holds a lone surrogate (half of a UTF-16
    pair, as from bytes decoded with errors="surrogateescape"). Dropping it would encode other text silently.
    The tokenizers call this once encoding has failed, so valid text pays for no extra pass."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return TokenizerError(f"text is not valid Unicode: lone surrogate {text[error.start]!r} at position "
                              f"{error.start}")
    return TokenizerError("text is not valid Unicode: it cannot be encoded as UTF-8")


def id_list(ids: Any) -> list[int]:
    """``ids`` as a list of Python ints, each checked by :func:`as_id` (which names its position)."""
    try:
        ids = list(ids)
    except TypeError:
        raise TokenizerError(f"expected a sequence of token ids, got {type(ids).__name__}") from None
    if set(map(type, ids)) <= {int}:  # the common case, checked in C
        return ids
    return [as_id(token_id, f"position {position}") for position, token_id in enumerate(ids)]


def as_id(token_id: Any, where: str) -> int:
    """``token_id`` as a Python int; TokenizerError for anything but an integer (NumPy's too), bools included: a
    dict lookup would take 15496.0 for 15496 and True for 1."""
    if type(token_id) is int:
        return token_id
    index = as_integer(token_id)
    if index is not None:
        return index
    if isinstance(token_id, Sized) and not isinstance(token_id, (str, bytes)):
        raise TokenizerError(f"expected one sequence of token ids, but {where} holds a {type(token_id).__name__}: "
                             "decode a batch (such as the output of generate) one row at a time")
    raise TokenizerError(f"token id {token_id!r} at {where} is not an integer")
