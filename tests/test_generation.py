"""Generation against transformers: its logits processors, its greedy ``generate``, its length rules; plus
sampling statistics, seeding, batching, streaming, stop strings and threads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
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
from tinygpt.generation import (
    GenerationOptions,
    apply_repetition_penalty,
    apply_temperature,
    generate,
    process_logits,
    sample_token,
    set_seed,
    stream,
    top_k_filter,
    top_p_filter,
)
from tinygpt.model import Model

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
def tiny(tiny_model_dir):
    return Model.from_pretrained(tiny_model_dir), load_hf_model(tiny_model_dir)


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
def test_processing_pipeline_is_transformers_own(tiny, settings):
    """Our whole chain against the processor list transformers' generate builds from the same settings."""
    _, hf = tiny
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


# ------------------------------------------------------------------------------------------------------ sampling
def chi_square_critical_value(df: int, alpha: float) -> float:
    """Upper-alpha point of the chi-square distribution (Wilson-Hilferty: chi2/df is close to normal after a
    cube root; accurate to a few percent for df >= 3, far finer than the margins tested here)."""
    z = NormalDist().inv_cdf(1 - alpha)
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_frequencies_follow_the_filtered_distribution(tiny):
    _, hf = tiny
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
    with pytest.raises(ValueError, match="every logit is -inf"):
        sample_token(np.full(4, -np.inf), np.random.default_rng(0))


SAMPLING = dict(do_sample=True, temperature=1.5, top_k=0, max_new_tokens=20)


def test_same_seed_same_output_and_different_seeds_differ(tiny):
    model, _ = tiny
    first = generate(model, [3, 4, 5], seed=7, num_return_sequences=3, **SAMPLING)
    assert generate(model, [3, 4, 5], seed=7, num_return_sequences=3, **SAMPLING) == first
    assert generate(model, [3, 4, 5], seed=8, num_return_sequences=3, **SAMPLING) != first
    assert len({tuple(ids) for ids in first}) == 3  # each returned sequence has its own random stream


@pytest.fixture
def default_seed_reset():
    yield
    set_seed(None)


def test_set_seed_makes_unseeded_calls_reproducible(tiny, default_seed_reset):
    model, _ = tiny
    set_seed(42)
    first = generate(model, [3, 4, 5], **SAMPLING)
    assert generate(model, [3, 4, 5], **SAMPLING) == first == generate(model, [3, 4, 5], seed=42, **SAMPLING)
    set_seed(None)  # back to fresh entropy: two calls differ (20 draws from a broad distribution)
    assert generate(model, [3, 4, 5], **SAMPLING) != generate(model, [3, 4, 5], **SAMPLING)


