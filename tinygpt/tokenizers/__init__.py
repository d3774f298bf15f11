"""Tokenizers written from scratch: GPT-2 byte-level BPE and BERT WordPiece, plus ``Tokenizer.from_pretrained``
which picks the right one for a model directory."""

from __future__ import annotations

import os
from pathlib import Path

from .bpe import BPETokenizer, IncrementalDecoder
from .files import read_json_object
from .wordpiece import WordPieceIncrementalDecoder, WordPieceTokenizer

__all__ = ["BPETokenizer", "IncrementalDecoder", "Tokenizer", "WordPieceIncrementalDecoder", "WordPieceTokenizer"]

_BPE_CLASSES = ("GPT2Tokenizer", "GPT2TokenizerFast")
_WORDPIECE_CLASSES = ("BertTokenizer", "BertTokenizerFast")


def _configured_class(directory: Path) -> str | None:
    """tokenizer_config.json's "tokenizer_class", if the file exists and names one."""
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    tokenizer_class = read_json_object(config_file).get("tokenizer_class")
    return tokenizer_class if isinstance(tokenizer_class, str) else None


def _has_bpe_tokenizer_json(directory: Path) -> bool:
    json_file = directory / "tokenizer.json"
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
        Raises FileNotFoundError listing what was looked for when none of these is there."""
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        tokenizer_class = _configured_class(directory)
        if tokenizer_class in _BPE_CLASSES:
            return BPETokenizer.from_pretrained(directory)
        if tokenizer_class in _WORDPIECE_CLASSES:
            return WordPieceTokenizer.from_pretrained(directory)
        has_gpt2_files = (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
        if has_gpt2_files or _has_bpe_tokenizer_json(directory):
            return BPETokenizer.from_pretrained(directory)
        if (directory / "vocab.txt").is_file():
            return WordPieceTokenizer.from_pretrained(directory)
        raise FileNotFoundError(
            f"{directory}: found no tokenizer. Looked for tokenizer_config.json naming tokenizer_class "
            f"{' / '.join(_BPE_CLASSES + _WORDPIECE_CLASSES)}, vocab.json + merges.txt or tokenizer.json with a "
            "BPE model (GPT-2 BPE), and vocab.txt (BERT WordPiece)"
        )
