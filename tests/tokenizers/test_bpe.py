"""tinygpt's GPT-2 BPE tokenizer against transformers' GPT2Tokenizer and tiktoken.

Both references are built offline from the same real GPT-2 files as ours (see conftest.py), and each fixture
checks that its reference really holds GPT-2's vocabulary, so that no comparison can pass against an empty one.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.errors import TokenizerError
from tinygpt.tokenizers import bpe
from tinygpt.tokenizers.bpe import BPETokenizer

VOCAB_SIZE = 50257
ENDOFTEXT_ID = 50256
HELLO_WORLD_IDS = [15496, 995]  # "Hello world" in GPT-2, as published by OpenAI and Hugging Face

# One entry per kind of text the tokenizer must get right; ids name them in test reports.
CORPUS = {
    "prose": (
        "The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers; the third "
        "introduced special relativity. \"Quoted,\" she said -- and then (parenthetically) left."
    ),
    "code": (
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)  # tabs!\n\n"
        "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", a[i] << 2); }\r\n"
        "x = {'key': [1, 2.5e-3, None]}; y = x['key'][::-1]  ;;  z=>{}\n"
    ),
    "whitespace": "a  b   c    d\t\te\n\n\nf \n g\r\n\r\nh   \n\t \n     \n",
    "whitespace-only": "   \t\n\n  \u00a0 \u3000  \n ",
    "leading-trailing-spaces": "   leading and trailing   ",
    "contractions": "I'm sure you're right: we've, they'll, he'd, it's, don't, can't, 'tis, y'all, rock 'n' roll",
    "contractions-upper": "I'M SURE YOU'RE RIGHT: WE'VE, THEY'LL, HE'D, IT'S, DON'T 'S 'RE 'Ve 'lL",
    "quotes": "''s '''re ' s 'x 'll' \"'d\" ’s ‘quoted’ O'Neil's",
    "numbers": "3.14159 1,000,000 2024-01-01 0x1F 1e-9 +42 -7 007 ١٢٣ ½ ² Ⅻ 10th 1st",
    "accented-latin": "Café naïve coöperate résumé façade Ångström Øre Straße Dvořák Łódź Ñandú",
    "cyrillic": "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αλφα ΒΗΤΑ γάμμα.",
    "arabic": "مرحبا بالعالم، كيف حالك؟ \u200fنص\u200e 123 ٤٥٦",
    "cjk": "你好，世界！这是一个测试。日本語のテキスト、カタカナとひらがな。한국어 텍스트입니다.",
    "emoji": "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇺🇸🇯🇵 🧑🏿‍💻 😀😃😄 a😀b",
    "combining-marks": "e\u0301 a\u0308 n\u0303 Z\u0324\u0354\u0367\u0311\u0313a\u0336\u0348 \u0301lead",
    "control-chars": "\x00\x01\x07\x08 \x1b[31mred\x1b[0m\x7f \x1c\x1d\x1e\x1f end\x85 \x0b\x0c",
    "odd-unicode": "\u200b\u200c\u200d\ufeff\u2028\u2029\u00ad \ufffd \uffff \U0010ffff \ue000 \U0001d538\U0001d539",
    "endoftext-inside": "first doc<|endoftext|>second doc <|endoftext|> third\n<|endoftext|>\n\nfourth",
    "endoftext-edges": "<|endoftext|><|endoftext|> <|endoftext <|ENDOFTEXT|> <|endoftext|>",
    "all-ascii": "".join(map(chr, range(128))) + "".join(map(chr, reversed(range(128)))),
    "mixed-lines": "line one\nlíne two\n\n  third ü\nfourth\n\tfifth ñ\n\n\nsixth\n",
    "mixed-long": ("An ASCII sentence, with words and  spaces.\n" * 8 + "Ça va? 中文😀 \n  ") * 4,
    "empty": "",
    "long-space-run": "x" + " " * 5000 + "y" + "\n" * 3000 + "z",
    "long-cjk-run": "汉字" * 1500,
    "long-letter-run": "abcdefghij" * 1000,
}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_dir: Path) -> BPETokenizer:
    return BPETokenizer.from_pretrained(gpt2_tokenizer_dir)


@pytest.fixture(scope="module")
def hf(gpt2_tokenizer_dir: Path):
    """transformers' GPT2Tokenizer from the directory (its vocab_file= keyword would be silently ignored)."""
    from transformers import GPT2Tokenizer

    reference = GPT2Tokenizer.from_pretrained(gpt2_tokenizer_dir)
    assert len(reference) == VOCAB_SIZE
    assert reference.encode("Hello world") == HELLO_WORLD_IDS
    return reference


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_tokenizer_dir: Path):
    """A tiktoken Encoding from the same files: byte-level ranks checked by tiktoken against vocab.json."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext.openai_public import r50k_pat_str

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local files, do not copy them into a cache
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            str(gpt2_tokenizer_dir / "merges.txt"), str(gpt2_tokenizer_dir / "vocab.json")
        )
    encoding = tiktoken.Encoding(
        "gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": ENDOFTEXT_ID}
    )
    assert encoding.n_vocab == VOCAB_SIZE
    assert encoding.encode("Hello world") == HELLO_WORLD_IDS
    return encoding


@pytest.fixture(scope="module")
def byte_ids(tiktoken_gpt2) -> list[int]:
    """The id of the single-byte token of each byte 0..255, according to tiktoken."""
    return [tiktoken_gpt2.encode_single_token(bytes([b])) for b in range(256)]


def tiktoken_encode(encoding, text: str) -> list[int]:
    return encoding.encode(text, allowed_special="all")


def stream(decoder, ids) -> list[str]:
    """What an incremental decoder returns for each id, then for flush()."""
    return [decoder.push(i) for i in ids] + [decoder.flush()]


# ------------------------------------------------------------------------------------------------ parity
def test_attributes_match_transformers(tok, hf):
    assert tok.vocab_size == len(hf) == VOCAB_SIZE
    assert tok.eos_token_id == hf.eos_token_id == ENDOFTEXT_ID
    assert tok.bos_token_id == hf.bos_token_id == ENDOFTEXT_ID
    assert tok.special_tokens == {token: hf.convert_tokens_to_ids(token) for token in hf.all_special_tokens}


@pytest.mark.parametrize("name", CORPUS)
def test_encode_matches_transformers_and_tiktoken(tok, hf, tiktoken_gpt2, name):
    text = CORPUS[name]
    ids = tok.encode(text)
    assert ids == hf.encode(text)
    assert ids == tiktoken_encode(tiktoken_gpt2, text)


@pytest.mark.parametrize("name", CORPUS)
def test_decode_matches_transformers(tok, hf, name):
    ids = hf.encode(CORPUS[name])
    assert tok.decode(ids) == hf.decode(ids) == CORPUS[name]
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert tok.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_large_stdlib_text_matches_references(tok, hf, tiktoken_gpt2):
    """Over half a megabyte of real prose and code: the pydoc topics and the source of the inspect module."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics.values()) + inspect.getsource(inspect)
    assert len(text.encode("utf-8")) > 500_000
    ids = tok.encode(text)
    assert ids == tiktoken_encode(tiktoken_gpt2, text)
    assert ids == hf.encode(text)
    assert tok.decode(ids) == text


