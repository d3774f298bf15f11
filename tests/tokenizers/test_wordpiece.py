"""WordPieceTokenizer against transformers' BertTokenizer (the reference) on the same vocab.txt.

The real Chinese BERT vocab of uer/gpt2-distil-chinese-cluecorpussmall is not available offline, so the tests
build one shaped like it: the [PAD]/[unusedN]/[UNK]/[CLS]/[SEP]/[MASK] head, every ideograph of the main CJK
block, samples of the other CJK blocks, full-width and CJK punctuation, ASCII, digits, Latin word pieces with
"##" continuations, a few accented letters, emoji, kana and Hangul.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoints import MAIN_CJK, WIDE_PUNCTUATION, chinese_bert_vocab
from tinygpt.errors import TokenizerError
from tinygpt.tokenizers import WordPieceTokenizer

transformers = pytest.importorskip("transformers")

VOCAB = chinese_bert_vocab()

# tokenizer_config.json contents; None writes no config (BertTokenizer defaults).
CONFIGS = {
    "default": None,
    "cased": {"do_lower_case": False},
    "cased_strip_accents": {"do_lower_case": False, "strip_accents": True},
    "lowercase_keep_accents": {"do_lower_case": True, "strip_accents": False},
    "cjk_unsplit": {"tokenize_chinese_chars": False},
}

TEXTS = [
    "",
    "   \t\n ",
    "我们在2020年用Python写了一个tokenizer，效果很好！",
    "Transformers are playing with tokenizers: un-affable, re-formed.",
    "全角标点：「你好」（测试）——《书名》……“引号”、顿号；？！",
    "ＡＢＣ１２３ full-width letters and digits",
    "Café naïve ÜBER año résumé É Über",
    "e\u0301 combining accent, İstanbul, Straße, ﬁne",
    "ΣΑΣ σας Σ αβ",
    "emoji 😀 👍 ❤️ 🤖 👨\u200d👩\u200d👧 mixed 😀你好",
    "x" * 100,
    "x" * 101,
    "超" * 101,
    "unknown: ☃ ∑ ⅷ 𝔘 ꙮ",
    "controls:\x00a\x01b\x07c\x1b[0m\x7f\x85d\u200be\u200d\ufeff\ufffd\ue000f",
    "spaces:\u3000全角\xa0nbsp\u2028line\u2029para\r\nend\u2003em",
    "special[SEP]tokens [CLS]inside[MASK]text[PAD] [UNK]!",
    "lowercase [sep] [cls] and [unused1] are not special",
    "[[SEP]] [SEP[SEP]] [SE P] [CLS][SEP]",
    "unassigned \u0378 code \U000e0080 points",
    "CJK extensions: 㐀㐁 豈更 𠀀𠀁 𪜀 𫝀 𫠠𫤠 𫥠𬺠 丽丸 \u9fb0",
    "한국어 텍스트와 日本語のテキスト、カタカナ",
    "numbers 3.14159 1,000,000 2020年10月1日 100%",
    "$+<=>^`|~ are punctuation to BERT",
    "it's don't I'm we've they're do not",
    "中国人在北京",
]


def write_tokenizer_dir(directory: Path, config: dict | None = None, special_tokens_map: dict | None = None) -> Path:
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in VOCAB), encoding="utf-8")
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if special_tokens_map is not None:
        (directory / "special_tokens_map.json").write_text(json.dumps(special_tokens_map), encoding="utf-8")
    return directory


def load_reference(directory: Path, config: dict | None):
    """BertTokenizer.from_pretrained(directory), checked to have really loaded the vocab and the config
    (a reference that silently ignores them would make parity meaningless)."""
    reference = transformers.BertTokenizer.from_pretrained(directory)
    assert reference.vocab_size == len(VOCAB)
    normalizer = reference.backend_tokenizer.normalizer
    config = config or {}
    assert normalizer.lowercase == config.get("do_lower_case", True)
    assert normalizer.strip_accents == config.get("strip_accents")
    assert normalizer.handle_chinese_chars == config.get("tokenize_chinese_chars", True)
    pieces = reference.tokenize("transformers")
    assert len(pieces) >= 2 and reference.unk_token not in pieces
    return reference


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(ours, reference) loaded from the same directory, once per tokenizer_config variant."""
    config = CONFIGS[request.param]
    directory = write_tokenizer_dir(tmp_path_factory.mktemp(request.param), config)
    return WordPieceTokenizer.from_pretrained(directory), load_reference(directory, config)


@pytest.fixture(scope="module")
def default_pair(tmp_path_factory):
    directory = write_tokenizer_dir(tmp_path_factory.mktemp("default"))
    return WordPieceTokenizer.from_pretrained(directory), load_reference(directory, None)


