"""uer/gpt2-distil-chinese-cluecorpussmall end to end, on a random-init checkpoint in its published layout
(the ``uer_layout_dir`` fixture): where prompts start and text ends, logits and greedy ids against
transformers, and readable Chinese text out.

The traps, each checked below: a prompt is [CLS] + text (BertTokenizer would also close it with [SEP]); the
text ends at [SEP] (the config's eos 50256 is outside the vocabulary, so transformers never stops); GPT-2 given
BertTokenizer's token_type_ids adds wte[0] at every position; transformers' decode puts a space between every
two Chinese characters; special tokens must not reach the text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from checkpoints import UER, UER_PROMPT, load_hf_model
from safetensors import safe_open
from test_model import FULL_ATOL
from transformers import BertTokenizer

from tinygpt import pipeline
from tinygpt.model import Model
from tinygpt.tokenizers import WordPieceTokenizer

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT2_EOS = 50256
NEW_TOKENS = 20
# Two ideographs of the main CJK block with whitespace between them: transformers' decode writes this.
SPACED_CJK = re.compile(r"[\u4e00-\u9fff]\s+[\u4e00-\u9fff]")
MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt")


@pytest.fixture(scope="module")
def model(uer_layout_dir) -> Model:
    return Model.from_pretrained(uer_layout_dir)


@pytest.fixture(scope="module")
def hf(uer_layout_dir):
    return load_hf_model(uer_layout_dir)


@pytest.fixture(scope="module")
def bert(uer_layout_dir) -> BertTokenizer:
    """transformers' tokenizer for the checkpoint, the reference for encoding and (spaced) decoding."""
    return BertTokenizer.from_pretrained(uer_layout_dir)


