"""Tokenizers written from scratch: GPT-2 byte-level BPE and BERT WordPiece, plus ``Tokenizer.from_pretrained``
which picks the right one for a directory, and the rules a model directory's tokenizer sets: which files it is
read from (``files``), that it fits the model's vocabulary, and how a prompt starts and ends (``prompt_rules``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingFileError, TokenizerError
from .bpe import BPETokenizer, IncrementalDecoder
from .files import (
    MERGES_TXT,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE_SETS,
    TOKENIZER_FILES,
    TOKENIZER_JSON,
    VOCAB_JSON,
    VOCAB_TXT,
    has_tokenizer,
    read_json_object,
)
from .wordpiece import WordPieceIncrementalDecoder, WordPieceTokenizer

__all__ = [
    "BPETokenizer", "IncrementalDecoder", "TOKENIZER_FILES", "TOKENIZER_FILE_SETS", "Tokenizer",
    "WordPieceIncrementalDecoder", "WordPieceTokenizer", "has_tokenizer", "load_model_tokenizer", "prompt_rules",
]

_BPE_CLASSES = ("GPT2Tokenizer", "GPT2TokenizerFast")
_WORDPIECE_CLASSES = ("BertTokenizer", "BertTokenizerFast")


def _configured_class(directory: Path) -> str | None:
    """tokenizer_config.json's "tokenizer_class", if the file exists and names one."""
    config_file = directory / TOKENIZER_CONFIG
    if not config_file.is_file():
        return None
    tokenizer_class = read_json_object(config_file).get("tokenizer_class")
    return tokenizer_class if isinstance(tokenizer_class, str) else None


def _has_bpe_tokenizer_json(directory: Path) -> bool:
    json_file = directory / TOKENIZER_JSON
    if not json_file.is_file():
        return False
    model = read_json_object(json_file).get("model")
    return isinstance(model, dict) and model.get("type") == "BPE"


class Tokenizer:
    """Namespace for ``from_pretrained``, which loads whichever tokenizer a directory holds."""

    @staticmethod
    def from_pretrained(path: str | os.PathLike) -> BPETokenizer | WordPieceTokenizer:
        """Load the tokenizer in ``path``. tokenizer_config.json's tokenizer_class decides when it is
        GPT2Tokenizer[Fast] (BPE) or BertTokenizer[Fast] (WordPiece); otherwise the files do: vocab.json +
        merges.txt, or tokenizer.json with a BPE model -> BPETokenizer; vocab.txt -> WordPieceTokenizer.
        Raises MissingFileError (a FileNotFoundError) listing what was looked for when none of these is there, TokenizerError
        naming the file that cannot be read."""
        directory = Path(path)
        if not directory.is_dir():
            raise MissingFileError(f"tokenizer directory not found: {directory}")
        tokenizer_class = _configured_class(directory)
        if tokenizer_class in _BPE_CLASSES:
            return BPETokenizer.from_pretrained(directory)
        if tokenizer_class in _WORDPIECE_CLASSES:
            return WordPieceTokenizer.from_pretrained(directory)
        has_gpt2_files = (directory / VOCAB_JSON).is_file() and (directory / MERGES_TXT).is_file()
        if has_gpt2_files or _has_bpe_tokenizer_json(directory):
            return BPETokenizer.from_pretrained(directory)
        if (directory / VOCAB_TXT).is_file():
            return WordPieceTokenizer.from_pretrained(directory)
        raise MissingFileError(
            f"{directory}: found no tokenizer. Looked for {TOKENIZER_CONFIG} naming tokenizer_class "
            f"{' / '.join(_BPE_CLASSES + _WORDPIECE_CLASSES)}, {VOCAB_JSON} + {MERGES_TXT} or {TOKENIZER_JSON} "
            f"with a BPE model (GPT-2 BPE), and {VOCAB_TXT} (BERT WordPiece)"
        )


def load_model_tokenizer(directory: Path, vocab_size: int) -> BPETokenizer | WordPieceTokenizer | None:
    """The tokenizer a model directory ships (None when it has no tokenizer files), checked to fit the model:
    ``vocab_size`` is config.json's. A tokenizer with more tokens would make ids past the embeddings."""
    if not has_tokenizer(directory):
        return None
    tokenizer = Tokenizer.from_pretrained(directory)
    if tokenizer.vocab_size > vocab_size:
        files = " + ".join(map(str, tokenizer.files))
        raise TokenizerError(f"{files}: the tokenizer has {tokenizer.vocab_size} tokens but config.json's "
                             f"vocab_size is {vocab_size} ({directory / 'config.json'}): they do not belong to "
                             "the same model")
    return tokenizer


def prompt_rules(tokenizer, eos_token_id: int | None, vocab_size: int) -> tuple[list[int], int | None]:
    """(ids every prompt starts with, default end-of-text id) for a model whose config.json gives
    ``eos_token_id`` and ``vocab_size``, and its tokenizer (None if it has none).

    A BERT-vocabulary model (WordPiece with [CLS]/[SEP], like uer's Chinese GPT-2) was trained on lines
    laid out as ``[CLS] text [SEP]``: a prompt starts with [CLS], and [SEP] ends the text. Such configs
    inherit GPT-2's eos id 50256, which is not even in their vocabulary. A GPT-2 BPE model takes bare text
    and ends at its config's eos (<|endoftext|>).
    """
    cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls_id is not None and sep_id is not None:
        return [cls_id], sep_id
    if eos_token_id is not None and 0 <= eos_token_id < vocab_size:
        return [], eos_token_id
    return [], getattr(tokenizer, "eos_token_id", None)