# ------------------------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_reference(pair, text):
    ours, reference = pair
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False)
    assert ours.encode(text, add_special_tokens=True) == reference.encode(text)


def test_encode_batch_matches_reference(pair):
    ours, reference = pair
    assert ours.encode_batch(TEXTS) == [reference.encode(text, add_special_tokens=False) for text in TEXTS]
    assert ours.encode_batch(TEXTS, add_special_tokens=True) == reference(TEXTS)["input_ids"]


def test_texts_exercise_the_vocabulary(default_pair):
    """The fixed texts hit word pieces, CJK, punctuation and [UNK] alike, so parity is not parity on [UNK]s."""
    ours, _ = default_pair
    tokens = ours.convert_ids_to_tokens([i for text in TEXTS for i in ours.encode(text)])
    assert sum(token.startswith("##") for token in tokens) >= 20
    assert sum(token in MAIN_CJK for token in tokens) >= 30
    assert 0 < tokens.count("[UNK]") < len(tokens) / 4


def test_special_token_ids_match_reference(pair):
    ours, reference = pair
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(reference, f"{name}_token_id"), name
    assert ours.eos_token_id == reference.sep_token_id
    assert ours.bos_token_id == reference.cls_token_id
    assert ours.special_tokens == {token: reference.convert_tokens_to_ids(token)
                                   for token in reference.all_special_tokens}
    assert ours.vocab_size == reference.vocab_size == len(VOCAB)


def test_bert_tokenizer_fast_agrees(tmp_path):
    """In transformers 5 BertTokenizerFast is an alias of BertTokenizer; with transformers 4 it is the Rust one."""
    directory = write_tokenizer_dir(tmp_path)
    ours = WordPieceTokenizer.from_pretrained(directory)
    fast = transformers.BertTokenizerFast.from_pretrained(directory)
    assert fast.vocab_size == len(VOCAB)
    for text in TEXTS:
        assert ours.encode(text, add_special_tokens=True) == fast.encode(text), text


def test_config_dicts_and_special_tokens_map_match_reference(tmp_path):
    """AddedToken-dict special tokens in tokenizer_config.json, overridden by special_tokens_map.json."""
    unk = {"__type": "AddedToken", "content": "[unused1]", "lstrip": False, "rstrip": False,
           "normalized": False, "single_word": False}
    config = {"do_lower_case": False, "tokenize_chinese_chars": False, "unk_token": unk}
    directory = write_tokenizer_dir(tmp_path, config, {"mask_token": "[unused2]", "cls_token": {"content": "[CLS]"}})
    ours = WordPieceTokenizer.from_pretrained(directory)
    reference = load_reference(directory, config)
    assert (ours.unk_token_id, ours.mask_token_id) == (reference.unk_token_id, reference.mask_token_id) == (1, 2)
    for text in ["x[unused2]y ☃ [MASK] [unused1] 中国人 超超", *TEXTS]:
        assert ours.encode(text, add_special_tokens=True) == reference.encode(text), text


# (start, stop[, step]) code point ranges: Latin to Hebrew, Latin/Greek extended, general punctuation and
# symbols, CJK radicals/symbols/kana/Hangul jamo, CJK blocks, Hangul syllables, compatibility and full-width
# forms, emoji. Blocks where the reference's Unicode 8 tables disagree with ours are left out (module docstring).
SWEPT_CODE_POINTS = [
    code
    for block in [(0x0, 0x600), (0x1E00, 0x2E00), (0x2E80, 0x3400), (0x3400, 0x4DC0, 5), (0x4E00, 0xA000, 3),
                  (0xAC00, 0xD7A4, 5), (0xF900, 0xFB00), (0xFE30, 0xFE50), (0xFF00, 0xFFF0), (0x1F000, 0x1FB00),
                  (0x20000, 0x2FA20, 11)]
    for code in range(*block)
]


def test_every_swept_code_point_matches_reference(pair):
    """Each character between letters, after a space and after an accented capital, in every config."""
    ours, reference = pair
    texts = [f"a{char}b {char}Ü{char}" for char in map(chr, SWEPT_CODE_POINTS)]
    expected = reference(texts, add_special_tokens=False)["input_ids"]
    mismatches = [(hex(code), want, got)
                  for code, want, got in zip(SWEPT_CODE_POINTS, expected, ours.encode_batch(texts)) if want != got]
    assert not mismatches, mismatches[:10]


