"""What the engine gives besides tokens: log-probabilities (of generated and prompt tokens, against
transformers), prompts scored with max_new_tokens=0, calls run on the compute thread, and statistics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from checkpoints import build_gpt2_dir, load_hf_model

from tinygpt import InputError, Model
from tinygpt.engine import STEP_SECONDS_BOUNDS, Engine
from tinygpt.generation import generate

TINY_LONG = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=512, bos_token_id=999, eos_token_id=999)
# Our float32 logits and transformers' agree to float32 rounding; their log-probabilities within this.
LOGPROB_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small(small_gpt2_dir):
    return Model.from_pretrained(small_gpt2_dir), load_hf_model(small_gpt2_dir)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Model:
    return Model.from_pretrained(build_gpt2_dir(tmp_path_factory.mktemp("tiny_long"), seed=21, **TINY_LONG))


def hf_logprobs(hf, ids: list[int]) -> np.ndarray:
    """log_softmax of transformers' logits after each of ``ids``, in float64: [len(ids), vocab]."""
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), -1).numpy()


def assert_scores_match(reference: np.ndarray, token: int, logprob: float, top: tuple, top_n: int) -> None:
    """One position's (logprob, top-N) against transformers' log-probabilities there."""
    assert abs(logprob - reference[token]) <= LOGPROB_TOLERANCE
    assert len(top) == top_n
    ids, values = [t for t, _ in top], [v for _, v in top]
    assert values == sorted(values, reverse=True) and len(set(ids)) == top_n
    # The same numbers as transformers' N largest (an id may swap with a near-tie; its value may not).
    np.testing.assert_allclose(values, np.sort(reference)[::-1][:top_n], rtol=0, atol=LOGPROB_TOLERANCE)
    np.testing.assert_allclose(values, reference[ids], rtol=0, atol=LOGPROB_TOLERANCE)


def check_against_transformers(hf, handle, prompt: list[int], top_n: int, prompt_top_n: int | None) -> None:
    events = list(handle)
    for row, ids in enumerate(handle.result()):
        reference = hf_logprobs(hf, ids)
        row_events = [event for event in events if event.row == row]
        assert [event.token_id for event in row_events] == ids[len(prompt):]
        for k, event in enumerate(row_events):
            # The k-th new token sits at position len(prompt) + k: scored by the logits after the one before.
            assert_scores_match(reference[len(prompt) + k - 1], event.token_id, event.logprob, event.top_logprobs,
                                top_n)
    if prompt_top_n is None:
        assert handle.prompt_logprobs is None
        return
    scores = handle.prompt_logprobs
    assert len(scores) == len(prompt) and scores[0] is None
    for i in range(1, len(prompt)):
        assert_scores_match(reference[i - 1], prompt[i], *scores[i], prompt_top_n)


def test_logprobs_of_generated_and_prompt_tokens_are_transformers_log_softmax(small):
    model, hf = small
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 50257, 70).tolist()
    with Engine(model, step_tokens=24) as engine:  # the prompt comes in chunks of 24 positions
        greedy = engine.submit(prompt, max_new_tokens=12, eos_token_id=None, logprobs=5, prompt_logprobs=3)
        check_against_transformers(hf, greedy, prompt, 5, 3)
        assert greedy.result() == generate(model, prompt, max_new_tokens=12, eos_token_id=None)
        # Sampling with penalties: the log-probabilities are still those of the raw logits.
        sampled = engine.submit(prompt[:33], max_new_tokens=10, do_sample=True, seed=4, temperature=1.7, top_k=7,
                                presence_penalty=1.0, num_return_sequences=2, logprobs=0)
        check_against_transformers(hf, sampled, prompt[:33], 0, None)
        assert all(event.top_logprobs == () for event in sampled)


def test_a_request_after_its_prefix_is_cached_gets_the_same_logprobs(small):
    model, hf = small
    rng = np.random.default_rng(2)
    document = rng.integers(0, 50257, 100).tolist()
    question = [*document, *rng.integers(0, 50257, 9).tolist()]
    with Engine(model) as engine:
        engine.submit(document, max_new_tokens=2).result()  # caches the document's 6 full blocks
        reused = engine.stats().prompt_tokens_reused_total
        # Generated logprobs only: the cached blocks are reused.
        decoding = engine.submit(question, max_new_tokens=6, eos_token_id=None, logprobs=4)
        check_against_transformers(hf, decoding, question, 4, None)
        assert engine.stats().prompt_tokens_reused_total == reused + 96
        # Prompt logprobs: every position is computed again, none reused.
        computed = engine.stats().prompt_tokens_total
        scoring = engine.submit(question, max_new_tokens=6, eos_token_id=None, logprobs=4, prompt_logprobs=2)
        check_against_transformers(hf, scoring, question, 4, 2)
        stats = engine.stats()
        assert stats.prompt_tokens_reused_total == reused + 96
        assert stats.prompt_tokens_total == computed + len(question)
        assert scoring.result() == decoding.result()