def hf_generate(hf, prompt: list[int], **options) -> list[int]:
    """transformers' greedy ``generate`` of NEW_TOKENS tokens for one prompt, as a list of ids."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                          pad_token_id=PAD, **options)
    return out[0].tolist()


def boosted_special_tokens(model: Model) -> Model:
    """The same model with an LM head that makes [PAD], [UNK] and [CLS] likely next tokens.

    Their rows become a multiple of ln_f's bias, which every final hidden state contains, so their logits are
    high at every position. The input embeddings are untouched (the published head is tied to them)."""
    lm_head = model.weights["lm_head.weight"].copy()
    lm_head[[PAD, UNK, CLS]] = 1.5 * model.weights["ln_f.bias"]
    return Model(model.config, {**model.weights, "lm_head.weight": lm_head}, model.tokenizer)


# ------------------------------------------------------------------------------------------- the files


def test_fixture_has_the_published_layout(uer_layout_dir):
    """What the tests below rely on: GPT-2's eos/bos in config, the BERT vocab head, uint8 mask buffers."""
    config = json.loads((uer_layout_dir / "config.json").read_text(encoding="utf-8"))
    assert (config["eos_token_id"], config["bos_token_id"]) == (GPT2_EOS, GPT2_EOS)
    vocab = (uer_layout_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == UER["vocab_size"]
    assert [vocab[i] for i in (PAD, UNK, CLS, SEP, MASK)] == list(SPECIAL_TOKENS)
    with safe_open(uer_layout_dir / "model.safetensors", framework="numpy") as weights:
        names = set(weights.keys())
        masks = [weights.get_tensor(f"transformer.h.{layer}.attn.bias") for layer in range(UER["n_layer"])]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names  # tied head, prefixed names
    n = UER["n_positions"]
    for mask in masks:
        assert mask.dtype == np.uint8 and mask.shape == (1, 1, n, n)


def test_prompt_and_stop_rules_come_from_the_files(model):
    assert isinstance(model.tokenizer, WordPieceTokenizer)
    assert model.prompt_prefix_ids == [CLS]
    assert model.eos_token_id == SEP


@pytest.mark.parametrize("tokenizer_config", [True, False])
def test_rules_do_not_depend_on_the_model_name(uer_layout_dir, tmp_path, tokenizer_config):
    """The same files under a neutral name, with or without tokenizer_config.json, give the same rules."""
    directory = tmp_path / "some-model"
    directory.mkdir()
    for name in MODEL_FILES + (("tokenizer_config.json",) if tokenizer_config else ()):
        os.symlink(uer_layout_dir / name, directory / name)
    model = Model.from_pretrained(directory)
    assert isinstance(model.tokenizer, WordPieceTokenizer)
    assert (model.prompt_prefix_ids, model.eos_token_id) == ([CLS], SEP)


@pytest.mark.parametrize("text", [UER_PROMPT, "我用python写了100行代码。", "hello world"])
def test_prompt_is_bert_encoding_without_the_closing_sep(model, bert, text):
    bert_ids = bert(text)["input_ids"]
    assert bert_ids[0] == CLS and bert_ids[-1] == SEP
    assert model.encode_prompt(text) == bert_ids[:-1]


# ------------------------------------------------------------------------------- against transformers


def test_logits_match_transformers_without_token_type_ids(model, hf, bert):
    encoded = bert(UER_PROMPT, return_tensors="pt")
    ids = encoded["input_ids"][:, :-1]
    with torch.no_grad():
        expected = hf(ids).logits[0].numpy()
        # The trap: BertTokenizer's token_type_ids (all 0) make GPT-2 add wte[0] to every position.
        with_types = hf(ids, token_type_ids=encoded["token_type_ids"][:, :-1]).logits[0].numpy()
    logits = model.logits(model.encode_prompt(UER_PROMPT))
    np.testing.assert_allclose(logits, expected, rtol=0, atol=FULL_ATOL)
    assert np.abs(with_types - expected).max() > 1000 * FULL_ATOL


def test_greedy_ids_match_transformers_and_stop_at_sep(model, hf):
    prompt = model.encode_prompt(UER_PROMPT)
    ours = model.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert ours == [hf_generate(hf, prompt, eos_token_id=SEP)]
    assert ours[0][-1] == SEP and len(ours[0]) < len(prompt) + NEW_TOKENS  # stopped early, at [SEP]


def test_transformers_with_the_config_eos_runs_past_sep(model, hf):
    """The trap tinygpt avoids: eos 50256 never comes, so transformers' own default generates through [SEP]."""
    prompt = model.encode_prompt(UER_PROMPT)
    ours = model.generate(prompt, max_new_tokens=NEW_TOKENS)[0]
    theirs = hf_generate(hf, prompt)
    assert len(theirs) == len(prompt) + NEW_TOKENS and theirs[:len(ours)] == ours


def test_user_can_override_the_stop_token(uer_layout_dir, model, hf):
    prompt = model.encode_prompt(UER_PROMPT)
    never_stops = hf_generate(hf, prompt)
    third_new_token = never_stops[len(prompt) + 2]
    stops_there = hf_generate(hf, prompt, eos_token_id=third_new_token)
    assert len(stops_there) < len(never_stops)
    assert model.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=None) == [never_stops]
    assert model.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=third_new_token) == [stops_there]
    own = Model.from_pretrained(uer_layout_dir)  # not the shared fixture: this one is changed
    own.eos_token_id = None
    assert own.generate(prompt, max_new_tokens=NEW_TOKENS) == [never_stops]
    own.eos_token_id = third_new_token
    assert own.generate(prompt, max_new_tokens=NEW_TOKENS) == [stops_there]


# ------------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("text", ["这是很久之前的事情了。", "我用python写了100行代码，hello world 2020年！",
                                  "他说：“今天是2020年10月1日”"])
def test_decode_writes_chinese_without_spaces_and_keeps_them_between_words(model, bert, text):
    ids = model.tokenizer.encode(text)
    assert model.decode(ids) == text
    spaced = bert.decode(ids)  # transformers: a space between every two tokens
    assert SPACED_CJK.search(spaced) and spaced.replace(" ", "") == text.replace(" ", "")


def test_generated_text_has_no_spaces_between_chinese_characters(model, bert):
    prompt = model.encode_prompt(UER_PROMPT)
    options = dict(max_new_tokens=40, eos_token_id=None, do_sample=True, seed=3)
    pieces = []
    new_ids = model.generate(prompt, streamer=pieces.append, **options)[0][len(prompt):]
    text = "".join(pieces)
    assert text == model.decode(new_ids)
    spaced = bert.decode(new_ids, skip_special_tokens=True)
    assert SPACED_CJK.search(spaced) and not SPACED_CJK.search(text) and "\ufffd" not in text
    assert text.replace(" ", "") == spaced.replace(" ", "")
    assert model.decode(prompt + new_ids) == UER_PROMPT + text  # no [CLS] in front