def test_seeded_output_is_the_same_in_another_process(tiny, tiny_model_dir, default_seed_reset):
    model, _ = tiny
    script = textwrap.dedent("""
        import json, sys
        from tinygpt.generation import generate, set_seed
        from tinygpt.model import Model
        model = Model.from_pretrained(sys.argv[1])
        options = json.loads(sys.argv[2])
        seeded = generate(model, [[1, 2, 3], [4, 5]], seed=123, num_return_sequences=2, **options)
        set_seed(42)
        print(json.dumps([seeded, generate(model, [7, 8, 9], **options)]))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(tiny_model_dir), json.dumps(SAMPLING)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    seeded = generate(model, [[1, 2, 3], [4, 5]], seed=123, num_return_sequences=2, **SAMPLING)
    set_seed(42)
    assert json.loads(run.stdout.splitlines()[-1]) == [seeded, generate(model, [7, 8, 9], **SAMPLING)]


# -------------------------------------------------------------------------------------------- greedy vs transformers
def hf_generate(hf, prompt: list[int], **kwargs) -> list[int]:
    """transformers' generate for one prompt (no padding involved), as a list of ids."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, **kwargs)
    return out[0].tolist()


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_tiny_greedy_matches_transformers(tiny, penalty):
    model, hf = tiny
    prompt = [11, 22, 33, 44, 55]
    expected = hf_generate(hf, prompt, max_new_tokens=100, repetition_penalty=penalty)
    assert generate(model, prompt, max_new_tokens=100, repetition_penalty=penalty) == [expected]


@pytest.fixture(scope="module")
def distil(distilgpt2_shape_dir):
    return Model.from_pretrained(distilgpt2_shape_dir), load_hf_model(distilgpt2_shape_dir)


def test_distilgpt2_shape_greedy_matches_transformers(distil):
    model, hf = distil
    prompt = [464, 2068, 7586, 21831, 18045, 625, 262]
    expected = hf_generate(hf, prompt, max_new_tokens=100)
    ours = generate(model, prompt, max_new_tokens=100)
    print(f"distilgpt2 shape: {len(expected) - len(prompt)} new tokens, {len(set(expected[len(prompt):]))} distinct")
    assert ours == [expected]


def first_new_token_at(tokens: list[int], at_least: int) -> int:
    """Index of the first token from ``at_least`` on that does not occur earlier in ``tokens``."""
    return next(i for i in range(at_least, len(tokens)) if tokens[i] not in tokens[:i])


def test_generation_stops_at_eos_like_transformers(tiny):
    model, hf = tiny
    prompt = [7, 300, 12]
    free = hf_generate(hf, prompt, max_new_tokens=40, repetition_penalty=1.5)[len(prompt):]
    assert len(free) == 40 and model.config.eos_token_id not in free  # the config's EOS does not come up here
    stop_at = first_new_token_at(free, 5)
    eos = free[stop_at]
    expected = hf_generate(hf, prompt, max_new_tokens=40, repetition_penalty=1.5, eos_token_id=eos)
    assert expected == prompt + free[:stop_at + 1]  # transformers did stop there, EOS included
    assert generate(model, prompt, max_new_tokens=40, repetition_penalty=1.5, eos_token_id=eos) == [expected]
    # A list: any of its ids ends the sequence.
    absent = next(i for i in range(1000) if i not in free)
    later = first_new_token_at(free, stop_at + 1)
    expected = hf_generate(hf, prompt, max_new_tokens=40, repetition_penalty=1.5, eos_token_id=[absent, free[later]])
    assert expected == prompt + free[:later + 1]
    assert generate(model, prompt, max_new_tokens=40, repetition_penalty=1.5,
                    eos_token_id=[absent, free[later]]) == [expected]
    assert generate(model, prompt, max_new_tokens=40, repetition_penalty=1.5,
                    eos_token_id=None) == [prompt + free]


# -------------------------------------------------------------------------------------------------------- lengths
@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_max_length_and_max_new_tokens_follow_transformers(tiny):
    model, hf = tiny
    prompt = [5, 6, 7, 8, 9]
    for lengths in [dict(max_new_tokens=6), dict(max_length=12), {}]:
        assert generate(model, prompt, **lengths) == [hf_generate(hf, prompt, **lengths)], lengths
    assert len(generate(model, prompt)[0]) == len(prompt) + 20  # the default: 20 new tokens
    with pytest.warns(UserWarning, match="max_new_tokens takes precedence"):
        both = generate(model, prompt, max_new_tokens=3, max_length=12)
    assert both == [hf_generate(hf, prompt, max_new_tokens=3, max_length=12)]
    with pytest.raises(ValueError, match="prompt 0 has 5 tokens but max_length is 5"):
        generate(model, prompt, max_length=5)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_lengths_near_the_context_end(tiny):
    model, hf = tiny
    long_prompt = list(range(100, 220))  # 120 of the tiny model's 128 positions
    # Default length: 20 new tokens, cut at the context like transformers does.
    assert generate(model, long_prompt) == [hf_generate(hf, long_prompt)]
    assert len(generate(model, long_prompt)[0]) == 128
    assert generate(model, long_prompt, max_new_tokens=8) == [hf_generate(hf, long_prompt, max_new_tokens=8)]
    with pytest.raises(ValueError, match="past the model's context of 128 positions"):
        generate(model, long_prompt, max_new_tokens=9)
    with pytest.raises(ValueError, match="past the model's context of 128 positions"):
        generate(model, long_prompt, max_length=129)
    with pytest.raises(ValueError, match="fills the model's context of 128 positions"):
        generate(model, list(range(128)), max_new_tokens=1)


# -------------------------------------------------------------------------------------------------------- batches
PROMPTS = [[17, 250, 3], list(range(40, 51)), [901], [5, 5, 5, 5, 5, 5, 5]]


def test_batched_greedy_equals_each_prompt_alone(tiny):
    model, hf = tiny
    # An EOS from the first prompt's own continuation, so that row finishes while the others go on.
    free = hf_generate(hf, PROMPTS[0], max_new_tokens=30, repetition_penalty=1.5)[len(PROMPTS[0]):]
    eos = free[first_new_token_at(free, 3)]
    options = dict(max_new_tokens=30, repetition_penalty=1.5, eos_token_id=eos)
    alone = [generate(model, prompt, **options)[0] for prompt in PROMPTS]
    assert len(alone[0]) < len(PROMPTS[0]) + 30 and alone[0][-1] == eos
    assert generate(model, PROMPTS, **options) == alone
    assert alone[1] == hf_generate(hf, PROMPTS[1], **options)


def test_batched_sampling_equals_each_prompt_alone_at_its_row(tiny):
    model, _ = tiny
    options = dict(do_sample=True, top_k=20, max_new_tokens=25, seed=99)
    batch = generate(model, PROMPTS, **options)
    # Output row i draws from stream i; a prompt alone reaches stream i as its (i+1)-th returned sequence.
    alone = [generate(model, prompt, num_return_sequences=i + 1, **options)[i] for i, prompt in enumerate(PROMPTS)]
    assert batch == alone
    assert [ids[:len(p)] for ids, p in zip(batch, PROMPTS)] == PROMPTS


def test_num_return_sequences_are_prompt_major(tiny):
    model, _ = tiny
    options = dict(do_sample=True, max_new_tokens=6, seed=5)
    out = generate(model, PROMPTS[:2], num_return_sequences=3, **options)
    assert [ids[:len(PROMPTS[i // 3])] for i, ids in enumerate(out)] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert out[3] == generate(model, PROMPTS[1], num_return_sequences=4, **options)[3]


def test_batch_too_long_to_pad_together_still_equals_each_prompt_alone(tiny):
    model, hf = tiny
    prompts = [list(range(300, 400)), [8, 9]]  # padded together they would need 100 + 118 - 1 positions
    out = generate(model, prompts, max_length=120, repetition_penalty=1.3)
    assert out == [hf_generate(hf, p, max_length=120, repetition_penalty=1.3) for p in prompts]


def test_two_dimensional_array_input(tiny):
    model, _ = tiny
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert generate(model, ids, max_new_tokens=4) == generate(model, ids.tolist(), max_new_tokens=4)
    assert generate(model, np.array([1, 2, 3]), max_new_tokens=4) == generate(model, [1, 2, 3], max_new_tokens=4)


# ---------------------------------------------------------------------------------- streaming and stop strings
@pytest.fixture(scope="module")
def talker(small_gpt2_dir):
    """A small random model over GPT-2's real vocabulary, with the GPT-2 tokenizer."""
    return Model.from_pretrained(small_gpt2_dir), load_hf_model(small_gpt2_dir)


@pytest.mark.parametrize("options", [dict(max_new_tokens=60, repetition_penalty=1.3),
                                     dict(do_sample=True, max_new_tokens=80, seed=3)])
def test_streamed_text_joins_to_the_decoded_continuation(talker, options):
    model, _ = talker
    prompt = model.tokenizer.encode("The quick brown fox")
    pieces = []
    ids = generate(model, prompt, streamer=pieces.append, **options)[0]
    text = model.tokenizer.decode(ids[len(prompt):], skip_special_tokens=True)
    assert "".join(pieces) == text and len(pieces) > 1 and all(pieces)
    iterated = list(stream(model, prompt, **options))
    assert iterated == pieces
    assert generate(model, prompt, **options) == [ids]  # streaming does not change the tokens


def test_stop_strings_end_the_row_at_the_token_that_completes_them(talker):
    model, hf = talker
    prompt = model.tokenizer.encode("Once upon a time")
    free = hf_generate(hf, prompt, max_new_tokens=60, repetition_penalty=1.3)[len(prompt):]
    text = model.tokenizer.decode(free, skip_special_tokens=True)
    start = next(i for i in range(20, len(text) - 3) if text[i:i + 3].isascii())
    stop = text[start:start + 3]
    # Expected: the shortest prefix of transformers' continuation whose text contains the stop string.
    cut = next(n for n in range(1, len(free) + 1)
               if stop in model.tokenizer.decode(free[:n], skip_special_tokens=True))
    assert cut < len(free)
    options = dict(max_new_tokens=60, repetition_penalty=1.3)
    assert generate(model, prompt, stop=["never in this text \u2603", stop], **options) == [prompt + free[:cut]]
    assert generate(model, prompt, stop=stop, **options) == [prompt + free[:cut]]
    streamed = "".join(stream(model, prompt, stop=stop, **options))
    assert stop in streamed and streamed == model.tokenizer.decode(free[:cut], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------- threads
def test_threads_sharing_one_model_get_the_sequential_results(distil):
    model, _ = distil
    jobs = [
        dict(input_ids=[464, 2068, 7586], max_new_tokens=12),
        dict(input_ids=[[1, 2, 3, 4, 5], [6000]], max_new_tokens=12, do_sample=True, seed=1),
        dict(input_ids=[31373, 995], max_new_tokens=12, do_sample=True, seed=2, num_return_sequences=2),
        dict(input_ids=list(range(1000, 1040)), max_new_tokens=12, repetition_penalty=1.2),
    ]
    sequential = [generate(model, **job) for job in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        concurrent = list(pool.map(lambda job: generate(model, **job), jobs * 2))
    assert concurrent == sequential * 2


# ------------------------------------------------------------------------------------------------ bad requests
def test_sampling_options_without_do_sample_warn_once_and_decode_greedily(tiny, talker):
    model, _ = tiny
    greedy = generate(model, [1, 2, 3], max_new_tokens=6)
    for unused in [dict(temperature=0.7), dict(top_p=0.5), dict(top_k=5), dict(top_k=None), dict(seed=1),
                   dict(temperature=0.7, top_k=5, seed=1)]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert generate(model, [1, 2, 3], max_new_tokens=6, **unused) == greedy  # like transformers
        assert len(caught) == 1 and caught[0].category is UserWarning
        message = str(caught[0].message)
        assert "no effect without do_sample=True" in message and "set do_sample=True" in message
        assert all(f"{name}={value!r}" in message for name, value in unused.items())
    talking_model, _ = talker
    with pytest.warns(UserWarning, match=r"no effect without do_sample=True: temperature=0\.5"):
        stream(talking_model, [1, 2], max_new_tokens=2, temperature=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults, even spelled out, and options used by sampling: no warning
        spelled_out = dict(temperature=1, top_k=50, top_p=1.0, seed=None)
        assert generate(model, [1, 2, 3], max_new_tokens=6, **spelled_out) == greedy
        generate(model, [1, 2, 3], max_new_tokens=6, do_sample=True, temperature=0.7, top_k=5, seed=1)


def test_do_sample_must_be_a_bool(tiny):
    model, _ = tiny
    for not_a_bool in ["False", 0, 1, None]:
        with pytest.raises(ValueError, match=f"do_sample must be True or False, got {not_a_bool!r}"):
            generate(model, [1, 2, 3], max_new_tokens=4, do_sample=not_a_bool)
    options = dict(max_new_tokens=4, seed=3, top_k=0)
    sampled = generate(model, [1, 2], do_sample=True, **options)
    assert generate(model, [1, 2], do_sample=np.bool_(True), **options) == sampled


def test_stop_and_eos_token_id_of_the_wrong_kind_are_clear_errors(tiny):
    model, _ = tiny
    for stop in [5, b"ab", iter(["ab"])]:
        with pytest.raises(ValueError, match="stop must be a non-empty string or a list of them, got"):
            generate(model, [1, 2], stop=stop)
    for eos in [5.0, "5", b"5", iter([5])]:
        with pytest.raises(ValueError, match="eos_token_id must be a token id, a list of token ids or None, got"):
            generate(model, [1, 2], eos_token_id=eos)
    eos = generate(model, [1, 2], max_new_tokens=1)[0][-1]
    ended = generate(model, [1, 2], max_new_tokens=8, eos_token_id=[eos, 999])
    assert len(ended[0]) == 3  # still accepted: an id of any integer type, a tuple, set or 1-D array of ids
    for same in [eos, np.int64(eos), (eos, 999), {eos, 999}, np.array([eos, 999])]:
        assert generate(model, [1, 2], max_new_tokens=8, eos_token_id=same) == ended


def test_infinite_or_nan_temperature_top_p_and_penalty_are_clear_errors(tiny):
    model, _ = tiny
    for name, value in [("temperature", np.inf), ("temperature", np.nan), ("top_p", np.nan),
                        ("repetition_penalty", np.inf), ("repetition_penalty", np.nan)]:
        with pytest.raises(ValueError, match=f"{name} must be a .*, got {value}"):
            generate(model, [1, 2], do_sample=True, **{name: value})


def test_tiny_temperature_and_penalty_generate_their_limits(tiny):
    model, _ = tiny
    prompt = list(range(40, 60))
    options = dict(max_new_tokens=16, eos_token_id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        greedy = generate(model, prompt, repetition_penalty=1.3, **options)
        assert len(set(greedy[0][len(prompt):])) > 5  # a continuation worth comparing
        # Sampling as the temperature goes to 0 is greedy decoding.
        for temperature in [1e-40, 1e-320]:
            assert generate(model, prompt, do_sample=True, temperature=temperature, repetition_penalty=1.3,
                            seed=0, **options) == greedy
        # As the penalty goes to 0 the likeliest token seen before wins; 1e-30 is small enough for that already
        # and still computes plainly in float32.
        limit = generate(model, prompt, repetition_penalty=1e-30, **options)
        assert limit != generate(model, prompt, **options)
        assert generate(model, prompt, repetition_penalty=1e-45, **options) == limit
        assert generate(model, prompt, repetition_penalty=1e-320, **options) == limit


def test_bad_requests_are_clear_errors(tiny, talker):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"prompt 1, position 2: token id 1000 is not an id of the vocabulary"):
        generate(model, [[1, 2], [3, 4, 1000]])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        generate(model, [[]])
    with pytest.raises(ValueError, match="needs do_sample=True"):
        generate(model, [1, 2], num_return_sequences=2)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        generate(model, [1, 2], do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p must be a number between 0 and 1"):
        generate(model, [1, 2], do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        generate(model, [1, 2], max_new_tokens=0)
    with pytest.raises(ValueError, match="eos_token_id 5000 is not an id of the vocabulary"):
        generate(model, [1, 2], eos_token_id=5000)
    with pytest.raises(ValueError, match="model.tokenizer is None"):
        generate(model, [1, 2], stop=["x"])
    with pytest.raises(ValueError, match="model.tokenizer is None"):
        stream(model, [1, 2])
    with pytest.raises(TypeError, match="unexpected keyword argument 'top_q'"):
        generate(model, [1, 2], top_q=0.5)
    talking_model, _ = talker
    with pytest.raises(ValueError, match="makes 2"):
        generate(talking_model, [[1, 2], [3]], streamer=print)
