"""The logits processors and the sampler against transformers' own: each processor alone (ties, -inf, limits
where float32 overflows), the chain ``generate`` builds for a set of options, and sampling statistics."""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from checkpoints import load_hf_model
from tinygpt.errors import InputError
from tinygpt.generation import GenerationOptions
from tinygpt.sampling import (
    apply_openai_adjustments,
    apply_repetition_penalty,
    apply_temperature,
    logprobs_of,
    process_logits,
    sample_token,
    top_k_filter,
    top_p_filter,
)

SHAPES = [(1, 1), (1, 2), (3, 7), (4, 16), (2, 1000), (1, 50257)]


def random_logits(seed: int, shape, *, ties: bool = False, n_minus_inf: int = 0) -> np.ndarray:
    """float32 logits; ``ties`` rounds them to integers (many equal values); some entries may be -inf."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, shape).astype(np.float32)
    if ties:
        logits = np.round(logits)
    for row in logits.reshape(-1, shape[-1]):
        row[rng.choice(shape[-1], min(n_minus_inf, shape[-1] - 1), replace=False)] = -np.inf
    return logits


def hf_process(processor, logits: np.ndarray, input_ids=None) -> np.ndarray:
    """Apply a transformers logits processor to float32 logits [B, V]."""
    ids = torch.zeros((logits.shape[0], 1), dtype=torch.long) if input_ids is None else torch.as_tensor(input_ids)
    return processor(ids, torch.from_numpy(logits.copy())).numpy()


# ------------------------------------------------------------------------------ logits processing vs transformers
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", [0.3, 1.7])
def test_temperature_matches_transformers(shape, temperature):
    logits = random_logits(1, shape, n_minus_inf=1)
    expected = hf_process(TemperatureLogitsWarper(temperature), logits)
    ours = apply_temperature(logits, temperature)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("penalty", [0.5, 1.2, 3.0])
def test_repetition_penalty_matches_transformers(shape, penalty):
    batch, vocab = shape
    logits = random_logits(2, shape)
    previous = np.random.default_rng(3).integers(0, vocab, (batch, 9))  # repeats included
    expected = hf_process(RepetitionPenaltyLogitsProcessor(penalty), logits, previous)
    np.testing.assert_array_equal(apply_repetition_penalty(logits, previous, penalty), expected)
    np.testing.assert_array_equal(apply_repetition_penalty(logits[0], previous[0], penalty), expected[0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("top_k", [1, 3, 10, 1000, 60000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("min_keep", [1, 5])
def test_top_k_matches_transformers_with_ties_and_minus_inf(shape, top_k, ties, min_keep):
    logits = random_logits(4, shape, ties=ties, n_minus_inf=shape[-1] // 3)
    expected = hf_process(TopKLogitsWarper(top_k, min_tokens_to_keep=min_keep), logits)
    ours = top_k_filter(logits, top_k, min_tokens_to_keep=min_keep)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


def exact_cumulative_probabilities(logits: np.ndarray) -> np.ndarray:
    """float64 cumulative softmax probability of each token in ascending order, scattered back [B, V]."""
    order = np.argsort(logits, axis=-1, kind="stable")
    ascending = np.take_along_axis(logits.astype(np.float64), order, -1)
    p = np.exp(ascending - ascending[:, -1:])
    cumulative = np.empty_like(p)
    np.put_along_axis(cumulative, order, np.cumsum(p, -1) / p.sum(-1, keepdims=True), -1)
    return cumulative


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("top_p", [0.0, 0.25, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("n_minus_inf", [0, 5])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_p_matches_transformers(shape, top_p, n_minus_inf, min_keep):
    logits = random_logits(5, shape, n_minus_inf=n_minus_inf)
    expected = hf_process(TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep), logits)
    ours = top_p_filter(logits, top_p, min_tokens_to_keep=min_keep)
    assert ours.dtype == np.float32
    # transformers sums probabilities in float32 (we use float64); over 50k tokens its running sum drifts by
    # ~1e-6, so a token whose exact cumulative probability is that close to 1 - top_p may fall either way.
    borderline = np.abs(exact_cumulative_probabilities(logits) - (1 - top_p)) < 1e-5
    differ = (ours == -np.inf) != (expected == -np.inf)
    assert not (differ & ~borderline).any()
    np.testing.assert_array_equal(ours[~differ], expected[~differ])


@pytest.mark.parametrize("vocab", [2, 5, 16])
@pytest.mark.parametrize("top_p", [0.0, 0.37, 0.61, 0.93])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_p_breaks_ties_like_transformers(vocab, top_p, min_keep):
    # Integer logits: many equal values, so ties straddle the top-p boundary. transformers' order among ties
    # comes from torch.sort, which is stable for rows this short (checked below), so its result is defined.
    logits = random_logits(6, (200, vocab), ties=True)
    logits[:20] = 0.0  # rows of one repeated value
    sort = torch.sort(torch.from_numpy(logits), descending=False)
    assert torch.equal(sort.indices, torch.sort(torch.from_numpy(logits), descending=False, stable=True).indices)
    expected = hf_process(TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep), logits)
    np.testing.assert_array_equal(top_p_filter(logits, top_p, min_tokens_to_keep=min_keep), expected)


@pytest.mark.parametrize("top_p", [0.37, 0.9])
def test_top_p_with_ties_in_a_large_vocabulary_keeps_as_many_tokens_as_transformers(top_p):
    # At this size torch.sort is not stable, so transformers may keep other members of the tied group at the
    # boundary. What must agree: how many tokens survive, and every survivor not tied with the boundary.
    logits = random_logits(7, (4, 50257), ties=True)
    ours, expected = top_p_filter(logits, top_p) > -np.inf, hf_process(TopPLogitsWarper(top_p), logits) > -np.inf
    np.testing.assert_array_equal(ours.sum(-1), expected.sum(-1))
    boundary = np.where(expected, logits, np.inf).min(-1, keepdims=True)
    assert (logits[ours != expected] == np.broadcast_to(boundary, logits.shape)[ours != expected]).all()


def limit_softmax(scores: np.ndarray) -> np.ndarray:
    """softmax in float64 (exact enough to see a one-hot or an equal split exactly)."""
    weights = np.exp(scores.astype(np.float64) - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1e-40, 1e-320])  # overflows float32; not even a float32 itself
def test_tiny_temperature_gives_its_limit_not_nan(temperature):
    logits = np.array([[1.5, -2.0, 3.0, 3.0, -np.inf], [0.5, -1.0, 0.25, 0.0, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarnings either
        scaled = apply_temperature(logits, temperature)
    assert scaled.dtype == np.float32 and not np.isnan(scaled).any()
    # As the temperature goes to 0 the largest logit takes all the probability (tied largest ones share it).
    np.testing.assert_array_equal(limit_softmax(scaled), [[0, 0, 0.5, 0.5, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.argmax(scaled, axis=-1), np.argmax(logits, axis=-1))


def test_huge_temperature_gives_its_limit_not_nan():
    logits = np.array([1.5, -2.0, 3.0, -np.inf], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = apply_temperature(logits, 1e300)  # infinite as a float32: -inf / inf would be NaN
    np.testing.assert_array_equal(limit_softmax(scaled), [1 / 3, 1 / 3, 1 / 3, 0])


@pytest.mark.parametrize("penalty", [1e-38, 1e-45, 1e-320])
def test_tiny_repetition_penalty_gives_its_limit_not_nan(penalty):
    # Seen tokens: 0 and 3 (largest logit among them, tied), 2 (negative), 4. Token 5 is larger but unseen.
    logits = np.array([3.0, 5.0, -1.0, 3.0, 0.5, 6.0, 0.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = apply_repetition_penalty(logits, [0, 3, 2, 4, 3], penalty)
    assert scores.dtype == np.float32 and not np.isnan(scores).any()
    # A penalty going to 0 multiplies the positive seen logits without bound: the largest of them wins.
    np.testing.assert_array_equal(limit_softmax(scores), [0.5, 0, 0, 0.5, 0, 0, 0])
    batch = apply_repetition_penalty(np.stack([logits, logits[::-1]]), [[0, 3, 2], [1, 6, 3]], penalty)
    np.testing.assert_array_equal(limit_softmax(batch), [[0.5, 0, 0, 0.5, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]])


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    """transformers' model of the tiny checkpoint: what builds transformers' processor chain for a set of options."""
    return load_hf_model(tiny_model_dir)


SETTINGS = [
    dict(do_sample=False, repetition_penalty=1.4),
    dict(do_sample=True),  # transformers' defaults: top_k=50
    dict(do_sample=True, temperature=0.7, top_k=9, top_p=0.9, repetition_penalty=1.3),
    dict(do_sample=True, temperature=1.8, top_k=0, top_p=0.5),
    dict(do_sample=True, temperature=0.5, top_k=400, top_p=0.97, repetition_penalty=0.8),
]


def hf_processors(hf, settings: dict, prompt_length: int):
    """The logits processors transformers' generate builds for ``settings`` (its defaults filled in its way)."""
    config, _ = hf._prepare_generation_config(None, **settings)
    return hf._get_logits_processor(generation_config=config, input_ids_seq_length=prompt_length)


