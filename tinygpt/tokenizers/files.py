"""The files a tokenizer is read from, by name, and reading their JSON with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from .. import jsonfile
from ..errors import TokenizerError

VOCAB_JSON = "vocab.json"  # GPT-2 BPE: token -> id
MERGES_TXT = "merges.txt"  # GPT-2 BPE: the merges, best first
TOKENIZER_JSON = "tokenizer.json"  # Hugging Face fast-tokenizer format: vocab, merges and added tokens in one file
VOCAB_TXT = "vocab.txt"  # BERT WordPiece: one token per line, id = line number
TOKENIZER_CONFIG = "tokenizer_config.json"  # tokenizer_class, special tokens, casing options
SPECIAL_TOKENS_MAP = "special_tokens_map.json"  # special tokens (tokenizer_config.json's take precedence)

# Every file a tokenizer may be read from: what a hub download fetches for it.
TOKENIZER_FILES = (VOCAB_JSON, MERGES_TXT, TOKENIZER_JSON, VOCAB_TXT, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
# A model directory holding any of these ships a tokenizer: one that cannot be loaded from them is an error,
# not a model without a tokenizer.
VOCABULARY_FILES = (VOCAB_JSON, TOKENIZER_JSON, VOCAB_TXT)
# The sets of files a tokenizer is read from, for messages.
TOKENIZER_FILE_SETS = f"{VOCAB_JSON} + {MERGES_TXT}, {TOKENIZER_JSON} or {VOCAB_TXT}"


def has_tokenizer(directory: Path) -> bool:
    """Whether a model directory ships a tokenizer (any of VOCABULARY_FILES)."""
    return any((directory / name).is_file() for name in VOCABULARY_FILES)


def read_json_object(path: Path) -> dict:
    """The JSON object in a tokenizer file; TokenizerError naming the file if it is not one."""
    return jsonfile.read_json_object(path, TokenizerError)
