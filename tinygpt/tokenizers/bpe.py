"""Byte-level BPE tokenizer for GPT-2-family models (GPT-2, distilgpt2), written from scratch.

Pipeline of ``encode``: split the text around special tokens (``<|endoftext|>``), split each ordinary stretch
with GPT-2's pre-tokenization regex, turn each piece into its UTF-8 bytes, start from one token per byte and apply
the merges by rank. Pieces repeat a lot in real text, so the merged ids of each piece are cached; with a warm
cache encoding is one regex pass plus one dict lookup per piece, all driven from C (``map``/``chain``). Long
ASCII stretches of the text go through the standard ``re`` engine, which splits them twice as fast as ``regex``.

``decode`` joins the byte strings of the tokens and decodes them as UTF-8, replacing invalid sequences with
U+FFFD (``errors="replace"``), like transformers' GPT2Tokenizer. ``IncrementalDecoder`` does the same one token
at a time and holds back the bytes of a character that is not complete yet.
"""

from __future__ import annotations

import codecs
import heapq
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import regex

from ..errors import MissingFileError, TokenizerError
from . import table_cache
from .files import MERGES_TXT, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, TOKENIZER_JSON, VOCAB_JSON, read_json_object
from .inputs import as_id, check_text, check_texts, id_list, unencodable_text_error

__all__ = ["BPETokenizer", "IncrementalDecoder", "GPT2_SPLIT_PATTERN", "ENDOFTEXT", "bytes_to_unicode"]

# GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols (each optionally led by one space), and
# whitespace; `\s+(?!\S)` leaves the last space of a run to lead the next word.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"

# Cached pieces before the cache is emptied, so that adversarial text cannot grow it without bound.
_MAX_CACHED_PIECES = 100_000


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible table byte (0..255) -> printable character.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, soft hyphen...) get the
    characters U+0100, U+0101, ... in byte order, so that every vocab entry is a printable string.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    next_char = 256
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(next_char)
            next_char += 1
    return dict(sorted(table.items()))


_UNICODE_TO_BYTE = {char: byte for byte, char in bytes_to_unicode().items()}
# str.translate table from the byte alphabet to Latin-1 characters (whose code is the byte), so that
# ``token.translate(_TO_LATIN1).encode("latin-1")`` turns a vocab entry into its bytes in C. A character
# below 256 that is not in the alphabet maps to one Latin-1 cannot encode, so it fails like any other
# character outside the alphabet.
_TO_LATIN1 = {code: "\uffff" for code in range(256)} | {ord(char): chr(byte) for char, byte in _UNICODE_TO_BYTE.items()}


class _PieceCache(dict):
    """pre-token (str) -> its token ids (tuple); a miss runs BPE on the piece and stores the result."""

    def __init__(self, bpe_piece: Callable[[str], tuple[int, ...]]):
        super().__init__()
        self._bpe_piece = bpe_piece

    def __missing__(self, piece: str) -> tuple[int, ...]:
        if len(self) >= _MAX_CACHED_PIECES:
            self.clear()
        ids = self[piece] = self._bpe_piece(piece)
        return ids


