"""Tokenizer.from_pretrained picks BPE or WordPiece from tokenizer_config.json or from the files present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tinygpt.errors import TokenizerError
from tinygpt.tokenizers import (
    TOKENIZER_FILE_SETS,
    TOKENIZER_FILES,
    BPETokenizer,
    Tokenizer,
    WordPieceTokenizer,
    has_tokenizer,
    load_model_tokenizer,
    prompt_rules,
)

transformers = pytest.importorskip("transformers")

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "你", "好", "hello", "world", "##s", ",", "!"]
TEXT = "Hello worlds, 你好!"


def write_bert_files(directory: Path) -> Path:
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in BERT_VOCAB), encoding="utf-8")
    return directory


def write_config(directory: Path, tokenizer_class: str) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}),
                                                     encoding="utf-8")


@pytest.fixture
def gpt2_dir(gpt2_tokenizer_dir, tmp_path) -> Path:
    """A private copy of the real GPT-2 vocab.json + merges.txt, free to add files to."""
    return Path(shutil.copytree(gpt2_tokenizer_dir, tmp_path / "gpt2"))


def test_gpt2_files_give_bpe(gpt2_dir):
    tokenizer = Tokenizer.from_pretrained(gpt2_dir)
    assert isinstance(tokenizer, BPETokenizer)
    assert tokenizer.vocab_size == 50257


def test_vocab_txt_gives_wordpiece(tmp_path):
    tokenizer = Tokenizer.from_pretrained(write_bert_files(tmp_path))
    assert isinstance(tokenizer, WordPieceTokenizer)
    assert tokenizer.vocab_size == len(BERT_VOCAB)


def test_tokenizer_json_with_bpe_model_gives_bpe(gpt2_dir, tmp_path):
    vocab = json.loads((gpt2_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (gpt2_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]  # all: a cut list is refused
    directory = tmp_path / "json_only"
    directory.mkdir()
    model = {"type": "BPE", "vocab": vocab, "merges": merges}
    (directory / "tokenizer.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    assert isinstance(Tokenizer.from_pretrained(directory), BPETokenizer)


def test_tokenizer_json_with_wordpiece_model_gives_wordpiece(tmp_path):
    directory = write_bert_files(tmp_path)
    model = {"type": "WordPiece", "vocab": {token: i for i, token in enumerate(BERT_VOCAB)}}
    (directory / "tokenizer.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    assert isinstance(Tokenizer.from_pretrained(directory), WordPieceTokenizer)


@pytest.mark.parametrize(
    "tokenizer_class, expected",
    [
        ("BertTokenizer", WordPieceTokenizer),
        ("BertTokenizerFast", WordPieceTokenizer),
        ("GPT2Tokenizer", BPETokenizer),
        ("GPT2TokenizerFast", BPETokenizer),
    ],
)
def test_tokenizer_class_decides_when_both_kinds_of_files_are_present(gpt2_dir, tokenizer_class, expected):
    write_bert_files(gpt2_dir)
    assert isinstance(Tokenizer.from_pretrained(gpt2_dir), BPETokenizer)  # files alone: BPE comes first
    write_config(gpt2_dir, tokenizer_class)
    assert isinstance(Tokenizer.from_pretrained(gpt2_dir), expected)


@pytest.mark.parametrize("tokenizer_class", ["BertTokenizer", "GPT2Tokenizer"])
def test_chosen_tokenizer_encodes_like_transformers_auto_tokenizer(gpt2_dir, tokenizer_class):
    """The same directory and config through transformers' AutoTokenizer give the same ids."""
    write_bert_files(gpt2_dir)
    write_config(gpt2_dir, tokenizer_class)
    reference = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    assert type(reference).__name__ == tokenizer_class
    assert Tokenizer.from_pretrained(gpt2_dir).encode(TEXT) == reference.encode(TEXT, add_special_tokens=False)


def test_unrecognised_tokenizer_class_falls_back_to_files(tmp_path):
    directory = write_bert_files(tmp_path)
    write_config(directory, "PreTrainedTokenizerFast")
    assert isinstance(Tokenizer.from_pretrained(directory), WordPieceTokenizer)


def test_named_class_without_its_files_names_the_missing_file(gpt2_dir):
    write_config(gpt2_dir, "BertTokenizer")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        Tokenizer.from_pretrained(gpt2_dir)


def test_empty_directory_error_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        Tokenizer.from_pretrained(tmp_path)
    message = str(error.value)
    for looked_for in ["tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.json", "vocab.txt"]:
        assert looked_for in message


