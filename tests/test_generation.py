"""Generation against transformers: its greedy ``generate`` and its length rules; plus seeding, batching,
streaming, stop strings, threads, and requests that must be refused (tests/test_sampling.py covers the logits
processors and the sampler)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from checkpoints import load_hf_model
from tinygpt.errors import InputError
from tinygpt.generation import generate, set_seed, stream
from tinygpt.model import Model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Model.from_pretrained(tiny_model_dir), load_hf_model(tiny_model_dir)


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


class OpenAIAdjustments:
    """OpenAI's presence and frequency penalties and logit bias as a transformers logits processor, written from
    the definition: it counts the tokens past the prompt."""

    def __init__(self, prompt_length: int, presence: float, frequency: float, bias: dict[int, float]):
        self.prompt_length, self.presence, self.frequency, self.bias = prompt_length, presence, frequency, bias

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores, dtype=torch.float64)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=torch.float64))
        bias = torch.zeros_like(counts)
        for token, value in self.bias.items():
            bias[:, token] = value
        adjusted = scores.double() + (bias - (counts * self.frequency + (counts > 0) * self.presence))
        return adjusted.to(scores.dtype)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_with_openai_penalties_and_bias_matches_transformers_with_the_formula(tiny, penalty):
    from transformers import LogitsProcessorList

    model, hf = tiny
    prompt = [11, 22, 33, 11, 22, 44, 55]
    plain = generate(model, prompt, max_new_tokens=60, repetition_penalty=penalty, eos_token_id=None)[0]
    for presence, frequency, bias in [(1.5, 0.0, {}), (0.0, 0.8, {}), (-0.5, 1.2, {plain[-1]: -7.5, 11: 3.0}),
                                      (0.0, 0.0, {plain[len(prompt) + 1]: -100})]:
        options = dict(presence_penalty=presence, frequency_penalty=frequency, logit_bias=bias)
        processor = OpenAIAdjustments(len(prompt), presence, frequency, bias)
        expected = hf_generate(hf, prompt, max_new_tokens=60, repetition_penalty=penalty, eos_token_id=None,
                               logits_processor=LogitsProcessorList([processor]))
        ours = generate(model, prompt, max_new_tokens=60, repetition_penalty=penalty, eos_token_id=None, **options)
        assert ours == [expected]
        assert expected != plain  # the options changed something


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
    with pytest.raises(InputError, match=r"prompt 1: token id 1000 at position 2 is outside the vocabulary \(0..999\)"):
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
    with pytest.raises(InputError, match=r"logit_bias key 1000 is not an id of the vocabulary \(0..999\)"):
        generate(model, [1, 2], logit_bias={5: 1.0, 1000: 2.0})
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
    # Refused before its rows (each with a text decoder) are built.
    with pytest.raises(InputError, match=r"stream\(\) follows one output sequence, but this request makes 100000"):
        stream(talking_model, [1, 2], do_sample=True, num_return_sequences=10**5)
    with pytest.raises(InputError, match="streamer must be callable with a str, got int"):
        generate(model, [1, 2], streamer=5)
    with pytest.raises(InputError, match=r"prompt 1 must be a flat list of token ids, got shape \[1, 1\]"):
        generate(model, [[1, 2], [[3]]])


def test_requests_are_checked_once_not_at_every_step(tiny, monkeypatch):
    """Prompt ids are checked at the call; the decode loop feeds ids it chose, through the unchecked step."""
    import tinygpt.checks

    model, _ = tiny
    checked = []
    check = tinygpt.checks.token_ids

    def counted_check(ids, *args, **kwargs):
        checked.append(ids)
        return check(ids, *args, **kwargs)

    monkeypatch.setattr(tinygpt.checks, "token_ids", counted_check)
    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=10, eos_token_id=None)
    assert [len(ids) for ids in out] == [13, 12] and len(checked) == 2  # once per prompt


def test_a_request_larger_than_memory_is_refused_before_it_is_built(tiny, monkeypatch):
    model, _ = tiny
    # Unbounded before: 10**12 random streams took forever to make, 10**5 asked NumPy for gigabytes at once.
    with pytest.raises(InputError, match=r"^1000000000000 output sequences \(1 prompt x num_return_sequences="
                                         r"1000000000000\) of up to 23 tokens would need [\d,.]+ GiB of memory, more "
                                         r"than this machine's [\d,.]+ GiB: lower num_return_sequences"):
        generate(model, [1, 2, 3], do_sample=True, num_return_sequences=10**12)
    # The estimate, on a machine of 64 MiB: each of the 2 x 200 rows runs in one batch and holds a KV cache of
    # 3 + 20 - 1 positions (2 layers x 64 x keys and values x 4 bytes each) and 1000 float32 logits (26,528
    # bytes), plus its random stream and ids (2,048 + 8 x 23 bytes): 11.0 MiB. 2 x 2,400 rows need 131.7 MiB.
    import tinygpt.checks

    monkeypatch.setattr(tinygpt.checks, "physical_memory", lambda: 64 * 2**20)
    options = dict(do_sample=True, seed=0, max_new_tokens=20)
    assert len(generate(model, [[1, 2, 3], [4, 5]], num_return_sequences=200, **options)) == 400
    with pytest.raises(InputError, match=r"^4800 output sequences \(2 prompts x num_return_sequences=2400\) of up "
                                         r"to 23 tokens would need 131\.7 MiB of memory, more than this machine's "
                                         r"64\.0 MiB"):
        generate(model, [[1, 2, 3], [4, 5]], num_return_sequences=2400, **options)


def test_numpy_numbers_and_fractions_act_as_the_numbers_they_hold(tiny):
    from fractions import Fraction

    model, _ = tiny
    prompt = [5, 6, 7]
    # np.uint8 lengths used to wrap in the cache arithmetic ("token position 9 is past the cache's 3 positions").
    assert generate(model, prompt, max_length=np.uint8(9)) == generate(model, prompt, max_length=9)
    assert generate(model, prompt, max_new_tokens=np.uint8(250 - 245)) == generate(model, prompt, max_new_tokens=5)
    sampled = generate(model, prompt, do_sample=True, seed=3, top_k=5, temperature=1 / 3, num_return_sequences=2)
    for same in [dict(top_k=np.uint8(5)), dict(temperature=Fraction(1, 3)), dict(seed=np.uint64(3)),
                 dict(num_return_sequences=np.int8(2)), dict(temperature=np.float64(1 / 3))]:
        options = dict(do_sample=True, seed=3, top_k=5, temperature=1 / 3, num_return_sequences=2) | same
        assert generate(model, prompt, **options) == sampled, same
    penalised = generate(model, prompt, repetition_penalty=1.25, max_new_tokens=8)
    assert generate(model, prompt, repetition_penalty=Fraction(5, 4), max_new_tokens=8) == penalised


def test_numbers_too_large_for_a_float_are_clear_errors(tiny):
    model, _ = tiny
    for name, expected in [("temperature", "a positive finite number"), ("repetition_penalty", "a positive finite")]:
        with pytest.raises(InputError, match=f"{name} must be {expected} .*got a number too large for a float "
                                             r"\(10000000000000000000\.\.\.00000000 \(401 characters\)\)"):
            generate(model, [1, 2], do_sample=True, **{name: 10**400})


def test_lengths_past_the_context_name_the_option(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match=r"^prompt 0 has 1 token; with max_new_tokens=5000 the sequence would run "
                                         r"past the model's context of 128 positions \(config\.n_positions\): there "
                                         "is room for at most 127 new tokens$"):
        generate(model, [5], max_new_tokens=5000)
    with pytest.raises(InputError, match=r"^prompt 1 has 127 tokens; .* room for at most 1 new token$"):
        generate(model, [[5], list(range(127))], max_new_tokens=2)
    with pytest.raises(InputError, match=r"^max_length=500 is past the model's context of 128 positions"):
        generate(model, [5, 6], max_length=500)
    with pytest.raises(InputError, match="^prompt 0 has 1 token but max_length is 1"):
        generate(model, [5], max_length=1)