class _TokenBytes(dict):
    """token id -> the bytes it stands for, each worked out when first asked for: a command that decodes a few
    tokens does not pay for the whole vocabulary at load. An id outside the vocabulary raises KeyError."""

    def __init__(self, id_to_token: Mapping[int, str], empty_ids: Iterable[int] = ()):
        super().__init__(zip(empty_ids, repeat(b"")))
        self._id_to_token = id_to_token

    def __missing__(self, token_id: int) -> bytes:
        token = self._id_to_token[token_id]
        try:
            piece = token.translate(_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:  # an entry outside the byte alphabet (an added token): its UTF-8
            piece = token.encode("utf-8")
        self[token_id] = piece
        return piece


class IncrementalDecoder:
    """Turns a stream of token ids into text, one id at a time.

    ``push`` returns only complete UTF-8 characters; bytes of a character split over tokens wait for the rest.
    ``"".join(push(i) for i in ids) + flush() == decode(ids)`` for every id sequence. After ``flush`` the
    decoder is empty and can start a new stream.
    """

    def __init__(self, id_to_bytes: Mapping[int, bytes], vocab_size: int):
        self._id_to_bytes = id_to_bytes
        self._vocab_size = vocab_size
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._position = 0

    def push(self, token_id: int) -> str:
        """Add one token id; return the text completed by it (may be "")."""
        token_id = as_id(token_id, f"stream position {self._position}")
        try:
            piece = self._id_to_bytes[token_id]
        except KeyError:
            raise TokenizerError(
                f"token id {token_id!r} at stream position {self._position} is outside the vocabulary "
                f"(valid ids: 0..{self._vocab_size - 1})"
            ) from None
        self._position += 1
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """End the stream: return what is left (an incomplete character becomes U+FFFD, as in decode)."""
        self._position = 0
        return self._utf8.decode(b"", final=True)


class BPETokenizer:
    """GPT-2 byte-level BPE: ``encode`` text to ids, ``decode`` ids to text (see the module docstring)."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: Iterable[str] = (),
        bos_token: str | None = None,
        eos_token: str | None = None,
    ):
        """Build from an in-memory vocabulary.

        vocab: byte-level token string (e.g. ``"Ġworld"``) -> id. merges: pairs of token strings, best first.
        special_tokens: strings matched verbatim in text before pre-tokenization; each must be in ``vocab``.
        bos_token / eos_token: default to ``<|endoftext|>`` when it is in ``vocab``.
        Raises TokenizerError when a merge, a special token or one of the 256 byte tokens is missing from vocab, or
        when no merge yields many of the vocab's other tokens (the merges are empty or cut short).
        """
        self._set_up(vocab, special_tokens, bos_token, eos_token)
        self._merges, merged_ids = self._merge_table(merges)
        self._check_merges_reach_vocab(merged_ids, len(merges))

    @classmethod
    def _from_tables(cls, vocab: dict[str, int], merge_table: dict[int, int], special_tokens: Iterable[str],
                     bos_token: str | None, eos_token: str | None) -> BPETokenizer:
        """The tokenizer of a vocab and a merge table that an earlier load built and checked (the table cache)."""
        tokenizer = cls.__new__(cls)
        tokenizer._set_up(vocab, special_tokens, bos_token, eos_token)
        tokenizer._merges = merge_table
        return tokenizer

    def _set_up(self, vocab: Mapping[str, int], special_tokens: Iterable[str], bos_token: str | None,
                eos_token: str | None) -> None:
        """Everything but the merge table."""
        self._vocab = dict(vocab)
        self._id_to_token = dict(zip(self._vocab.values(), self._vocab.keys()))
        self.vocab_size: int = max(self._id_to_token) + 1 if self._id_to_token else 0
        self._byte_ids = self._byte_token_ids()
        self._id_bits = self.vocab_size.bit_length()
        self.special_tokens: dict[str, int] = self._special_token_ids(special_tokens)
        self.bos_token_id: int | None = self._named_token_id(bos_token, "bos_token")
        self.eos_token_id: int | None = self._named_token_id(eos_token, "eos_token")

        # Longest first, so that of two special tokens starting at the same place the longer one wins.
        by_length = sorted(self.special_tokens, key=len, reverse=True)
        self._special_pattern = regex.compile("(" + "|".join(map(regex.escape, by_length)) + ")") if by_length else None
        self._cache = _PieceCache(self._bpe_piece)

        self._id_to_bytes = _TokenBytes(self._id_to_token)
        self._id_to_bytes_no_special = _TokenBytes(self._id_to_token, empty_ids=self.special_tokens.values())
        self.files: tuple[Path, ...] = ()  # what from_pretrained read the vocabulary from, for messages

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> BPETokenizer:
        """Load a tokenizer directory.

        Either ``vocab.json`` + ``merges.txt`` (GPT-2's own format), or only ``tokenizer.json`` (Hugging Face
        fast-tokenizer format, a ``BPE`` model whose merges are ``"a b"`` strings or ``["a", "b"]`` pairs).
        Special tokens and bos/eos come from ``tokenizer.json``'s added tokens, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` when present; ``<|endoftext|>`` is special whenever it is in the vocab.
        Raises MissingFileError / TokenizerError naming the missing or corrupt file.
        The vocab and merge table built from those files are cached (``table_cache``): a later load of the
        same, unchanged files reads them back instead of building them again.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise MissingFileError(f"tokenizer directory not found: {directory}")
        vocab_file, merges_file = directory / VOCAB_JSON, directory / MERGES_TXT
        json_file = directory / TOKENIZER_JSON
        if vocab_file.is_file() and merges_file.is_file():
            files = (vocab_file, merges_file)
        elif json_file.is_file():
            files = (json_file,)
        else:
            missing = " and ".join(f.name for f in (vocab_file, merges_file) if not f.is_file())
            raise MissingFileError(f"{directory}: missing {missing}, and there is no tokenizer.json either")
        stamp = table_cache.key(files)
        cached = table_cache.read(files, stamp)
        if cached is not None:
            vocab, merge_table, added = cached
        elif files[0] == vocab_file:
            vocab, merges, added = _read_vocab_json(vocab_file), _read_merges_txt(merges_file), []
        else:
            vocab, merges, added = _read_tokenizer_json(json_file)
        named = _read_named_special_tokens(directory, vocab)
        specials = [*added, *named.values(), *([ENDOFTEXT] if ENDOFTEXT in vocab else [])]
        try:
            if cached is not None:
                tokenizer = cls._from_tables(vocab, merge_table, specials, named.get("bos_token"),
                                             named.get("eos_token"))
            else:
                tokenizer = cls(vocab, merges, specials, named.get("bos_token"), named.get("eos_token"))
                table_cache.write(files, stamp, (tokenizer._vocab, tokenizer._merges, added))
        except TokenizerError as error:
            raise TokenizerError(f"{' + '.join(map(str, files))}: {error}") from None
        tokenizer.files = files
        return tokenizer

    def _byte_token_ids(self) -> list[int]:
        """Id of the single-byte token of each byte value 0..255 (list index = byte)."""
        missing = [char for char in bytes_to_unicode().values() if char not in self._vocab]
        if missing:
            raise TokenizerError(f"vocabulary lacks {len(missing)} of the 256 byte tokens, e.g. {missing[0]!r}")
        return [self._vocab[char] for char in bytes_to_unicode().values()]

    def _merge_table(self, merges: Sequence[tuple[str, str]]) -> tuple[dict[int, int], list[int]]:
        """The merges as one dict of plain ints, (left id, right id) -> (rank, merged id), each pair packed into
        one int as ``high << id_bits | low`` (rank 0 is the first merge); and the merged ids in rank order.

        Ints, not tuples: a table of 50,000 tuples is 100,000 objects more for Python's garbage collector to
        walk while the model loads. Every step runs in C (``map``) but the error path.
        """
        lefts = [left for left, _ in merges]
        rights = [right for _, right in merges]
        get = self._vocab.get
        left_ids, right_ids = list(map(get, lefts)), list(map(get, rights))
        merged_ids = list(map(get, map(operator.add, lefts, rights)))
        if None in left_ids or None in right_ids or None in merged_ids:
            rank = next(r for r, ids in enumerate(zip(left_ids, right_ids, merged_ids)) if None in ids)
            left, right = merges[rank]
            missing = next(t for t in (left, right, left + right) if t not in self._vocab)
            raise TokenizerError(f"merge {rank} ({left!r} {right!r}) uses {missing!r}, which is not in the vocab")
        bits = repeat(self._id_bits)
        pairs = list(map(operator.or_, map(operator.lshift, left_ids, bits), right_ids))
        ranked_merges = list(map(operator.or_, map(operator.lshift, range(len(merged_ids)), bits), merged_ids))
        # Built from the last merge to the first, so that a repeated pair keeps its first (best) rank.
        return dict(zip(reversed(pairs), reversed(ranked_merges))), merged_ids

    def _check_merges_reach_vocab(self, merged_ids: list[int], merge_count: int) -> None:
        """In byte-level BPE every token but the 256 bytes and the special tokens is the result of a merge: an
        empty or truncated merges file leaves many of them unreachable, and text silently encodes to bytes or
        to the wrong tokens. GPT-2's own files leave none (its 50000 merges yield the other 50000 tokens)."""
        others = self._id_to_token.keys() - {*self._byte_ids, *self.special_tokens.values()}
        unreachable = others - set(merged_ids)
        # Tolerate a few: a real vocab may carry an extra entry that transformers would not produce either,
        # e.g. a RoBERTa-style "<mask>" that no config names; a cut merges file leaves thousands.
        if len(unreachable) * 100 > len(others):
            raise TokenizerError(
                f"none of the {merge_count} merges yields {len(unreachable)} of the vocab's {len(others)} tokens "
                f"other than bytes and special tokens (e.g. {self._id_to_token[min(unreachable)]!r}): "
                "the merges are empty or cut short"
            )

    def _special_token_ids(self, tokens: Iterable[str]) -> dict[str, int]:
        """special token -> id, in the order given (duplicates once)."""
        ids = {}
        for token in tokens:
            if token not in self._vocab:
                raise TokenizerError(f"special token {token!r} is not in the vocabulary")
            ids[token] = self._vocab[token]
        return ids

    def _named_token_id(self, token: str | None, name: str) -> int | None:
        """Id of the bos/eos token ``token``; ``<|endoftext|>`` (or None if absent) when not named."""
        if token is None:
            return self._vocab.get(ENDOFTEXT)
        if token not in self._vocab:
            raise TokenizerError(f"{name} {token!r} is not in the vocabulary")
        return self._vocab[token]

    # ---------------------------------------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        """Text -> token ids (list of int). Special tokens written in the text map to their own id."""
        check_text(text, "encode")
        try:
            if self._special_pattern is None:
                return self._encode_ordinary(text)
            ids: list[int] = []
            # split() with a capturing group alternates ordinary text (even indices) and special tokens (odd).
            for index, part in enumerate(self._special_pattern.split(text)):
                if index % 2:
                    ids.append(self.special_tokens[part])
                else:
                    ids += self._encode_ordinary(part)
            return ids
        except UnicodeEncodeError:
            raise unencodable_text_error(text) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Several texts -> one id list each."""
        check_texts(texts)
        return [self.encode(text) for text in texts]

    def _encode_ordinary(self, text: str) -> list[int]:
        """Text without special tokens -> ids: pre-tokenize, then the cached BPE ids of every piece."""
        return list(chain.from_iterable(map(self._cache.__getitem__, _pretokenize(text))))

    def _bpe_piece(self, piece: str) -> tuple[int, ...]:
        """One pre-token -> token ids, by applying merges lowest rank first (leftmost first on ties).

        Positions form a linked list and candidate merges sit in a heap, so a long piece (a run of thousands
        of CJK characters or spaces) costs O(n log n), not O(n^2). A heap entry (merge, position) orders by the
        packed merge, which is by rank. It is stale when the pair at its position has changed since it was
        pushed; looking the pair up again drops those. Merged-away positions hold -1, which pairs with nothing.
        """
        symbols = list(map(self._byte_ids.__getitem__, piece.encode("utf-8")))
        merge_of, bits = self._merges.get, self._id_bits
        pairs = map(operator.or_, map(operator.lshift, symbols, repeat(bits)), symbols[1:])
        heap = [(m, pos) for pos, m in enumerate(map(merge_of, pairs)) if m is not None]
        if not heap:
            return tuple(symbols)
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        id_mask = (1 << bits) - 1
        end = len(symbols)
        following = list(range(1, end + 1))
        preceding = list(range(-1, end - 1))
        while heap:
            merge, left = pop(heap)
            right = following[left]
            if right == end or merge_of(symbols[left] << bits | symbols[right]) != merge:
                continue
            merged = merge & id_mask
            symbols[left], symbols[right] = merged, -1
            following[left] = after = following[right]
            if after != end:
                preceding[after] = left
                if (m := merge_of(merged << bits | symbols[after])) is not None:
                    push(heap, (m, left))
            before = preceding[left]
            if before >= 0 and (m := merge_of(symbols[before] << bits | merged)) is not None:
                push(heap, (m, before))
        return tuple([symbol for symbol in symbols if symbol >= 0])

    # ---------------------------------------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Token ids (one sequence) -> text. Invalid UTF-8 becomes U+FFFD. An id that is not an integer (or a
        row of a batch) or outside the vocab raises TokenizerError naming its position."""
        table = self._id_to_bytes_no_special if skip_special_tokens else self._id_to_bytes
        ids = id_list(ids)
        try:
            pieces = list(map(table.__getitem__, ids))
        except KeyError:
            raise self._bad_id_error(ids) from None
        return b"".join(pieces).decode("utf-8", errors="replace")

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token ids -> vocab entries, e.g. ``[15496, 995] -> ["Hello", "Ġworld"]``."""
        ids = id_list(ids)
        try:
            return list(map(self._id_to_token.__getitem__, ids))
        except KeyError:
            raise self._bad_id_error(ids) from None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for: a byte-level token may hold only part of a UTF-8 character
        (the server's logprobs show such a token as ``bytes:\\xNN``)."""
        token_id = as_id(token_id, "token_bytes")
        try:
            return self._id_to_bytes[token_id]
        except KeyError:
            raise self._bad_id_error([token_id]) from None

    def incremental_decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder:
        """A streaming decoder that agrees with ``decode(ids, skip_special_tokens)``."""
        table = self._id_to_bytes_no_special if skip_special_tokens else self._id_to_bytes
        return IncrementalDecoder(table, self.vocab_size)

    def _bad_id_error(self, ids: list[int]) -> TokenizerError:
        position, bad = next((p, i) for p, i in enumerate(ids) if i not in self._id_to_token)
        return TokenizerError(
            f"token id {bad!r} at position {position} is outside the vocabulary (valid ids: 0..{self.vocab_size - 1})"
        )

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"


# Pre-tokenization. The `regex` module is needed for \p{L} / \p{N}, but on ASCII text the standard `re` module
# with the same pattern spelled in ASCII classes gives the same pieces about twice as fast. Text can be cut at
# "split points" -- an ASCII whitespace character followed by a printable non-space ASCII one, cut before the
# whitespace: no piece crosses one, and the pieces on either side do not depend on the other side (the regex
# has no look-behind, and its only look-ahead, `(?!\S)`, sees the same whitespace either way). So the part of
# each long ASCII stretch between its first and last split points goes to `re`, the rest to `regex`.
_GPT2_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)
_WS = r"\t\n\x0b\x0c\r "  # the ASCII characters in regex's \s (Unicode White_Space)
_ASCII_SPLIT = re.compile(
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)
_FIRST_SPLIT_POINT = regex.compile(rf"[{_WS}][!-~]")
_LAST_SPLIT_POINT = regex.compile(rf"[{_WS}][!-~]", flags=regex.REVERSE)
# Switching engines costs a few calls, which short ASCII stretches (between the accents of European text, say)
# would not pay back.
_LONG_ASCII_STRETCH = re.compile(r"(?<![\x00-\x7f])[\x00-\x7f]{256,}")