def test_encode_batch_matches_transformers(tok, hf):
    texts = list(CORPUS.values())
    assert tok.encode_batch(texts) == hf(texts)["input_ids"]


def test_results_survive_cache_eviction(gpt2_tokenizer_dir, tiktoken_gpt2, monkeypatch):
    """With a tiny piece cache that empties itself constantly, encodings stay the same."""
    monkeypatch.setattr(bpe, "_MAX_CACHED_PIECES", 5)
    fresh = BPETokenizer.from_pretrained(gpt2_tokenizer_dir)
    for text in CORPUS.values():
        assert fresh.encode(text) == tiktoken_encode(tiktoken_gpt2, text)
    assert len(fresh._cache) <= 5


# Alphabets that make the interesting cases likely: spaces before words, apostrophes before contraction
# letters, newlines next to non-ASCII text, digits, and multi-byte characters of every UTF-8 length.
STRUCTURED_CHARS = list(" \n\n\t\r'sdmtlvreSDMTLVRE aZ09_-.,!?") + list("éüñß€Жж中文한😀👍🏽\u200d\u0301\u00a0\u3000\x85")
assigned_text = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=40)
structured_text = st.text(st.sampled_from(STRUCTURED_CHARS), max_size=60)
text_with_specials = st.lists(st.one_of(assigned_text, structured_text, st.just("<|endoftext|>")), max_size=5).map(
    "".join
)
# Long ASCII stretches between bits of other text: the encoder splits ASCII and other text differently.
ascii_stretch = st.text(st.sampled_from([*" \n\n\t'sdmtlvre aZ09_-.,!?", *map(chr, range(128))]), min_size=250)
long_mixed_text = st.lists(st.one_of(ascii_stretch, assigned_text), max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=text_with_specials)
def test_encode_matches_references_on_generated_text(tok, hf, tiktoken_gpt2, text):
    ids = tok.encode(text)
    assert ids == tiktoken_encode(tiktoken_gpt2, text)
    assert ids == hf.encode(text)