def test_missing_directory_and_broken_config_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    write_bert_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: not a valid UTF-8 JSON file"):
        Tokenizer.from_pretrained(tmp_path)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused_naming_the_files(tiny_model_dir, gpt2_dir,
                                                                                  tmp_path):
    """GPT-2's tokenizer beside a 1000-token model would make ids past the embeddings: refused at load."""
    from tinygpt import Model

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "m")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_dir / name, model_dir / name)
    with pytest.raises(TokenizerError, match=r"m/vocab\.json \+ .*m/merges\.txt: the tokenizer has 50257 tokens but "
                                             r"config\.json's vocab_size is 1000 \(.*m/config\.json\)"):
        Model.from_pretrained(model_dir)


def test_load_model_tokenizer_is_none_only_without_vocabulary_files(tmp_path, gpt2_dir):
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    assert not has_tokenizer(tmp_path) and load_model_tokenizer(tmp_path, 1000) is None
    write_bert_files(tmp_path)
    assert isinstance(load_model_tokenizer(tmp_path, len(BERT_VOCAB)), WordPieceTokenizer)
    assert load_model_tokenizer(gpt2_dir, 50257).files == (gpt2_dir / "vocab.json", gpt2_dir / "merges.txt")


def test_a_vocabulary_file_that_cannot_be_loaded_is_an_error_not_a_model_without_tokenizer(tmp_path):
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")  # merges.txt is missing
    with pytest.raises(FileNotFoundError, match="found no tokenizer"):
        load_model_tokenizer(tmp_path, 1000)


def test_hub_downloads_every_tokenizer_file():
    from fnmatch import fnmatchcase

    from tinygpt.hub import NEEDED_FILES

    for name in TOKENIZER_FILES:
        assert any(fnmatchcase(name, pattern) for pattern in NEEDED_FILES), name
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "vocab.txt"):
        assert name in TOKENIZER_FILE_SETS


def test_prompt_rules(tmp_path, gpt2_dir):
    """A BERT-vocabulary model's prompts are [CLS] text and end at [SEP]; a BPE model's are bare text and end at
    config.json's eos when it is in the vocabulary, else at the tokenizer's."""
    wordpiece = Tokenizer.from_pretrained(write_bert_files(tmp_path))
    assert prompt_rules(wordpiece, 50256, 21128) == ([BERT_VOCAB.index("[CLS]")], BERT_VOCAB.index("[SEP]"))
    bpe = Tokenizer.from_pretrained(gpt2_dir)
    assert prompt_rules(bpe, 7, 50257) == ([], 7)
    assert prompt_rules(bpe, 50257, 50257) == ([], 50256)  # outside the vocabulary: <|endoftext|>
    assert prompt_rules(None, None, 1000) == ([], None)


@pytest.mark.parametrize("text, position", [("a\udcffb", 1), ("\ud800", 0), ("你好 [SEP] x\udfff", 10)])
def test_both_tokenizers_refuse_a_lone_surrogate_alike(tmp_path, gpt2_dir, text, position):
    """Fuzzing found WordPiece dropping it: encode('a\\udcffb') == encode('ab'), so undecodable stdin bytes
    (read with surrogateescape) generated from [CLS] alone. There is no UTF-8 for it, so no tokens."""
    wordpiece = Tokenizer.from_pretrained(write_bert_files(tmp_path))
    messages = set()
    for tokenizer in (wordpiece, Tokenizer.from_pretrained(gpt2_dir)):
        with pytest.raises(TokenizerError, match=rf"text is not valid Unicode: lone surrogate '\\ud[89a-f]\w\w' at "
                                                 rf"position {position}$") as error:
            tokenizer.encode(text)
        messages.add(str(error.value))
    assert len(messages) == 1
    assert wordpiece.encode("ab") == wordpiece.encode("a\ufffdb")  # U+FFFD, a real character, is still dropped


def test_the_tokenizers_run_without_numpy(gpt2_tokenizer_dir):
    """`tinygpt tokenize` reads no weights: loading and running a tokenizer must not import NumPy (a third of
    that command's time)."""
    import subprocess
    import sys

    code = ("import sys; from tinygpt.tokenizers import Tokenizer; "
            f"print(Tokenizer.from_pretrained({str(gpt2_tokenizer_dir)!r}).encode('Hello world'), "
            "'numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["[15496,", "995]", "False"]