def test_vocab_file_is_read_like_the_reference(tmp_path):
    """CRLF endings, trailing whitespace (trimmed; U+001C is not whitespace here), a lone CR inside a line, an
    empty line, no final newline, and a token repeated after trimming (the later line wins for encoding)."""
    lines = ["[PAD]\r", "[UNK]\r", "[CLS]", "[SEP]", "[MASK]", "hello  ", "world\t", "ab\rcd", "hello", "foo\x1c",
             "##s\u3000", "", "x", "##y"]
    (tmp_path / "vocab.txt").write_bytes("\n".join(lines).encode("utf-8"))
    ours = WordPieceTokenizer.from_pretrained(tmp_path)
    reference = transformers.BertTokenizer.from_pretrained(tmp_path)
    assert ours.vocab_size == len(lines)
    assert reference.vocab_size == len(lines) - 1  # the reference counts distinct tokens
    for text in ["hello worlds", "ab\rcd foo\x1c xy x", "hellos HELLO"]:
        assert ours.encode(text, add_special_tokens=True) == reference.encode(text)
    reachable = [i for i in range(len(lines)) if i != 5]  # line 5 is shadowed by line 8
    assert ours.convert_ids_to_tokens(reachable) == reference.convert_ids_to_tokens(reachable)
    assert ours.decode(reachable, spaced=True) == reference.decode(reachable)


# Characters chosen to hit every branch of BERT's normalization and splitting: letters with and without
# pieces, accents (precomposed and combining), case quirks, CJK inside and outside the vocab (U+2B820 is
# where the reference's CJK ranges differ from Google's BERT), full-width text, whitespace of all kinds,
# control/format/private-use/unassigned code points, emoji with joiners, and special-token strings.
ALPHABET = (
    list("abcxyzABCXYZ019")
    + list(string.punctuation)
    + [" ", "  ", "\t", "\n", "\r", "\u3000", "\xa0", "\u2028", "\u2003"]
    + ["transform", "ers", "ing", "Play", "HELLO", "café", "2020"]
    + ["中", "国", "人", "北", "京", "你", "好", "我", "们", "的", "\u9fb0", "㐀", "㒀", "豈", "𠀀", "𫠠", "𫥠"]
    + ["，", "。", "！", "？", "：", "「", "」", "（", "）", "、", "…", "—", "“", "”", "·", "Ａ", "１"]
    + ["é", "É", "e\u0301", "\u0301", "ñ", "ü", "Ü", "İ", "ß", "ﬁ", "Σ", "σ", "ς", "Å", "Ω"]
    + ["😀", "🤖", "❤", "\ufe0f", "\u200d", "あ", "ア", "한", "국", "\u0378"]
    + ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\ufeff", "\ufffd", "\ue000"]
    + ["[SEP]", "[CLS]", "[UNK]", "[MASK]", "[PAD]", "[sep]", "[unused1]", "##", "#", "[", "]"]
)
RANDOM_TEXT = st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=RANDOM_TEXT)
def test_random_text_matches_reference(pair, text):
    ours, reference = pair
    assert ours.encode(text, add_special_tokens=True) == reference.encode(text)


# ------------------------------------------------------------------------------------------------ decoding

RANDOM_IDS = st.lists(st.integers(0, len(VOCAB) - 1), max_size=30)


@pytest.mark.parametrize("skip_special_tokens", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_spaced_decode_matches_reference(default_pair, text, skip_special_tokens):
    ours, reference = default_pair
    ids = reference.encode(text)
    expected = reference.decode(ids, skip_special_tokens=skip_special_tokens)
    assert ours.decode(ids, skip_special_tokens=skip_special_tokens, spaced=True) == expected


@pytest.mark.parametrize("token", ["do not", "n't", "'s", "'re", "'m", "'ve", "' s", ".", "?", "!", ",", "'"])
def test_spaced_decode_cleanup_matches_reference(default_pair, token):
    """Each of the reference decoder's cleanup rules, after a word and at the start."""
    ours, reference = default_pair
    token_id = VOCAB.index(token)
    for ids in ([VOCAB.index("it"), token_id], [token_id, VOCAB.index("it")], [token_id, token_id]):
        assert ours.decode(ids, spaced=True) == reference.decode(ids)


@settings(max_examples=300, deadline=None)
@given(ids=RANDOM_IDS, skip_special_tokens=st.booleans())
def test_spaced_decode_of_random_ids_matches_reference(default_pair, ids, skip_special_tokens):
    """Random ids include "##" pieces in first place, special tokens and punctuation the cleanup touches."""
    ours, reference = default_pair
    expected = reference.decode(ids, skip_special_tokens=skip_special_tokens)
    assert ours.decode(ids, skip_special_tokens=skip_special_tokens, spaced=True) == expected
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)


@settings(max_examples=300, deadline=None)
@given(ids=RANDOM_IDS, skip_special_tokens=st.booleans(), spaced=st.booleans())
def test_streaming_joined_equals_decode(default_pair, ids, skip_special_tokens, spaced):
    ours, _ = default_pair
    decoder = ours.incremental_decoder(skip_special_tokens, spaced=spaced)
    streamed = "".join(decoder.push(token_id) for token_id in ids) + decoder.flush()
    assert streamed == ours.decode(ids, skip_special_tokens=skip_special_tokens, spaced=spaced)


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.sampled_from(MAIN_CJK + WIDE_PUNCTUATION), min_size=1, max_size=30).map("".join))
def test_readable_decode_has_no_spaces_between_chinese_characters(default_pair, text):
    ours, reference = default_pair
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.decode(ids, spaced=True) == reference.decode(ids) == " ".join(text)


