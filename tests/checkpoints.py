"""GPT-2 checkpoints in the published format, built with transformers (random init).

The hub is out of reach in tests, so we make files the way the published ones were made:
``GPT2LMHeadModel(...).save_pretrained(dir, safe_serialization=True)``, at the exact shapes of distilgpt2
and the uer Chinese model, plus a tiny one for fast checks.
"""

from __future__ import annotations

import json
import string
import unicodedata
from pathlib import Path

import numpy as np

# Published shapes. distilgpt2: 6 layers x 768, 12 heads, 50257 tokens; the uer Chinese model is the same
# network over a 21128-token BERT vocabulary.
TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=999, eos_token_id=999)
SMALL_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=50257, n_positions=256)  # real GPT-2 vocabulary
DISTILGPT2 = dict(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
UER = dict(n_layer=6, n_embd=768, n_head=12, vocab_size=21128, n_positions=1024)

# transformers' default init (std 0.02, unit LayerNorm, zero biases) gives near-uniform logits, where a
# wrong computation can still look close. A wider init and random LayerNorm/bias values make every
# parameter matter and the logits peaked.
INIT_STD = 0.1


def build_gpt2_dir(path: Path, seed: int = 0, **config_overrides) -> Path:
    """Save a random-init GPT2LMHeadModel to ``path`` as config.json + model.safetensors; returns path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(initializer_range=INIT_STD, **config_overrides)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # LayerNorm gains/shifts and linear biases
                centre = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
                param.normal_(centre, 0.1)
    model.save_pretrained(path, safe_serialization=True)
    return path


def load_hf_model(path: Path):
    """The transformers model saved at ``path``, in eval mode."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path).eval()


# ---- the uer Chinese model's layout: a BERT vocabulary, uint8 causal-mask buffers ----------------------------

MAIN_CJK = [chr(code) for code in range(0x4E00, 0x9FA6)]  # the CJK block as of Unicode 4.1
# Full-width forms and CJK symbols that are punctuation (Unicode P*), so BERT splits them off like ideographs.
WIDE_PUNCTUATION = [
    chr(code)
    for code in [*range(0xFF01, 0xFF5F), *range(0x3001, 0x3020)]
    if unicodedata.category(chr(code)).startswith("P")
]
SPECIAL_HEAD = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
UER_TOKENIZER_CONFIG = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
# The model card's prompt; the uer_layout_dir fixture makes its greedy continuation end with [SEP].
UER_PROMPT = "这是很久之前的事情了"


def chinese_bert_vocab(size: int | None = None) -> list[str]:
    """Tokens in id order, laid out like bert-base-chinese's vocab.txt: [PAD]=0, [unusedN], [UNK]=100, [CLS]=101,
    [SEP]=102, [MASK]=103, then ASCII, full-width/CJK punctuation, CJK ideographs, samples of the other CJK
    blocks, "##" ideograph pieces, Latin words and "##" pieces, numbers, accented letters, emoji, kana, Hangul.

    size: None keeps every ideograph of the main CJK block; a number drops ideographs from the end of that
    block so that the vocabulary has exactly ``size`` tokens.
    """
    ascii_chars = list(string.punctuation + string.digits + string.ascii_lowercase + string.ascii_uppercase)
    other_cjk = [
        chr(code)
        for start, count in [(0x3400, 40), (0xF900, 40), (0x20000, 20), (0x2A700, 10), (0x2B740, 5),
                             (0x2B920, 5), (0x2F800, 10)]
        for code in range(start, start + count)
    ]
    cjk_pieces = ["##" + char for char in MAIN_CJK[:3000]] + ["中国", "北京", "##国人"]
    words = ("the of and to in is it hello world token play un re transform form er model chinese text cafe "
             "café naive über año python").split()
    continuations = ["##" + char for char in string.ascii_lowercase + string.ascii_uppercase + string.digits]
    suffixes = ["##" + piece for piece in
                "ing ed er ers ly ation ize izer izers able aff ment ness tion form former formers ll lo".split()]
    numbers = ["2020", "19", "100", "##20", "##00", "##19"]
    accented = list("éèüöñçàÉÜ") + ["##é", "##ü", "##ñ"]
    other = list("“”‘’…—·😀👍❤あいうアイ한국αβσςΣ") + ["##い", "##국", "##β"]
    # Never produced by encoding, but decoding must treat them like the reference's cleanup does.
    cleanup_targets = ["do not", "n't", "'s", "'re", "'m", "'ve", "' s"]
    rest = (other_cjk + cjk_pieces + words + continuations + suffixes + numbers + accented + other
            + cleanup_targets)
    head = SPECIAL_HEAD + ascii_chars + WIDE_PUNCTUATION
    n_ideographs = len(MAIN_CJK) if size is None else size - len(head) - len(rest)
    if not len(cjk_pieces) <= n_ideographs <= len(MAIN_CJK):
        raise ValueError(f"a Chinese BERT vocabulary of {size} tokens cannot be laid out like bert-base-chinese")
    vocab = head + MAIN_CJK[:n_ideographs] + rest
    assert len(vocab) == len(set(vocab)), "the test vocabulary must not repeat a token"
    return vocab


def build_uer_layout_dir(path: Path, seed: int, sep_prompt: str, sep_step: int) -> Path:
    """A random-init model saved like uer/gpt2-distil-chinese-cluecorpussmall; returns ``path``.

    The files: config.json (UER shape, GPT-2's eos/bos 50256), model.safetensors (``transformer.`` prefix, tied
    LM head, uint8 ``attn.bias`` buffers [1, 1, n_positions, n_positions]), a 21128-line Chinese BERT vocab.txt
    and tokenizer_config.json. Random weights would practically never emit [SEP], so its embedding row is
    swapped with that of the first new token the greedy continuation of ``[CLS] sep_prompt`` emits at step
    ``sep_step`` or later. Relabelling two tokens of a tied model changes nothing else, so the greedy
    continuation of that prompt now reaches [SEP] exactly there.
    """
    from safetensors.numpy import load_file, save_file
    from transformers import BertTokenizer

    build_gpt2_dir(path, seed, **UER)
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token in chinese_bert_vocab(UER["vocab_size"])),
                                    encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(UER_TOKENIZER_CONFIG), encoding="utf-8")

    tokenizer = BertTokenizer.from_pretrained(path)
    prompt = tokenizer(sep_prompt)["input_ids"][:-1]  # [CLS] + text, without BERT's closing [SEP]
    relabelled = _first_new_greedy_token(load_hf_model(path), prompt, sep_step, set(tokenizer.all_special_ids))
    tensors = load_file(path / "model.safetensors")
    wte = tensors["transformer.wte.weight"]
    wte[[relabelled, tokenizer.sep_token_id]] = wte[[tokenizer.sep_token_id, relabelled]]
    n = UER["n_positions"]
    causal_mask = np.tril(np.ones((n, n), np.uint8))[None, None]
    tensors.update({f"transformer.h.{layer}.attn.bias": causal_mask for layer in range(UER["n_layer"])})
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _first_new_greedy_token(hf_model, prompt: list[int], step: int, excluded: set[int]) -> int:
    """The first token of the greedy continuation of ``prompt``, at new-token ``step`` (1-based) or later,
    that occurs neither in ``prompt`` nor earlier in the continuation and is not in ``excluded``."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for new_tokens in range(1, 4 * step):
            token = int(hf_model(torch.tensor([ids])).logits[0, -1].argmax())
            if new_tokens >= step and token not in ids and token not in excluded:
                return token
            ids.append(token)
    raise RuntimeError(f"the greedy continuation of {prompt} repeats itself: choose another seed")