@pytest.mark.parametrize("settings", SETTINGS)
def test_processing_pipeline_is_transformers_own(hf, settings):
    """Our whole chain against the processor list transformers' generate builds from the same settings."""
    previous = np.random.default_rng(8).integers(0, 1000, 30)
    processors = hf_processors(hf, settings, len(previous))
    # Only the four processors we implement take part (nothing else in transformers' chain to mirror).
    known = (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    assert processors and all(isinstance(processor, known) for processor in processors)
    for seed in range(10):
        logits = random_logits(seed, (1, 1000))
        expected = hf_process(processors, logits, previous[None])[0]
        ours = process_logits(logits[0], previous, GenerationOptions(**settings))
        np.testing.assert_array_equal(ours, expected)


# ------------------------------------------------------------------------------ OpenAI's penalties and logit bias
def openai_formula(logits: np.ndarray, generated, presence: float, frequency: float, bias: dict) -> np.ndarray:
    """OpenAI's definition, written out over the whole vocabulary in float64 and rounded to float32 once."""
    vocab = logits.shape[-1]
    counts = np.bincount(np.asarray(generated, np.int64), minlength=vocab).astype(np.float64)
    bias_row = np.zeros(vocab)
    for token, value in bias.items():
        bias_row[token] = value
    adjusted = logits.astype(np.float64) + (bias_row - (counts * frequency + (counts > 0) * presence))
    return adjusted.astype(logits.dtype)


OPENAI_SETTINGS = [
    dict(presence_penalty=0.7, frequency_penalty=0.0),
    dict(presence_penalty=0.0, frequency_penalty=1.3),
    dict(presence_penalty=-2.0, frequency_penalty=2.0, logit_bias={3: 100.0, 17: -100, 500: 0.25}),
    dict(logit_bias={0: -3.5, 999: 42}),
]


@pytest.mark.parametrize("settings", OPENAI_SETTINGS)
def test_presence_frequency_and_bias_follow_openais_formula(settings):
    rng = np.random.default_rng(11)
    prompt = rng.integers(0, 50, 30)  # repeats in the prompt, which must not count
    generated = rng.integers(0, 60, 25)  # repeats and prompt tokens among them
    previous = np.concatenate([prompt, generated])
    presence, frequency = settings.get("presence_penalty", 0.0), settings.get("frequency_penalty", 0.0)
    bias = settings.get("logit_bias", {})
    for seed in range(5):
        logits = random_logits(seed, (1000,))
        expected = openai_formula(logits, generated, presence, frequency, bias)
        assert not np.array_equal(expected, logits)
        np.testing.assert_array_equal(apply_openai_adjustments(logits, generated, presence, frequency, bias),
                                      expected)
        greedy = process_logits(logits, previous, GenerationOptions(**settings), prompt_length=len(prompt))
        np.testing.assert_array_equal(greedy, expected)
        # Sampling: after the repetition penalty, before temperature and the filters.
        sampling = dict(do_sample=True, temperature=0.6, top_k=40, top_p=0.9, repetition_penalty=1.3)
        ours = process_logits(logits, previous, GenerationOptions(**settings, **sampling), prompt_length=len(prompt))
        penalised = apply_repetition_penalty(logits, previous, 1.3)
        chained = process_logits(openai_formula(penalised, generated, presence, frequency, bias), previous,
                                 GenerationOptions(do_sample=True, temperature=0.6, top_k=40, top_p=0.9))
        np.testing.assert_array_equal(ours, chained)


def test_penalty_and_bias_options_are_checked():
    for name in ("presence_penalty", "frequency_penalty"):
        for bad in (2.5, -2.01, float("nan"), float("inf"), "1", True):
            with pytest.raises(InputError, match=f"{name} must be a number between -2 and 2"):
                GenerationOptions(**{name: bad})
        assert getattr(GenerationOptions(**{name: np.float32(-2)}), name) == -2.0
    with pytest.raises(InputError, match="logit_bias must be a mapping"):
        GenerationOptions(logit_bias=[(1, 2.0)])
    for key in (-1, 1.5, True, "x", "-3"):
        with pytest.raises(InputError, match=f"logit_bias key {key!r} is not a token id"):
            GenerationOptions(logit_bias={key: 1.0})
    for value in (100.5, -101, float("nan"), "5"):
        with pytest.raises(InputError, match=r"logit_bias\[7\] must be a number between -100 and 100"):
            GenerationOptions(logit_bias={7: value})
    # JSON object keys are strings: digit strings are ids too.
    assert GenerationOptions(logit_bias={"12": 5, np.int64(3): -1.5}).logit_bias == {12: 5.0, 3: -1.5}


# ----------------------------------------------------------------------------------------------- log-probabilities
def test_logprobs_of_is_log_softmax_in_float64_with_the_likeliest_first():
    logits = random_logits(12, (6, 300), ties=True, n_minus_inf=3)
    tokens = np.array([0, 5, 17, 299, 42, 7])
    exact = torch.log_softmax(torch.from_numpy(logits).double(), -1).numpy()
    for top_n in (0, 1, 5, 20):
        chosen, tops = logprobs_of(logits, tokens, top_n)
        assert chosen.dtype == np.float64
        np.testing.assert_allclose(chosen, exact[np.arange(6), tokens], rtol=1e-14, atol=0)
        for row, top in enumerate(tops):
            assert len(top) == top_n
            # The likeliest first; ties (integer logits tie often) by id.
            want = sorted(range(300), key=lambda j: (-exact[row, j], j))[:top_n]
            assert [token for token, _ in top] == want
            np.testing.assert_allclose([value for _, value in top], exact[row, want], rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------------ sampling
def chi_square_critical_value(df: int, alpha: float) -> float:
    """Upper-alpha point of the chi-square distribution (Wilson-Hilferty: chi2/df is close to normal after a
    cube root; accurate to a few percent for df >= 3, far finer than the margins tested here)."""
    z = NormalDist().inv_cdf(1 - alpha)
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_frequencies_follow_the_filtered_distribution(hf):
    settings = dict(do_sample=True, temperature=1.3, top_k=9, top_p=0.97, repetition_penalty=1.3)
    previous = [2, 5]
    logits = random_logits(9, (1, 12))
    processors = hf_processors(hf, settings, len(previous))
    reference = torch.softmax(torch.from_numpy(hf_process(processors, logits, [previous])).double(), -1)[0].numpy()
    kept = reference > 0
    assert 5 <= kept.sum() < 9  # top-k and then top-p removed tokens, and left a real choice

    scores = process_logits(logits[0], previous, GenerationOptions(**settings))
    rng = np.random.default_rng(10)
    draws = 20_000
    counts = np.bincount([sample_token(scores, rng) for _ in range(draws)], minlength=12)
    assert counts[~kept].sum() == 0  # filtered tokens are never drawn
    assert draws * reference[kept].min() >= 5  # every cell large enough for the chi-square approximation
    # alpha = 1e-3: a correct sampler fails one seed in a thousand; the seed is fixed, so this never flakes.
    critical = chi_square_critical_value(int(kept.sum()) - 1, alpha=1e-3)
    statistic = chi_square(counts[kept], reference[kept])
    print(f"chi-square {statistic:.2f} over {kept.sum() - 1} degrees of freedom, critical value {critical:.2f}")
    assert statistic < critical
    # The test has teeth: the same draws are rejected against the distribution before temperature and top-p.
    unwarped = torch.softmax(torch.from_numpy(hf_process(TopKLogitsWarper(9), hf_process(
        RepetitionPenaltyLogitsProcessor(1.3), logits, [previous]))).double(), -1)[0].numpy()
    assert chi_square(counts[kept], unwarped[kept] / unwarped[kept].sum()) > 10 * critical


class FixedDraw:
    """Stands in for a Generator whose next uniform draw is known."""

    def __init__(self, u: float):
        self.u = u

    def random(self) -> float:
        return self.u


def test_sample_token_inverts_the_cdf_and_skips_minus_inf():
    logits = np.array([-np.inf, 0.0, -np.inf, np.log(3.0)], np.float32)  # p = [0, 1/4, 0, 3/4]
    for u, expected in [(0.0, 1), (0.2499, 1), (0.2501, 3), (0.9999, 3)]:
        assert sample_token(logits, FixedDraw(u)) == expected
    with pytest.raises(InputError, match="every logit is -inf"):
        sample_token(np.full(4, -np.inf), np.random.default_rng(0))