def test_a_scored_prompt_indexes_its_blocks_for_later_requests(tiny):
    prompt = list(range(200, 280))
    with Engine(tiny) as engine:
        engine.submit(prompt, max_new_tokens=1, prompt_logprobs=1).result()
        assert engine.stats().prompt_tokens_reused_total == 0
        engine.submit(prompt, max_new_tokens=1).result()
        assert engine.stats().prompt_tokens_reused_total == 64  # every full block but the last token's


def test_logprobs_do_not_depend_on_the_neighbours(tiny):
    rng = np.random.default_rng(3)
    requests = []
    for i in range(14):
        prompt = rng.integers(0, 1000, int(rng.integers(2, 150))).tolist()
        options = dict(max_new_tokens=int(rng.integers(1, 20)), logprobs=int(rng.integers(0, 6)))
        if i % 2:
            options.update(do_sample=True, seed=i, num_return_sequences=int(rng.integers(1, 3)))
        if i % 3 == 0:
            options["prompt_logprobs"] = int(rng.integers(0, 4))
        requests.append((prompt, options))

    def outputs(handle):
        events = [(e.row, e.token_id, e.logprob, e.top_logprobs, e.finish_reason) for e in handle]
        return events, handle.prompt_logprobs, handle.result()

    with Engine(tiny, step_tokens=32) as engine:
        alone = [outputs(engine.submit(prompt, **options)) for prompt, options in requests]
    with Engine(tiny, max_batch=16, step_tokens=32) as engine:
        handles = [engine.submit(prompt, **options) for prompt, options in requests]
        crowded = [outputs(handle) for handle in handles]
    for (events, prompt_scores, result), (crowd_events, crowd_prompt_scores, crowd_result) in zip(alone, crowded):
        assert result == crowd_result
        # Bit for bit, events in the order each row made them.
        for row in range(len(result)):
            assert [e for e in events if e[0] == row] == [e for e in crowd_events if e[0] == row]
        assert prompt_scores == crowd_prompt_scores


def test_max_new_tokens_0_scores_the_prompt_and_ends_without_events(small, tiny):
    model, hf = small
    prompt = np.random.default_rng(4).integers(0, 50257, 40).tolist()
    with Engine(model) as engine:
        handle = engine.submit(prompt, max_new_tokens=0, prompt_logprobs=2)
        assert list(handle) == []
        assert handle.result() == [prompt] and handle.finish_reasons() == ["length"]
        reference = hf_logprobs(hf, prompt)
        for i in range(1, len(prompt)):
            assert_scores_match(reference[i - 1], prompt[i], *handle.prompt_logprobs[i], 2)
        several = engine.submit(prompt, max_new_tokens=0, do_sample=True, num_return_sequences=3)
        assert list(several) == [] and several.result() == [prompt] * 3
        assert several.finish_reasons() == ["length"] * 3
        stats = engine.stats()
        assert stats.generated_tokens_total == 0 and stats.requests_finished_total["length"] == 2
        assert engine.pool.blocks_in_use() == 0 and engine.pool.reserved == 0
    with pytest.raises(InputError, match="max_new_tokens must be an integer >= 1, got 0"):
        generate(model, prompt, max_new_tokens=0)
    # A prompt that fills the context: there is no room to generate, but it can be scored.
    full = list(range(TINY_LONG["n_positions"]))
    with Engine(tiny) as engine:
        scored = engine.submit(full, max_new_tokens=0, prompt_logprobs=0)
        assert scored.result() == [full] and len(scored.prompt_logprobs) == len(full)
        with pytest.raises(InputError, match="no room for a new token"):
            engine.submit(full, max_new_tokens=1)
        with pytest.raises(InputError, match="more than the model's context"):
            engine.submit([*full, 1], max_new_tokens=0)


