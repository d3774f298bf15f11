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
    packed_hidden = model._packed_hidden
    monkeypatch.setattr(model, "_packed_hidden", lambda *args: windows.append(args) or packed_hidden(*args))
    with pytest.raises(InputError, match=r"progress must be callable as progress\(done, total\), got int"):
        model.perplexity(TEXT, progress=5)
    assert windows == []
    model.perplexity(TEXT, progress=None)
    assert windows  # the hook sees the forward passes


# ---- Model.score: many documents packed into shared forward passes ---------------------------------------

DOCUMENTS = [
    "Hi there",
    "The Eiffel Tower is in Paris.",
    TEXT[:300],
    TEXT,  # longer than the small model's context: sliding windows
    "A tower, a bridge and a river.",
]


def transformers_token_logprobs(hf_model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0, :-1].double()
    return torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


def test_score_gives_transformers_token_logprobs_and_the_guides_perplexity(models):
    model, hf = models
    results = model.score(DOCUMENTS, stride=100)
    assert len(results) == len(DOCUMENTS)
    for text, result in zip(DOCUMENTS, results):
        ids = model.tokenizer.encode(text)
        assert result.tokens == len(ids) and result.token_logprobs.shape == (len(ids) - 1,)
        assert result.token_logprobs.dtype == np.float64 and result.embedding is None
        assert result.perplexity == pytest.approx(np.exp(result.nll), rel=1e-12)
        n_positions = model.config.n_positions
        assert result.perplexity == pytest.approx(
            transformers_perplexity(hf, ids, max_length=n_positions, stride=100), rel=1e-5)
        if len(ids) <= n_positions:
            # float32 logits differ from transformers' by ~1e-6 (float32 rounding in another order); a
            # log-probability moves by at most twice a logit's error.
            np.testing.assert_allclose(result.token_logprobs, transformers_token_logprobs(hf, ids), rtol=0, atol=5e-6)
            assert result.nll == pytest.approx(-result.token_logprobs.mean(), rel=1e-12)
        else:
            # Each token is scored once, by the first window that holds it, with that window's context.
            begin = 100 * ((len(ids) - n_positions + 99) // 100)  # the last window
            last = ids[begin:]
            new = len(ids) - (begin - 100 + n_positions)
            np.testing.assert_allclose(result.token_logprobs[-new:],
                                       transformers_token_logprobs(hf, last)[-new:], rtol=0, atol=5e-6)


def test_a_document_scores_the_same_bits_alone_or_among_others(models):
    """A document's numbers never depend on its batch: the same whatever is packed beside it."""
    model, _ = models
    together = model.score(DOCUMENTS, embed=True, stride=100)
    for text, result in zip(DOCUMENTS, together):
        alone = model.score(text, embed=True, stride=100)
        np.testing.assert_array_equal(alone.token_logprobs, result.token_logprobs)
        np.testing.assert_array_equal(alone.embedding, result.embedding)
        assert (alone.nll, alone.perplexity) == (result.nll, result.perplexity)
    reordered = model.score(DOCUMENTS[::-1] + DOCUMENTS, embed=True, stride=100)
    for result, again in zip(together, reordered[len(DOCUMENTS):]):
        np.testing.assert_array_equal(again.token_logprobs, result.token_logprobs)


def test_int8_scores_are_batch_invariant_and_close_to_float32(small_gpt2_dir, models):
    model, _ = models
    int8 = Model.from_pretrained(small_gpt2_dir, dtype="int8")
    together = int8.score(DOCUMENTS)
    for text, result, full in zip(DOCUMENTS, together, model.score(DOCUMENTS)):
        np.testing.assert_array_equal(int8.score(text).token_logprobs, result.token_logprobs)
        assert result.perplexity == pytest.approx(full.perplexity, rel=0.05)


def test_score_embedding_is_the_mean_of_the_hidden_states(models):
    model, _ = models
    short = DOCUMENTS[:3]
    for result, vector in zip(model.score(short, embed=True), model.embed(short)):
        assert result.embedding.dtype == np.float32
        np.testing.assert_allclose(result.embedding, vector, rtol=0, atol=1e-5)
    # Longer than the context: each token's hidden state as the first window holding it saw it.
    long_ids = model.tokenizer.encode(TEXT)
    n = model.config.n_positions
    first, = model.score([long_ids[:n]], embed=True, stride=n)
    whole = model.score(long_ids, embed=True, stride=n)
    rest = model.hidden_states(long_ids[n:2 * n]).sum(axis=0, dtype=np.float64)
    tail = model.hidden_states(long_ids[2 * n:]).sum(axis=0, dtype=np.float64) if len(long_ids) > 2 * n else 0.0
    expected = (first.embedding.astype(np.float64) * n + rest + tail) / len(long_ids)
    np.testing.assert_allclose(whole.embedding, expected, rtol=0, atol=1e-5)


def test_score_takes_ids_and_names_the_document_it_cannot_take(models, tiny_model_dir):
    model, _ = models
    ids = model.tokenizer.encode(DOCUMENTS[1])
    by_text = model.score(DOCUMENTS[1])
    for form in (ids, np.array(ids, np.uint16)):
        np.testing.assert_array_equal(model.score(form).token_logprobs, by_text.token_logprobs)
    assert [r.tokens for r in model.score([ids, DOCUMENTS[0]])] == [len(ids), 2]
    with pytest.raises(InputError, match="score needs at least one document"):
        model.score([])
    with pytest.raises(InputError, match="document 1 has 1 token; scoring needs at least 2"):
        model.score(["Hi there", "Hi"])
    with pytest.raises(InputError, match=r"document 0: token id 50257 at position 1 is outside"):
        model.score([[1, 50257]])
    with pytest.raises(InputError, match="embed must be"):
        model.score(DOCUMENTS[0], embed="yes")
    bare = Model.from_pretrained(tiny_model_dir)
    with pytest.raises(InputError, match="no tokenizer"):
        bare.score("text")
    assert bare.score([[1, 2, 3], [4, 5]])[1].tokens == 2


def test_score_reports_progress_in_tokens(models):
    model, _ = models
    seen = []
    model.score(DOCUMENTS, stride=100, progress=lambda done, total: seen.append((done, total)))
    total = sum(len(model.tokenizer.encode(text)) for text in DOCUMENTS)
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