@settings(max_examples=100, deadline=None)
@given(text=long_mixed_text)
def test_encode_matches_references_on_long_mixed_text(tok, hf, tiktoken_gpt2, text):
    ids = tok.encode(text)
    assert ids == tiktoken_encode(tiktoken_gpt2, text)
    assert ids == hf.encode(text)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), structured_text))
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


# ------------------------------------------------------------------------------------------ invalid UTF-8
INVALID_UTF8 = {
    "lone-continuation": b"\x80",
    "truncated-3-byte": b"\xe4\xb8",
    "truncated-4-byte-then-ascii": b"\xf0\x9f\x98a",
    "invalid-byte": b"\xff\xfe",
    "overlong": b"\xc0\xaf",
    "encoded-surrogate": b"\xed\xa0\x80",
    "valid-between-invalid": b"\x80\xe4\xb8\xad\x80",
}


@pytest.mark.parametrize("name", INVALID_UTF8)
def test_decode_of_invalid_utf8_replaces_like_transformers(tok, hf, tiktoken_gpt2, byte_ids, name):
    ids = [byte_ids[b] for b in INVALID_UTF8[name]]
    assert "\ufffd" in tok.decode(ids)
    assert tok.decode(ids) == hf.decode(ids) == tiktoken_gpt2.decode(ids)


token_ids = st.integers(0, VOCAB_SIZE - 1)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decode_of_any_ids_matches_transformers(tok, hf, byte_ids, data):
    """Single-byte tokens mixed in split and break multi-byte characters."""
    ids = data.draw(st.lists(st.one_of(token_ids, st.sampled_from(byte_ids)), max_size=30))
    for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


# ------------------------------------------------------------------------------------------------ streaming
@settings(max_examples=300, deadline=None)
@given(data=st.data(), skip=st.booleans())
def test_streaming_joined_equals_decode_on_any_ids(tok, byte_ids, data, skip):
    ids = data.draw(st.lists(st.one_of(token_ids, st.sampled_from(byte_ids), st.just(ENDOFTEXT_ID)), max_size=30))
    pieces = stream(tok.incremental_decoder(skip_special_tokens=skip), ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), structured_text))
def test_streaming_never_splits_a_character(tok, text):
    """Fed the ids of valid text, every push returns whole characters: no U+FFFD that the text lacks."""
    pieces = stream(tok.incremental_decoder(), tok.encode(text))
    assert "".join(pieces) == text
    assert sum(piece.count("\ufffd") for piece in pieces) == text.count("\ufffd")


def test_streaming_holds_back_a_split_emoji(tok, byte_ids):
    decoder = tok.incremental_decoder()
    pieces = stream(decoder, [byte_ids[b] for b in "a😀".encode("utf-8")])
    assert pieces == ["a", "", "", "", "😀", ""]


def test_streaming_flushes_an_incomplete_character_as_replacement(tok, byte_ids):
    decoder = tok.incremental_decoder()
    ids = [byte_ids[b] for b in "中".encode("utf-8")[:2]]
    assert [decoder.push(i) for i in ids] == ["", ""]
    assert decoder.flush() == "\ufffd" == tok.decode(ids)
    assert stream(decoder, HELLO_WORLD_IDS) == ["Hello", " world", ""]  # usable again after flush