def test_prompt_logprobs_are_complete_at_the_first_event(tiny):
    prompt = list(range(300, 440))
    with Engine(tiny, step_tokens=16) as engine:
        engine.submit(list(range(50)), max_new_tokens=40, eos_token_id=None)  # a neighbour decoding meanwhile
        handle = engine.submit(prompt, max_new_tokens=5, prompt_logprobs=1)
        for event in handle:
            assert len(handle.prompt_logprobs) == len(prompt)
            assert all(entry is not None for entry in handle.prompt_logprobs[1:])


def test_logprob_options_are_checked(tiny):
    with Engine(tiny) as engine:
        for name in ("logprobs", "prompt_logprobs"):
            for bad in (21, -1, 2.0, True, "3"):
                with pytest.raises(InputError, match=f"{name} must be an integer between 0 and 20"):
                    engine.submit([1, 2, 3], **{name: bad})
        with pytest.raises(InputError, match="logit_bias key 1000"):
            engine.submit([1, 2, 3], logit_bias={1000: 1})
        with pytest.raises(InputError, match="presence_penalty"):
            engine.submit([1, 2, 3], presence_penalty=3)


# ---- Engine.run ----------------------------------------------------------------------------------------------
def test_run_calls_on_the_compute_thread_between_steps(tiny):
    with Engine(tiny) as engine:
        handle = engine.submit(list(range(20)), max_new_tokens=30, eos_token_id=None)
        seen = engine.run(lambda a, b=0: (threading.current_thread().name, a + b), 2, b=3).result(timeout=60)
        assert seen == ("tinygpt-engine", 5)
        embedded = engine.run(tiny.hidden_states, [5, 6, 7]).result(timeout=60)
        np.testing.assert_array_equal(embedded, tiny.hidden_states([5, 6, 7]))
        with pytest.raises(ZeroDivisionError):
            engine.run(lambda: 1 / 0).result(timeout=60)
        assert handle.result(timeout=60) == generate(tiny, list(range(20)), max_new_tokens=30, eos_token_id=None)
    with pytest.raises(RuntimeError, match="closed"):
        engine.run(print)


# ---- statistics ----------------------------------------------------------------------------------------------
def test_stats_count_requests_tokens_steps_and_blocks(tiny):
    with Engine(tiny, max_batch=4, kv_cache_tokens=1024) as engine:
        empty = engine.stats()
        assert (empty.requests_waiting, empty.requests_running, empty.rows_running) == (0, 0, 0)
        assert empty.requests_finished_total == dict(stop=0, length=0, cancelled=0, error=0)
        assert (empty.kv_blocks_in_use, empty.kv_blocks_total, empty.kv_block_size) == (0, 64, 16)
        assert empty.step_seconds.bounds == STEP_SECONDS_BOUNDS and empty.step_seconds.count == 0
        # Hold the compute thread: what is submitted meanwhile waits, and is taken in one go once released.
        # Submit only once the thread is inside the held call: had it been slow to wake, it could have taken
        # the call and the first submission together, then run that request a step ahead of the others.
        held, release = threading.Event(), threading.Event()

        def hold():
            held.set()
            release.wait()

        engine.run(hold)
        assert held.wait(timeout=60)
        try:
            prompt = list(range(100, 140))
            handles = [engine.submit(prompt, max_new_tokens=8, eos_token_id=None),
                       engine.submit(prompt[:20], max_new_tokens=30, eos_token_id=None, do_sample=True,
                                     num_return_sequences=2),
                       engine.submit(list(range(500, 560)), max_new_tokens=400, eos_token_id=None)]
            assert engine.stats().requests_waiting == 3
        finally:
            release.set()  # else closing the engine would wait for the held thread forever
        next(iter(handles[2]))
        running = engine.stats()
        assert running.requests_running >= 1 and running.rows_running >= 1 and running.kv_blocks_in_use >= 4
        handles[2].cancel()
        results = [handle.result(timeout=60) for handle in handles]
        stats = engine.stats()
    assert stats.requests_waiting == stats.requests_running == stats.rows_running == stats.kv_blocks_in_use == 0
    assert stats.requests_finished_total == dict(stop=0, length=2, cancelled=1, error=0)
    assert stats.generated_tokens_total == sum(len(ids) for result in results for ids in result) - 40 - 2 * 20 - 60
    # The first two were admitted together, before either had computed the block their prompts share.
    assert stats.prompt_tokens_reused_total == 0
    assert stats.prompt_tokens_total == 40 + 20 + 60
    steps = stats.step_seconds
    assert steps.count >= 30 and steps.sum > 0
    assert list(steps.counts) == sorted(steps.counts) and steps.counts[-1] <= steps.count
    assert len(steps.counts) == len(steps.bounds)