def _pretokenize(text: str) -> list[str]:
    """GPT-2 pre-tokens of ``text`` (which holds no special tokens), e.g. "I'm here" -> ["I", "'m", " here"]."""
    if text.isascii():
        return _ASCII_SPLIT.findall(text)
    pieces: list[str] = []
    done = 0  # text[:done] is split; `done` is 0 or a split point
    for stretch in _LONG_ASCII_STRETCH.finditer(text):
        low, high = stretch.span()
        first = _FIRST_SPLIT_POINT.search(text, low, high)
        if first is None:
            continue
        # The start and the end of the text are split points too.
        start = 0 if low == 0 else first.start()
        end = len(text) if high == len(text) else _LAST_SPLIT_POINT.search(text, low, high).start()
        pieces += _GPT2_SPLIT.findall(text, done, start)
        pieces += _ASCII_SPLIT.findall(text, start, end)
        done = end
    pieces += _GPT2_SPLIT.findall(text, done)
    return pieces


# --------------------------------------------------------------------------------------------------- file readers
def _check_vocab(vocab: Any, file: Path, where: str) -> dict[str, int]:
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{file}: {where} must be a non-empty JSON object mapping token -> id")
    ids = vocab.values()
    if set(map(type, ids)) == {int} and min(ids) >= 0:  # all well (checked in C); else find the culprit
        return vocab
    bad = next((k for k, v in vocab.items() if not _is_id(v)), None)
    if bad is not None:
        raise TokenizerError(f"{file}: {where}: token {bad!r} has id {vocab[bad]!r}, expected a non-negative integer")
    return vocab