def test_streaming_skips_special_tokens_when_asked(tok):
    ids = tok.encode("a<|endoftext|>b")
    assert stream(tok.incremental_decoder(), ids) == ["a", "<|endoftext|>", "b", ""]
    assert stream(tok.incremental_decoder(skip_special_tokens=True), ids) == ["a", "", "b", ""]


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad_id", [VOCAB_SIZE, -1, 10**12])
def test_decode_rejects_an_id_outside_the_vocab_naming_it_and_its_position(tok, bad_id):
    with pytest.raises(TokenizerError, match=rf"token id {bad_id!r} at position 2 is outside the vocabulary"):
        tok.decode([*HELLO_WORLD_IDS, bad_id, 0])
    with pytest.raises(TokenizerError, match=rf"token id {bad_id!r} at position 2"):
        tok.convert_ids_to_tokens([*HELLO_WORLD_IDS, bad_id])


@pytest.mark.parametrize("bad_id", ["7", None, 1.5, 15496.0, np.float32(995), True, np.True_],
                         ids=["str", "None", "float", "whole-float", "numpy-float", "bool", "numpy-bool"])
def test_decode_rejects_a_non_integer_id_naming_its_position(tok, bad_id):
    """A dict lookup alone would take 15496.0 for 15496 and True for 1."""
    message = rf"token id {re.escape(repr(bad_id))} at (stream )?position \d is not an integer"
    with pytest.raises(TokenizerError, match=message):
        tok.decode([*HELLO_WORLD_IDS, bad_id, 0])
    with pytest.raises(TokenizerError, match=message):
        tok.convert_ids_to_tokens([*HELLO_WORLD_IDS, bad_id])
    decoder = tok.incremental_decoder()
    decoder.push(15496)
    with pytest.raises(TokenizerError, match=message.replace(r"(stream )?position \d", "stream position 1")):
        decoder.push(bad_id)


def test_decode_takes_numpy_integers(tok):
    assert tok.decode(np.array(HELLO_WORLD_IDS)) == "Hello world"
    assert tok.convert_ids_to_tokens(np.array(HELLO_WORLD_IDS, np.int32)) == ["Hello", "Ġworld"]
    assert stream(tok.incremental_decoder(), np.array(HELLO_WORLD_IDS)) == ["Hello", " world", ""]
    with pytest.raises(TokenizerError, match=r"token id -1 at position 1 is outside the vocabulary"):
        tok.decode(np.array([15496, -1]))


@pytest.mark.parametrize("batch", [[HELLO_WORLD_IDS, HELLO_WORLD_IDS], np.array([HELLO_WORLD_IDS]),
                                   [tuple(HELLO_WORLD_IDS)]], ids=["lists", "2d-array", "tuples"])
def test_decode_of_a_batch_says_to_decode_row_by_row(tok, batch):
    with pytest.raises(TokenizerError, match=r"one sequence of token ids, but position 0 holds a (list|ndarray|tuple): "
                                        r"decode a batch \(such as the output of generate\) one row at a time"):
        tok.decode(batch)


def test_decode_of_a_single_id_asks_for_a_sequence(tok):
    with pytest.raises(TokenizerError, match="expected a sequence of token ids, got int"):
        tok.decode(15496)


def test_streaming_rejects_an_id_outside_the_vocab(tok):
    decoder = tok.incremental_decoder()
    decoder.push(15496)
    with pytest.raises(TokenizerError, match=r"token id 50257 at stream position 1 is outside the vocabulary"):
        decoder.push(VOCAB_SIZE)


def test_encode_rejects_non_text(tok):
    with pytest.raises(TokenizerError, match="encode expects a str, got bytes"):
        tok.encode(b"Hello")


@pytest.mark.parametrize("text", [b"Hello", "Hello"])
def test_encode_batch_rejects_a_single_text_naming_its_type(tok, text):
    """Iterated, bytes would give ints ("encode expects str, got int") and a str its characters, each encoded."""
    with pytest.raises(TokenizerError, match=f"encode_batch expects a list of str, got {type(text).__name__}"):
        tok.encode_batch(text)


