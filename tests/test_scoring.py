"""Perplexity and feature vectors against the same computations done with transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoints import load_hf_model
from tinygpt.errors import InputError
from tinygpt.model import Model

TEXT = (
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the tallest "
    "structure in Paris. Its base is square, measuring 125 metres (410 ft) on each side. During its construction, "
    "the Eiffel Tower surpassed the Washington Monument to become the tallest man-made structure in the world. "
) * 8


def transformers_perplexity(hf_model, ids: list[int], max_length: int, stride: int) -> float:
    """The sliding-window loop of transformers' perplexity guide, verbatim in its arithmetic."""
    input_all = torch.tensor([ids])
    seq_len = input_all.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = input_all[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf_model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(np.exp(nll_sum / n_tokens))


@pytest.fixture(scope="module")
def models(small_gpt2_dir):
    return Model.from_pretrained(small_gpt2_dir), load_hf_model(small_gpt2_dir)


@pytest.mark.parametrize("stride", [64, 100, 256])
def test_perplexity_equals_the_transformers_guide(models, stride):
    model, hf = models
    ids = model.tokenizer.encode(TEXT)
    assert len(ids) > 2 * model.config.n_positions  # several windows
    expected = transformers_perplexity(hf, ids, max_length=model.config.n_positions, stride=stride)
    # Both sum float32 log-probabilities over ~600 tokens; 1e-5 relative is float32 rounding, not slack.
    assert model.perplexity(TEXT, stride=stride) == pytest.approx(expected, rel=1e-5)


def test_perplexity_reports_progress_and_checks_arguments(models):
    model, _ = models
    seen = []
    model.perplexity(TEXT, stride=128, progress=lambda done, total: seen.append((done, total)))
    total = len(model.tokenizer.encode(TEXT))
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    n_positions = model.config.n_positions
    bad_arguments = [
        ({"stride": 0}, rf"stride must be an integer between 1 and max_length \({n_positions}\), got 0"),
        ({"stride": 2.0}, rf"stride must be an integer between 1 and max_length \({n_positions}\), got 2.0"),
        ({"max_length": 1}, rf"max_length must be an integer between 2 and n_positions \({n_positions}\), got 1"),
        ({"max_length": 10.0}, "max_length must be an integer between 2 and n_positions .*, got 10.0"),
        ({"max_length": n_positions + 1}, f"max_length must be .*, got {n_positions + 1}"),
    ]
    for options, message in bad_arguments:
        with pytest.raises(ValueError, match=message):
            model.perplexity(TEXT, **options)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        model.perplexity("a")


def test_embed_is_the_mean_of_transformers_hidden_states(models):
    model, hf = models
    texts = ["A short sentence.", "Another, somewhat longer sentence about the Eiffel Tower."]
    vectors = model.embed(texts)
    assert vectors.shape == (2, model.config.n_embd) and vectors.dtype == np.float32
    for text, vector in zip(texts, vectors):
        with torch.no_grad():
            hidden = hf(torch.tensor([model.tokenizer.encode(text)]), output_hidden_states=True).hidden_states[-1]
        np.testing.assert_allclose(vector, hidden[0].mean(dim=0).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(model.embed(texts[0]), vectors[0])


def test_embed_names_the_text_it_cannot_take(models):
    model, _ = models
    with pytest.raises(ValueError, match="embed needs at least one text"):
        model.embed([])
    with pytest.raises(InputError, match="embed takes a str or a list of str, got bytes"):
        model.embed(b"abc")
    too_long = "word " * (model.config.n_positions + 10)
    with pytest.raises(ValueError, match=rf"text 1 has \d+ tokens, more than the model's context of "
                                         rf"{model.config.n_positions} positions"):
        model.embed(["fine", too_long])


def test_perplexity_takes_token_ids_too(models, tiny_model_dir):
    model, _ = models
    ids = model.tokenizer.encode(TEXT)
    expected = model.perplexity(TEXT, stride=100)
    assert model.perplexity(ids, stride=100) == expected
    assert model.perplexity(np.array(ids, np.uint16), stride=100) == expected
    # A model without a tokenizer scores ids, and says so when given text.
    bare = Model.from_pretrained(tiny_model_dir)
    tiny_ids = list(range(3, 300))
    assert bare.perplexity(tiny_ids, stride=50) == pytest.approx(
        transformers_perplexity(load_hf_model(tiny_model_dir), tiny_ids, max_length=128, stride=50), rel=1e-5)
    with pytest.raises(InputError, match=r"no tokenizer \(its directory had no tokenizer files\) to score text "
                                         r"\(pass its token ids instead\)"):
        bare.perplexity("some text")
    with pytest.raises(InputError, match=r"token id 1000 at position 2 is outside the vocabulary \(0..999\)"):
        bare.perplexity([1, 2, 1000])
    with pytest.raises(InputError, match=r"perplexity scores one sequence: token ids of shape \[T\], got \[1, 3\]"):
        bare.perplexity([[1, 2, 3]])
    with pytest.raises(InputError, match="must be integers, got dtype float64"):
        bare.perplexity([1.0, 2.0])


def test_perplexity_lengths_may_be_numpy_integers(models):
    model, _ = models
    # An unsigned max_length used to wrap in the window arithmetic and return nan.
    expected = model.perplexity(TEXT, max_length=64)
    assert model.perplexity(TEXT, max_length=np.uint64(64)) == expected
    assert model.perplexity(TEXT, max_length=np.uint64(64), stride=np.uint8(32)) == expected


def test_perplexity_checks_progress_before_the_first_window(models, monkeypatch):
    model, _ = models
    windows = []
    logits = model.logits
    monkeypatch.setattr(model, "logits", lambda ids: windows.append(ids) or logits(ids))
    with pytest.raises(InputError, match=r"progress must be callable as progress\(done, total\), got int"):
        model.perplexity(TEXT, progress=5)
    assert windows == []
