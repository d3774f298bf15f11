"""WordPiece tokenizer for BERT vocabularies (vocab.txt), e.g. the Chinese BERT vocab of
uer/gpt2-distil-chinese-cluecorpussmall.

Encoding reproduces transformers' ``BertTokenizer`` (in transformers 5 that is the `tokenizers` pipeline:
special-token split of the raw text, ``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece`` model), so the
character classes below follow that pipeline rather than Google's original Python code where the two differ
(no NFC, unassigned code points kept, a different last CJK extension range, vocab lines right-trimmed).

Known divergence: the reference classifies characters with Unicode 8-era tables (and lowercases with Rust's
newer ones), we with this Python's ``unicodedata``. Code points added or recategorised in between tokenize
differently: 119 of them (punctuation and format characters of scripts such as Newa, Adlam, Sogdian), 504
when accents are stripped (their nonspacing marks too), plus 55 letters only Unicode 15+ knows how to
lowercase. CJK, Latin, Greek, Cyrillic, kana, Hangul, emoji and common punctuation all agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from ..errors import MissingFileError, TokenizerError
from .files import SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, VOCAB_TXT, read_json_object
from .inputs import as_id, check_text, check_texts, id_list, unencodable_text_error

# Code point ranges that BertNormalizer surrounds with spaces ("Chinese characters"). The reference's table
# starts the last extension block at U+2B920, not U+2B820 as Google's BERT does; we follow the reference.
_CJK_IDEOGRAPH_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_MAX_CHARS_PER_WORD = 100
# Unicode White_Space, which the reference trims from the end of each vocab.txt line (str.isspace would also
# count U+001C..U+001F).
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
# Cached words before the cache is emptied, so that adversarial text cannot grow it without bound.
_MAX_CACHED_WORDS = 100_000
_CONTINUATION = "##"
_SPECIAL_TOKEN_DEFAULTS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
# The `tokenizers` WordPiece decoder's cleanup, applied to each token (with its leading space) on its own.
_CLEANUP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def _is_cjk_ideograph(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_IDEOGRAPH_RANGES)


def _is_control(char: str) -> bool:
    """Cc/Cf/Co/Cs except tab, newline and carriage return (those count as whitespace). Unassigned code
    points (Cn) are kept, as the reference does (Google's BERT drops them)."""
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs")


def _is_whitespace(char: str) -> bool:
    return char in "\t\n\r" or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _is_punctuation(char: str) -> bool:
    """ASCII symbols such as $ + < = > ^ ` | ~ count too, as in BERT; otherwise any Unicode P* character."""
    return (char.isascii() and not char.isalnum() and char.isprintable() and char != " ") or (
        unicodedata.category(char).startswith("P")
    )


def _is_wide_punctuation(char: str) -> bool:
    """Full-width or CJK punctuation such as ，。、：「」（）."""
    return unicodedata.category(char).startswith("P") and unicodedata.east_asian_width(char) in ("W", "F")


def _cleaned_char(char: str, pad_cjk: bool) -> str:
    """BertNormalizer's clean_text and handle_chinese_chars steps for one character. A lone surrogate has no
    UTF-8 form, so the reference cannot be given one: it raises here, where clean_text would drop it."""
    if unicodedata.category(char) == "Cs":
        raise UnicodeEncodeError("utf-8", char, 0, 1, "surrogates not allowed")
    if char in ("\x00", "\ufffd") or _is_control(char):
        return ""
    if _is_whitespace(char):
        return " "
    if pad_cjk and _is_cjk_ideograph(char):
        return f" {char} "
    return char


def _lowercased_padded_char(char: str, lowercase: bool) -> str:
    """Lowercase one character on its own (no final-sigma context, like the reference), then put spaces
    around punctuation so that ``str.split`` isolates it, as BertPreTokenizer does."""
    chars = char.lower() if lowercase else char
    return "".join(f" {c} " if _is_punctuation(c) else c for c in chars)


class _CharTable(dict):
    """A ``str.translate`` table that fills itself in on first sight of each character."""

    def __init__(self, map_char):
        super().__init__()
        self._map_char = map_char

    def __missing__(self, code: int) -> str:
        mapped = self._map_char(chr(code))
        self[code] = mapped
        return mapped


def _cleanup(text: str) -> str:
    for old, new in _CLEANUP_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def _glued_without_space(left: str, right: str) -> bool:
    """Whether the readable (non-spaced) decode joins two tokens whose boundary characters are ``left`` and
    ``right`` without a space: Chinese text has no spaces next to ideographs or full-width punctuation, and a
    run of punctuation such as ……, —— or 。” is written solid."""
    if not left or not right:
        return False
    if _is_cjk_ideograph(left) or _is_cjk_ideograph(right):
        return True
    if _is_wide_punctuation(left) or _is_wide_punctuation(right):
        return True
    both_punctuation = _is_punctuation(left) and _is_punctuation(right)
    return both_punctuation and not (left.isascii() and right.isascii())


def _read_vocab_lines(path: Path) -> list[str]:
    """vocab.txt as the reference reads it: lines split on "\n" only, trailing White_Space trimmed."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TokenizerError(f"{path}: not valid UTF-8 ({error})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise TokenizerError(f"{path} is empty")
    return [line.rstrip(_WHITE_SPACE) for line in lines]


def _token_content(value, path: Path, key: str) -> str | None:
    """A special token as saved by transformers: a plain string or an AddedToken dict with "content"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{path}: {key!r} must be a string or an object with a 'content' string, got {value!r}")


def _optional_bool(config: dict, key: str, default: bool | None, path: Path) -> bool | None:
    value = config.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise TokenizerError(f"{path}: {key!r} must be true, false or null, got {value!r}")
    return value


class WordPieceIncrementalDecoder:
    """Turns token ids into text one at a time; the pieces joined equal ``WordPieceTokenizer.decode`` of the
    same ids with the same options. Each piece carries the separator *before* its token, which is known once
    that token arrives, so nothing is held back and ``flush`` returns "" (it exists for the common interface)."""

    def __init__(self, tokenizer: WordPieceTokenizer, skip_special_tokens: bool = False, spaced: bool = False):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._spaced = spaced
        self._is_first = True
        self._last_char = ""
        self._position = 0

    def push(self, token_id: int) -> str:
        """Text for one more token id (int); raises TokenizerError for a non-integer or an id outside the
        vocabulary."""
        token = self._tokenizer._token_at(self._position, token_id)
        self._position += 1
        if self._skip_special_tokens and token_id in self._tokenizer._special_ids:
            return ""
        text = _cleanup(self._joined(token))
        self._is_first = False
        if text:
            self._last_char = text[-1]
        return text

    def flush(self) -> str:
        return ""

    def _joined(self, token: str) -> str:
        """The token with its separator: continuation pieces lose "##" and attach, others get a space."""
        if self._is_first:
            return token
        if token.startswith(_CONTINUATION):
            return token[len(_CONTINUATION) :]
        if not self._spaced and _glued_without_space(self._last_char, token[:1]):
            return token
        return " " + token


class WordPieceTokenizer:
    """BERT WordPiece tokenizer over a vocab.txt vocabulary (one token per line, id = line number)."""

    def __init__(
        self,
        vocab: list[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        pad_token: str | None = "[PAD]",
        unk_token: str | None = "[UNK]",
        cls_token: str | None = "[CLS]",
        sep_token: str | None = "[SEP]",
        mask_token: str | None = "[MASK]",
    ):
        """``vocab``: the tokens in id order. ``strip_accents=None`` follows ``do_lower_case``, as in BERT.
        Special tokens absent from ``vocab`` get id None and are not matched in text."""
        if not vocab:
            raise TokenizerError("WordPiece vocabulary is empty")
        self._id_to_token = list(vocab)
        # Like the reference, a token listed twice maps to its last line.
        self._token_to_id = {token: index for index, token in enumerate(self._id_to_token)}
        self._longest_token = max(len(token) for token in self._id_to_token)
        self._strip_accents = do_lower_case if strip_accents is None else strip_accents
        self._clean_table = _CharTable(lambda char: _cleaned_char(char, tokenize_chinese_chars))
        self._mark_table = _CharTable(lambda char: "" if unicodedata.category(char) == "Mn" else char)
        self._split_table = _CharTable(lambda char: _lowercased_padded_char(char, do_lower_case))
        self._word_cache: dict[str, list[int]] = {}

        self.vocab_size = len(self._id_to_token)
        self.pad_token_id = self._token_to_id.get(pad_token)
        self.unk_token_id = self._token_to_id.get(unk_token)
        self.cls_token_id = self._token_to_id.get(cls_token)
        self.sep_token_id = self._token_to_id.get(sep_token)
        self.mask_token_id = self._token_to_id.get(mask_token)
        self.bos_token_id = self.cls_token_id
        # The published uer config's eos id (50256) lies outside its 21128-token vocab; [SEP] is what ends a text.
        self.eos_token_id = self.sep_token_id
        self.special_tokens = {
            token: self._token_to_id[token]
            for token in (pad_token, unk_token, cls_token, sep_token, mask_token)
            if token in self._token_to_id
        }
        self._special_ids = frozenset(self.special_tokens.values())
        self._special_pattern = self._compile_special_pattern(self.special_tokens)
        self.files: tuple[Path, ...] = ()  # what from_pretrained read the vocabulary from, for messages

    @classmethod
    def from_pretrained(cls, path: str | Path) -> WordPieceTokenizer:
        """Load from a directory holding vocab.txt, plus optional tokenizer_config.json (do_lower_case,
        strip_accents, tokenize_chinese_chars, *_token) and special_tokens_map.json (overrides *_token)."""
        directory = Path(path)
        if not directory.is_dir():
            raise MissingFileError(f"tokenizer directory not found: {directory}")
        vocab_path = directory / VOCAB_TXT
        if not vocab_path.is_file():
            raise MissingFileError(f"{vocab_path} not found: a WordPiece tokenizer needs vocab.txt")
        vocab = _read_vocab_lines(vocab_path)

        config_path = directory / TOKENIZER_CONFIG
        config = read_json_object(config_path) if config_path.is_file() else {}
        tokens = {key: _token_content(config.get(key, default), config_path, key)
                  for key, default in _SPECIAL_TOKEN_DEFAULTS.items()}
        map_path = directory / SPECIAL_TOKENS_MAP
        if map_path.is_file():
            special_map = read_json_object(map_path)
            tokens.update({key: _token_content(special_map[key], map_path, key)
                           for key in _SPECIAL_TOKEN_DEFAULTS if key in special_map})
        tokenizer = cls(
            vocab,
            do_lower_case=_optional_bool(config, "do_lower_case", True, config_path),
            strip_accents=_optional_bool(config, "strip_accents", None, config_path),
            tokenize_chinese_chars=_optional_bool(config, "tokenize_chinese_chars", True, config_path),
            **tokens,
        )
        tokenizer.files = (vocab_path,)
        return tokenizer

    # ----------------------------------------------------------------------------------------- encoding

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids (list of int) for ``text``; ``add_special_tokens`` wraps them as [CLS] ... [SEP]."""
        check_text(text, "encode")
        ids: list[int] = []
        try:
            for segment, is_special in self._split_on_special_tokens(text):
                if is_special:
                    ids.append(self.special_tokens[segment])
                else:
                    for word in self._basic_tokenize(segment):
                        ids.extend(self._word_ids(word))
        except UnicodeEncodeError:  # from _cleaned_char, on a lone surrogate
            raise unencodable_text_error(text) from None
        if add_special_tokens:
            ids = [self._required_id("cls_token_id", "[CLS]"), *ids, self._required_id("sep_token_id", "[SEP]")]
        return ids

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        check_texts(texts)
        return [self.encode(text, add_special_tokens) for text in texts]

    @staticmethod
    def _compile_special_pattern(special_tokens: dict[str, int]) -> re.Pattern | None:
        if not special_tokens:
            return None
        # Longest first, so that at each position the longest special token wins.
        alternatives = sorted(special_tokens, key=len, reverse=True)
        return re.compile("|".join(re.escape(token) for token in alternatives))

    def _split_on_special_tokens(self, text: str) -> list[tuple[str, bool]]:
        """(segment, is_special_token) pairs covering ``text``; special tokens match the raw text, before any
        normalization, exactly as written."""
        if self._special_pattern is None:
            return [(text, False)]
        segments = []
        start = 0
        for match in self._special_pattern.finditer(text):
            segments.append((text[start : match.start()], False))
            segments.append((match.group(), True))
            start = match.end()
        segments.append((text[start:], False))
        return segments

    def _basic_tokenize(self, text: str) -> list[str]:
        """BertNormalizer (clean, pad CJK, strip accents, lowercase) then BertPreTokenizer (split on
        whitespace, isolate punctuation)."""
        text = text.translate(self._clean_table)
        if self._strip_accents:
            text = unicodedata.normalize("NFD", text).translate(self._mark_table)
        return text.translate(self._split_table).split(" ")

    def _word_ids(self, word: str) -> list[int]:
        if not word:
            return []
        ids = self._word_cache.get(word)
        if ids is None:
            if len(self._word_cache) >= _MAX_CACHED_WORDS:
                self._word_cache.clear()
            ids = self._wordpiece(word)
            self._word_cache[word] = ids
        return ids

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first split of one word into vocab pieces; [UNK] if any part has no match or
        the word is longer than 100 characters."""
        if len(word) > _MAX_CHARS_PER_WORD:
            return [self._required_id("unk_token_id", "[UNK]")]
        ids = []
        start = 0
        while start < len(word):
            prefix = _CONTINUATION if start > 0 else ""
            for end in range(min(len(word), start + self._longest_token), start, -1):
                token_id = self._token_to_id.get(prefix + word[start:end])
                if token_id is not None:
                    break
            else:
                return [self._required_id("unk_token_id", "[UNK]")]
            ids.append(token_id)
            start = end
        return ids

    def _required_id(self, attribute: str, description: str) -> int:
        token_id = getattr(self, attribute)
        if token_id is None:
            raise TokenizerError(f"the vocabulary has no {description} token, which this text needs ({attribute})")
        return token_id

    # ----------------------------------------------------------------------------------------- decoding

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Vocabulary strings for ``ids``; TokenizerError names the position of an id outside [0, vocab_size)."""
        return [self._token_at(position, token_id) for position, token_id in enumerate(id_list(ids))]

    def _token_at(self, position: int, token_id: int) -> str:
        """The token string of ``token_id``, found at ``position`` of the caller's id sequence."""
        index = as_id(token_id, f"position {position}")
        if not 0 <= index < self.vocab_size:
            raise TokenizerError(f"token id {index} at position {position} is outside the vocabulary "
                                 f"(size {self.vocab_size})")
        return self._id_to_token[index]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, spaced: bool = False) -> str:
        """Text for one sequence of ``ids`` (ints in [0, vocab_size)); a batch is decoded one row at a time.

        ``spaced=True`` gives exactly transformers' BertTokenizer.decode: "##" pieces joined to the previous
        token, a space before every other token, then the reference's per-token cleanup (" ." -> "." etc.).
        The default, readable form differs only in leaving out the space where either side of it is a CJK
        ideograph or full-width/CJK punctuation, or both sides are punctuation and one is non-ASCII (……, 。”);
        Latin words and numbers keep single spaces."""
        decoder = self.incremental_decoder(skip_special_tokens, spaced)
        return "".join(decoder.push(token_id) for token_id in id_list(ids)) + decoder.flush()

    def incremental_decoder(self, skip_special_tokens: bool = False, spaced: bool = False
                            ) -> WordPieceIncrementalDecoder:
        return WordPieceIncrementalDecoder(self, skip_special_tokens, spaced)