def test_encode_rejects_a_lone_surrogate_naming_its_position(tok):
    with pytest.raises(TokenizerError, match=r"lone surrogate '\\ud800' at position 6"):
        tok.encode("Hello \ud800 world")


# ------------------------------------------------------------------------------------------ loading
def _write_tokenizer_json(directory: Path, source: Path, merges_as_pairs: bool) -> Path:
    """A tokenizer.json (Hugging Face format) holding the vocab and merges of ``source``'s files."""
    vocab = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    lines = (source / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    merges = [line.split(" ") if merges_as_pairs else line for line in lines if line]
    document = {
        "version": "1.0",
        "added_tokens": [{"id": ENDOFTEXT_ID, "content": "<|endoftext|>", "special": True}],
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    }
    directory.mkdir()
    (directory / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    return directory


@pytest.mark.parametrize("merges_as_pairs", [False, True], ids=["merges-as-strings", "merges-as-pairs"])
def test_tokenizer_json_alone_gives_the_same_tokenizer(gpt2_tokenizer_dir, hf, tmp_path, merges_as_pairs):
    directory = _write_tokenizer_json(tmp_path / "model", gpt2_tokenizer_dir, merges_as_pairs)
    loaded = BPETokenizer.from_pretrained(directory)
    assert loaded.vocab_size == VOCAB_SIZE
    assert loaded.special_tokens == {"<|endoftext|>": ENDOFTEXT_ID}
    assert loaded.eos_token_id == loaded.bos_token_id == ENDOFTEXT_ID
    for text in CORPUS.values():
        assert loaded.encode(text) == hf.encode(text)


def test_bos_and_eos_come_from_tokenizer_config(gpt2_tokenizer_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(gpt2_tokenizer_dir, directory)
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": "Hello"}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    loaded = BPETokenizer.from_pretrained(directory)
    assert (loaded.bos_token_id, loaded.eos_token_id) == (15496, ENDOFTEXT_ID)


@pytest.fixture
def model_copy(gpt2_tokenizer_dir, tmp_path) -> Path:
    """A writable copy of the GPT-2 tokenizer directory, to damage."""
    return Path(shutil.copytree(gpt2_tokenizer_dir, tmp_path / "model"))


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found: .*nowhere"):
        BPETokenizer.from_pretrained(tmp_path / "nowhere")


def test_missing_merges_file_is_named(model_copy):
    (model_copy / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing merges\.txt, and there is no tokenizer\.json"):
        BPETokenizer.from_pretrained(model_copy)


def test_truncated_vocab_json_is_named(model_copy):
    vocab_file = model_copy / "vocab.json"
    vocab_file.write_bytes(vocab_file.read_bytes()[:1000])
    with pytest.raises(TokenizerError, match=r"vocab\.json: not a valid UTF-8 JSON file"):
        BPETokenizer.from_pretrained(model_copy)


def test_vocab_json_of_the_wrong_shape_is_named(model_copy):
    (model_copy / "vocab.json").write_text(json.dumps({"a": "one"}))
    with pytest.raises(TokenizerError, match=r"vocab\.json: vocabulary: token 'a' has id 'one'"):
        BPETokenizer.from_pretrained(model_copy)


def test_malformed_merges_line_is_named(model_copy):
    merges_file = model_copy / "merges.txt"
    merges_file.write_text(merges_file.read_text(encoding="utf-8").replace("Ġ a\n", "Ġa\n", 1), encoding="utf-8")
    with pytest.raises(TokenizerError,
                       match=r"merges\.txt, line 3: expected two tokens separated by one space, got 'Ġa'"):
        BPETokenizer.from_pretrained(model_copy)


def test_merge_of_unknown_token_is_named(model_copy):
    merges_file = model_copy / "merges.txt"
    merges_file.write_text(merges_file.read_text(encoding="utf-8") + "Ġgazed zzzqqq\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges\.txt: merge 50000 \('Ġgazed' 'zzzqqq'\) uses 'zzzqqq'"):
        BPETokenizer.from_pretrained(model_copy)


def test_real_gpt2_merges_yield_every_token_but_bytes_and_endoftext(gpt2_tokenizer_dir):
    """What the merges check relies on, on the real files: each of GPT-2's 50000 merges yields a different
    token, and these are exactly the vocab's tokens other than the 256 bytes and <|endoftext|>."""
    vocab = json.loads((gpt2_tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (gpt2_tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    merged = {line.replace(" ", "") for line in lines if line}
    assert len(merged) == len(lines) == 50000
    assert set(vocab) - merged == {*bpe.bytes_to_unicode().values(), "<|endoftext|>"}


@pytest.mark.parametrize("kept_lines, unreachable, example", [(1, 50000, "Ġt"), (1000, 49001, "Ġresult")],
                         ids=["version-line-only", "first-1000-lines"])
def test_empty_or_truncated_merges_file_is_refused(model_copy, kept_lines, unreachable, example):
    """Loaded anyway, the version line alone made "Hello world" 11 single-byte tokens."""
    merges_file = model_copy / "merges.txt"
    lines = merges_file.read_text(encoding="utf-8").splitlines()
    merges_file.write_text("\n".join(lines[:kept_lines]) + "\n", encoding="utf-8")
    message = (rf"merges\.txt: none of the {kept_lines - 1} merges yields {unreachable} of the vocab's 50000 "
               rf"tokens .*\(e\.g\. '{example}'\): the merges are empty or cut short")
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer.from_pretrained(model_copy)


def test_a_few_vocab_tokens_no_merge_yields_are_tolerated(model_copy, hf):
    """Real vocabularies may carry an extra entry no config names (a RoBERTa-style "<mask>", say)."""
    vocab_file = model_copy / "vocab.json"
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    vocab_file.write_text(json.dumps({**vocab, "<mask>": VOCAB_SIZE}), encoding="utf-8")
    loaded = BPETokenizer.from_pretrained(model_copy)
    assert loaded.encode(CORPUS["prose"]) == hf.encode(CORPUS["prose"])


def test_corrupt_tokenizer_json_is_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a valid UTF-8 JSON file"):
        BPETokenizer.from_pretrained(tmp_path)


def test_tokenizer_json_with_bad_merge_entry_is_named(tmp_path):
    document = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b", "c"]]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(document))
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: model\.merges\[0\] = \['a', 'b', 'c'\]"):
        BPETokenizer.from_pretrained(tmp_path)


def test_eos_token_outside_the_vocab_names_the_config_file(model_copy):
    (model_copy / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    with pytest.raises(TokenizerError,
                       match=r"tokenizer_config\.json: eos_token '<\|im_end\|>' is not in the vocabulary"):
        BPETokenizer.from_pretrained(model_copy)


# ---- the merge table: ranks and ids packed into ints ---------------------------------------------------------
def byte_level_vocab(first_byte_id: int, merged: dict[str, int]) -> dict[str, int]:
    """The 256 byte tokens with ids from ``first_byte_id`` on, plus ``merged``."""
    return {char: first_byte_id + byte for byte, char in bpe.bytes_to_unicode().items()} | merged


def test_a_repeated_merge_keeps_its_first_rank():
    # "bc" ranks before "ab"; were the repeat's rank 2 kept instead, "ab" would merge first.
    tokenizer = BPETokenizer(byte_level_vocab(0, {"bc": 256, "ab": 257}), [("b", "c"), ("a", "b"), ("b", "c")])
    assert tokenizer.encode("abc") == [ord("a"), 256]


def test_ids_far_past_gpt2s_vocabulary_merge_and_decode():
    big = {"bc": 300_000, "abc": 300_002}
    tokenizer = BPETokenizer(byte_level_vocab(200_000, big), [("b", "c"), ("a", "bc")])
    assert tokenizer.encode("abc ab") == [300_002, 200_000 + ord(" "), 200_000 + ord("a"), 200_000 + ord("b")]
    assert tokenizer.decode(tokenizer.encode("abc ab")) == "abc ab"


def test_the_first_merge_into_id_0_is_still_a_merge():
    # Rank 0 merging into id 0 packs into the int 0: it must count as a merge found, not as none.
    tokenizer = BPETokenizer(byte_level_vocab(1, {"bc": 0}), [("b", "c")])
    assert tokenizer.encode("bc") == [0]
    assert tokenizer.encode("abcbc") == [1 + ord("a"), 0, 0]