def test_special_tokens_never_reach_the_text(model, bert):
    biased = boosted_special_tokens(model)
    prompt = biased.encode_prompt(UER_PROMPT)
    options = dict(max_new_tokens=40, eos_token_id=None, do_sample=True, seed=0)
    pieces = []
    new_ids = biased.generate(prompt, streamer=pieces.append, **options)[0][len(prompt):]
    assert {PAD, UNK, CLS} <= set(new_ids)  # the boost works: all three were generated
    text = "".join(pieces)
    assert text == biased.decode(new_ids)
    assert not any(token in text for token in SPECIAL_TOKENS)
    assert text.replace(" ", "") == bert.decode(new_ids, skip_special_tokens=True).replace(" ", "")


def test_decode_drops_every_special_token(model):
    ids = model.tokenizer.encode("很久[PAD]之前[UNK][MASK]的事情", add_special_tokens=True)
    assert {PAD, UNK, CLS, SEP, MASK} <= set(ids)
    assert model.decode(ids) == "很久之前的事情"


# -------------------------------------------------------------------------------------- pipeline and CLI


def assert_clean_chinese(text: str) -> None:
    """No special token, no replacement character, no space between two Chinese characters."""
    assert not any(token in text for token in SPECIAL_TOKENS), text
    assert "\ufffd" not in text and not SPACED_CJK.search(text), text


def test_pipeline_returns_chinese_text_without_spaces(uer_layout_dir, model, bert):
    generator = pipeline("text-generation", model=uer_layout_dir)
    result = generator(UER_PROMPT, max_length=100, do_sample=True, seed=7)
    assert len(result) == 1 and list(result[0]) == ["generated_text"]
    text = result[0]["generated_text"]
    assert text.startswith(UER_PROMPT) and len(text) > len(UER_PROMPT) + 20
    assert_clean_chinese(text)
    prompt = model.encode_prompt(UER_PROMPT)
    ids = model.generate(prompt, max_length=100, do_sample=True, seed=7)[0]
    assert text == UER_PROMPT + model.decode(ids[len(prompt):])
    assert text.replace(" ", "") == bert.decode(ids, skip_special_tokens=True).replace(" ", "")


def run_cli(*args: str) -> str:
    """stdout of ``tinygpt`` (run as ``python -m tinygpt.cli``), which must be strict UTF-8."""
    completed = subprocess.run([sys.executable, "-m", "tinygpt.cli", *args], capture_output=True, timeout=120)
    assert completed.returncode == 0, completed.stderr.decode("utf-8", "replace")
    return completed.stdout.decode("utf-8")


def test_cli_prints_the_greedy_continuation_up_to_sep(uer_layout_dir, hf, bert):
    """Without options (the config sets no text-generation defaults) the CLI decodes greedily; its text ends
    where transformers' greedy ids end when told to stop at [SEP]."""
    out = run_cli("generate", UER_PROMPT, "--model", str(uer_layout_dir))
    prompt = bert(UER_PROMPT)["input_ids"][:-1]
    expected_ids = hf_generate(hf, prompt, eos_token_id=SEP)
    assert expected_ids[-1] == SEP and out.endswith("\n")
    assert_clean_chinese(out)
    assert out.replace(" ", "") == bert.decode(expected_ids, skip_special_tokens=True).replace(" ", "") + "\n"


def test_cli_sampled_text_is_clean_and_equals_the_pipeline(uer_layout_dir):
    """The CLI's streamed pieces, joined, are the pipeline's text for the same options (--temperature turns
    sampling on)."""
    out = run_cli("generate", UER_PROMPT, "--model", str(uer_layout_dir), "--seed", "11", "--max-new-tokens", "40",
                  "--temperature", "1.0")
    assert_clean_chinese(out)
    generated = pipeline("text-generation", model=uer_layout_dir)(UER_PROMPT, max_new_tokens=40, do_sample=True,
                                                                  seed=11)
    assert out == generated[0]["generated_text"] + "\n"