def _is_id(value: Any) -> bool:
    """A JSON integer >= 0 (json loads true/false as bools, which are ints to Python)."""
    return type(value) is int and value >= 0


def _read_vocab_json(file: Path) -> dict[str, int]:
    return _check_vocab(read_json_object(file), file, "vocabulary")


def _read_merges_txt(file: Path) -> list[tuple[str, str]]:
    """merges.txt: optional ``#version`` header, then one ``left right`` pair per line, best first."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise TokenizerError(f"{file}: not valid UTF-8 ({error})") from None
    start = 1 if lines and lines[0].startswith("#version") else 0
    pairs = list(filter(None, lines[start:]))  # blank lines skipped
    # When all is well, every step below runs in C: one space per line and no empty token.
    tokens = " ".join(pairs).split(" ")
    if len(tokens) != 2 * len(pairs) or "" in tokens or list(map(str.count, pairs, repeat(" "))).count(1) != len(pairs):
        for number, line in enumerate(lines[start:], start=start + 1):
            if line and not (len(parts := line.split(" ")) == 2 and all(parts)):
                raise TokenizerError(f"{file}, line {number}: expected two tokens separated by one space, got {line!r}")
    return list(zip(tokens[0::2], tokens[1::2]))


def _read_tokenizer_json(file: Path) -> tuple[dict[str, int], list[tuple[str, str]], list[str]]:
    """tokenizer.json -> (vocab, merges, added tokens); added tokens also get their ids in vocab."""
    data = read_json_object(file)
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        raise TokenizerError(f"{file}: expected a BPE model under 'model'")
    vocab = dict(_check_vocab(model.get("vocab"), file, "model.vocab"))
    raw_merges = model.get("merges")
    if not isinstance(raw_merges, list):
        raise TokenizerError(f"{file}: model.merges must be a list")
    merges = [_parse_json_merge(entry, file, index) for index, entry in enumerate(raw_merges)]
    added = []
    for entry in data.get("added_tokens") or []:
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str) and _is_id(entry.get("id"))):
            raise TokenizerError(f"{file}: added_tokens entry {entry!r} lacks a string 'content' and an integer 'id'")
        vocab[entry["content"]] = entry["id"]
        added.append(entry["content"])
    return vocab, merges, added


def _parse_json_merge(entry: Any, file: Path, index: int) -> tuple[str, str]:
    parts = entry.split(" ") if isinstance(entry, str) else entry
    if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
        raise TokenizerError(f"{file}: model.merges[{index}] = {entry!r} is not 'a b' or ['a', 'b']")
    return parts[0], parts[1]


_NAMED_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _read_named_special_tokens(directory: Path, vocab: Mapping[str, int]) -> dict[str, str]:
    """bos/eos/unk/pad token strings from special_tokens_map.json, overridden by tokenizer_config.json."""
    named: dict[str, str] = {}
    for file in (directory / SPECIAL_TOKENS_MAP, directory / TOKENIZER_CONFIG):
        if not file.is_file():
            continue
        config = read_json_object(file)
        for key in _NAMED_TOKEN_KEYS:
            value = config.get(key)
            token = value.get("content") if isinstance(value, dict) else value
            if token is None:
                continue
            if not isinstance(token, str):
                raise TokenizerError(f"{file}: {key} must be a string or an object with 'content', got {value!r}")
            if token not in vocab:
                raise TokenizerError(f"{file}: {key} {token!r} is not in the vocabulary")
            named[key] = token
    return named