LATIN_WORD = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(LATIN_WORD, min_size=1, max_size=10))
def test_readable_decode_keeps_single_spaces_between_latin_words(default_pair, words):
    ours, _ = default_pair
    text = " ".join(words)
    assert ours.decode(ours.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "我用python写代码。",
        "他说：“你好……”",
        "2020年10月1日，天气很好！",
        "中文和english混合，transformers也可以。",
        "hello, world. it is 2020!",
        "「书名」——作者（北京）",
    ],
)
def test_readable_decode_round_trips_mixed_text(default_pair, text):
    ours, _ = default_pair
    assert ours.decode(ours.encode(text)) == text


def test_readable_decode_skips_special_tokens(default_pair):
    ours, _ = default_pair
    ids = ours.encode("你好[MASK]world", add_special_tokens=True)
    assert ours.decode(ids) == "[CLS]你好[MASK] world [SEP]"
    assert ours.decode(ids, skip_special_tokens=True) == "你好world"


# ------------------------------------------------------------------------------------------------ errors


def test_decode_rejects_ids_outside_the_vocabulary(default_pair):
    ours, _ = default_pair
    with pytest.raises(TokenizerError, match=rf"token id {len(VOCAB)} at position 1 .*size {len(VOCAB)}"):
        ours.decode([5, len(VOCAB)])
    with pytest.raises(TokenizerError, match="token id -1 at position 0"):
        ours.incremental_decoder().push(-1)
    with pytest.raises(TokenizerError, match="position 0 is not an integer"):
        ours.convert_ids_to_tokens(["5"])


@pytest.mark.parametrize("bad_id", [5.0, True, np.True_, np.float64(5)], ids=["float", "bool", "numpy-bool",
                                                                           "numpy-float"])
def test_decode_rejects_a_non_integer_id_naming_its_position(default_pair, bad_id):
    """operator.index alone takes True for 1."""
    ours, _ = default_pair
    message = rf"token id {re.escape(repr(bad_id))} at position 1 is not an integer"
    with pytest.raises(TokenizerError, match=message):
        ours.decode([5, bad_id])
    with pytest.raises(TokenizerError, match=message):
        ours.convert_ids_to_tokens([5, bad_id])


@pytest.mark.parametrize("batch", [[[5, 6], [7]], np.array([[5, 6]])], ids=["lists", "2d-array"])
def test_decode_of_a_batch_says_to_decode_row_by_row(default_pair, batch):
    ours, _ = default_pair
    with pytest.raises(TokenizerError, match=r"one sequence of token ids, but position 0 holds a (list|ndarray): "
                                        r"decode a batch .* one row at a time"):
        ours.decode(batch)


def test_decode_takes_numpy_integers(default_pair):
    ours, _ = default_pair
    ids = ours.encode("你好 world")
    assert ours.decode(np.array(ids)) == ours.decode(ids) == "你好world"
    with pytest.raises(TokenizerError, match="expected a sequence of token ids, got int"):
        ours.decode(5)


def test_encode_rejects_non_text(default_pair):
    ours, _ = default_pair
    with pytest.raises(TokenizerError, match="expects a str, got bytes"):
        ours.encode(b"hello")
    with pytest.raises(TokenizerError, match="encode_batch expects a list of str, got bytes"):
        ours.encode_batch(b"hello")


def test_from_pretrained_names_the_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found"):
        WordPieceTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("", encoding="utf-8")
    with pytest.raises(TokenizerError, match="vocab.txt is empty"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"[UNK]\n\xff\xfe\n")
    with pytest.raises(TokenizerError, match="vocab.txt: not valid UTF-8"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    write_tokenizer_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: not a valid UTF-8 JSON file"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: 'do_lower_case' must be true, false or null"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "special_tokens_map.json").write_text('{"unk_token": 5}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="special_tokens_map.json: 'unk_token' must be a string"):
        WordPieceTokenizer.from_pretrained(tmp_path)


def test_missing_unk_token_is_a_clear_error_only_when_needed():
    ours = WordPieceTokenizer(["[CLS]", "[SEP]", "a", "##b"])
    assert ours.unk_token_id is None and ours.special_tokens == {"[CLS]": 0, "[SEP]": 1}
    assert ours.encode("ab a", add_special_tokens=True) == [0, 2, 3, 2, 1]
    with pytest.raises(TokenizerError, match=r"no \[UNK\] token"):
        ours.encode("abc")
