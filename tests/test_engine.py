"""The engine: many requests at once on one model, each getting what it would get alone.

Batch invariance is tested at two levels: the logits of a sequence's tokens, bit for bit, whatever else shares
the forward pass and however its prompt is cut into chunks (the model's token-by-token pass on a block pool);
and whole requests through the engine, which must equal ``model.generate`` of each prompt alone.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest
from checkpoints import build_gpt2_dir

from tinygpt import InputError, Model
from tinygpt.engine import Engine
from tinygpt.paged_cache import BlockPool
from tinygpt.weights import QuantizedWeight

LONG_TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=1024, bos_token_id=999,
                 eos_token_id=999)


@pytest.fixture(scope="module")
def long_tiny_dir(tmp_path_factory):
    """A tiny network with distilgpt2's context of 1024 positions: long prompts at little cost."""
    return build_gpt2_dir(tmp_path_factory.mktemp("long_tiny"), seed=7, **LONG_TINY)


@pytest.fixture(scope="module")
def long_tiny(long_tiny_dir) -> Model:
    return Model.from_pretrained(long_tiny_dir)


# ---- logits, bit for bit ---------------------------------------------------------------------------------
class Feeder:
    """Feeds sequences to ``model._forward_tokens`` on a pool of its own, in whatever steps a test asks for,
    and keeps every fed token's logits."""

    def __init__(self, model: Model, block_size: int = 16, n_blocks: int = 256):
        cfg = model.config
        self.model = model
        self.pool = BlockPool(cfg.n_layer, cfg.n_head, cfg.head_dim, n_blocks, block_size)
        self.pool.reserve(n_blocks)
        self.blocks: dict[str, list[int]] = {}
        self.fed: dict[str, int] = {}
        self.logits: dict[str, list[np.ndarray]] = {}

    def step(self, parts: list[tuple[str, list[int]]]) -> None:
        """One forward pass over the given tokens of each named sequence (continuing where it stopped)."""
        names = [name for name, _ in parts]
        ids, seq, pos = [], [], []
        for index, (name, tokens) in enumerate(parts):
            start = self.fed.get(name, 0)
            blocks = self.blocks.setdefault(name, [])
            while (start + len(tokens) - 1) // self.pool.block_size >= len(blocks):
                blocks.append(self.pool.take())
            ids += tokens
            seq += [index] * len(tokens)
            pos += range(start, start + len(tokens))
            self.fed[name] = start + len(tokens)
        width = max(len(self.blocks[name]) for name in names)
        tables = np.zeros((len(names), width), np.int32)
        for index, name in enumerate(names):
            tables[index, :len(self.blocks[name])] = self.blocks[name]
        logits = self.model._forward_tokens(self.pool, np.array(ids, np.int64), np.array(seq, np.int32),
                                            np.array(pos, np.int32), tables, np.arange(len(ids)))
        at = 0
        for name, tokens in parts:
            self.logits.setdefault(name, []).extend(logits[at:at + len(tokens)])
            at += len(tokens)

    def all_logits(self, name: str) -> np.ndarray:
        return np.stack(self.logits[name])


def chunked(tokens: list[int], sizes: list[int]) -> list[list[int]]:
    out, at = [], 0
    for size in sizes:
        out.append(tokens[at:at + size])
        at += size
    assert at == len(tokens)
    return out


@pytest.fixture(scope="module", params=["float32", "int8"])
def distil(request, distilgpt2_shape_dir) -> Model:
    return Model.from_pretrained(distilgpt2_shape_dir, dtype=request.param)


def test_a_sequences_logits_do_not_depend_on_its_chunks_or_its_neighbours(distil, distilgpt2_shape_dir):
    rng = np.random.default_rng(0)
    vocab = distil.config.vocab_size
    probe = rng.integers(0, vocab, 40).tolist()
    # Alone, three ways: one chunk, token by token, uneven chunks.
    alone = Feeder(distil)
    alone.step([("whole", probe)])
    for token in probe:
        alone.step([("one_by_one", [token])])
    for chunk in chunked(probe, [7, 13, 1, 19]):
        alone.step([("uneven", chunk)])
    reference = alone.all_logits("whole")
    # The token-by-token pass computes the model: the whole-sequence pass (tested against transformers in
    # test_model.py) agrees to float32 rounding; with int8 weights, far within what the weights' rounding moves
    # (the activations' int16 steps can round either way after a different attention order).
    whole = distil.logits(probe)
    if isinstance(distil.weights["lm_head.weight"], QuantizedWeight):
        weights_effect = whole - Model.from_pretrained(distilgpt2_shape_dir).logits(probe)
        assert np.abs(reference - whole).max() <= 0.01 * np.abs(weights_effect).max()
    else:
        np.testing.assert_allclose(reference, whole, rtol=0, atol=5e-4)
    assert np.array_equal(alone.all_logits("one_by_one"), reference)
    assert np.array_equal(alone.all_logits("uneven"), reference)
    # In a crowd: 1, 3, 7 and 15 other sequences at other positions, decoding and prefilling beside it.
    for n_others in (1, 3, 7, 15):
        crowd = Feeder(distil)
        others = [(f"other{i}", rng.integers(0, vocab, int(rng.integers(1, 30))).tolist()) for i in range(n_others)]
        crowd.step(others)  # their prompts
        at = 0
        for size in (5, 1, 11, 23):
            chunk = probe[at:at + size]
            at += size
            crowd.step([*[(name, [int(rng.integers(0, vocab))]) for name, _ in others], ("probe", chunk)])
        assert np.array_equal(crowd.all_logits("probe"), reference), n_others


# ---- whole requests ------------------------------------------------------------------------------------
def alone_ids(model: Model, prompt: list[int], options: dict) -> list[list[int]]:
    return model.generate(prompt, **options)


def random_options(rng: random.Random, prompt_length: int, n_positions: int) -> dict:
    room = n_positions - prompt_length
    options = dict(max_new_tokens=rng.randint(1, min(40, room)))
    if rng.random() < 0.5:
        options.update(do_sample=True, seed=rng.randint(0, 2**32), temperature=rng.choice([0.7, 1.0, 1.5]),
                       top_k=rng.choice([0, 5, 50]), top_p=rng.choice([1.0, 0.9]),
                       num_return_sequences=rng.choice([1, 1, 2, 3]))
    if rng.random() < 0.3:
        options["repetition_penalty"] = rng.choice([0.8, 1.3])
    if rng.random() < 0.3:
        options["eos_token_id"] = rng.randrange(1000)  # a common enough token to end some rows early
    return options


def test_random_joins_leaves_and_cancellations_each_equal_generate_alone(long_tiny):
    rng = random.Random(15)
    n_positions = long_tiny.config.n_positions
    requests = []
    for _ in range(200):
        length = rng.randint(1, 900)
        prompt = [rng.randrange(1000) for _ in range(length)]
        requests.append((prompt, random_options(rng, length, n_positions), rng.random() < 0.1))
    handles = []
    with Engine(long_tiny, max_batch=16, kv_cache_tokens=8192) as engine:
        for prompt, options, cancel in requests:
            handles.append((engine.submit(prompt, **options), cancel))
            time.sleep(rng.random() * 0.004)
            if cancel and rng.random() < 0.5:
                handles[-1][0].cancel()  # at once: it may not even have been admitted yet
        for (handle, cancel), (prompt, options, _) in zip(handles, requests):
            if cancel:
                handle.cancel()
        results = [handle.result(timeout=600) for handle, _ in handles]
        assert engine.pool.blocks_in_use() == 0 and engine.pool.reserved == 0
    checked_cancelled = 0
    for (handle, cancel), (prompt, options, _), result in zip(handles, requests, results):
        expected = alone_ids(long_tiny, prompt, options)
        if cancel:
            # A cancelled row keeps what it had made: a prefix of what it would have made.
            for got, want in zip(result, expected):
                assert got == want[:len(got)]
            checked_cancelled += 1
        else:
            assert result == expected, (len(prompt), options)
            assert set(handle.finish_reasons()) <= {"stop", "length"}
    assert checked_cancelled > 5


def test_int8_requests_in_a_crowd_equal_generate_alone(long_tiny_dir):
    model = Model.from_pretrained(long_tiny_dir, dtype="int8")
    rng = random.Random(16)
    requests = []
    for _ in range(32):
        length = rng.randint(1, 300)
        requests.append(([rng.randrange(1000) for _ in range(length)], random_options(rng, length, 1024)))
    with Engine(model, max_batch=16) as engine:
        handles = []
        for prompt, options in requests:
            handles.append(engine.submit(prompt, **options))
            time.sleep(rng.random() * 0.003)
        results = [handle.result(timeout=300) for handle in handles]
    assert results == [alone_ids(model, prompt, options) for prompt, options in requests]


def test_requests_that_do_not_fit_wait_and_then_finish_and_nothing_leaks(long_tiny):
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 1000, 100).tolist() for _ in range(10)]
    options = dict(max_new_tokens=30, eos_token_id=None)
    # 256 positions: two requests of 129 positions do not fit together, so they run one after another.
    with Engine(long_tiny, max_batch=16, kv_cache_tokens=256) as engine:
        handles = [engine.submit(prompt, **options) for prompt in prompts]
        results = [handle.result(timeout=300) for handle in handles]
        assert engine.pool.blocks_in_use() == 0 and engine.pool.reserved == 0
    assert results == [alone_ids(long_tiny, prompt, options) for prompt in prompts]


def test_a_bad_request_fails_alone_with_a_clear_error(long_tiny):
    prompt = list(range(50))
    with Engine(long_tiny, max_batch=4, kv_cache_tokens=512) as engine:
        good = [engine.submit(prompt, max_new_tokens=20), engine.submit(prompt[:7], max_new_tokens=9)]
        with pytest.raises(InputError, match="temperature"):
            engine.submit(prompt, do_sample=True, temperature=-1.0)
        with pytest.raises(InputError, match="token id"):
            engine.submit([5, 1000])
        with pytest.raises(InputError, match="kv_cache_tokens"):
            engine.submit(prompt, max_new_tokens=900)
        with pytest.raises(InputError, match="max_batch"):
            engine.submit(prompt, do_sample=True, num_return_sequences=5)
        with pytest.raises(InputError, match="one prompt"):
            engine.submit([prompt, prompt])
        results = [handle.result(timeout=60) for handle in good]
    assert results == [alone_ids(long_tiny, prompt, dict(max_new_tokens=20)),
                       alone_ids(long_tiny, prompt[:7], dict(max_new_tokens=9))]


def test_cancel_ends_the_request_at_the_next_step_and_frees_its_blocks(long_tiny):
    with Engine(long_tiny, max_batch=4) as engine:
        other = engine.submit(list(range(30)), max_new_tokens=50, eos_token_id=None)
        handle = engine.submit(list(range(40)), max_new_tokens=900, eos_token_id=None)
        events = []
        for event in handle:
            events.append(event)
            if len(events) == 3:
                handle.cancel()
        assert handle.finish_reasons() == ["cancelled"]
        assert 3 <= len(events) < 900
        assert len(handle.result()[0]) == 40 + len(events)
        assert other.result(timeout=60) == alone_ids(long_tiny, list(range(30)),
                                                     dict(max_new_tokens=50, eos_token_id=None))
        assert engine.pool.blocks_in_use() == 0


@pytest.fixture
def fed(long_tiny, monkeypatch) -> list[int]:
    """The number of tokens each forward pass of long_tiny is fed, as the test runs."""
    counts = []
    forward = long_tiny._forward_tokens

    def counting(pool, ids, *args):
        counts.append(len(ids))
        return forward(pool, ids, *args)

    monkeypatch.setattr(long_tiny, "_forward_tokens", counting)
    return counts


def test_n_continuations_share_one_prefill(long_tiny, fed):
    prompt = list(range(100, 170))  # 70 tokens: the 4 rows share 4 full blocks and copy the partial one
    options = dict(max_new_tokens=10, do_sample=True, seed=5, num_return_sequences=4, eos_token_id=None)
    with Engine(long_tiny) as engine:
        result = engine.submit(prompt, **options).result(timeout=60)
    assert sum(fed) == 70 + 4 * 9  # the prompt once, then each row's tokens but the last
    assert result == alone_ids(long_tiny, prompt, options)
    assert len({tuple(row) for row in result}) > 1


def test_a_repeated_prefix_is_reused_not_recomputed(long_tiny, fed):
    document = list(np.random.default_rng(8).integers(0, 1000, 800))
    with Engine(long_tiny) as engine:
        first = engine.submit(document, max_new_tokens=1).result(timeout=60)
        fed.clear()
        edited = [*document, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        second = engine.submit(edited, max_new_tokens=1).result(timeout=60)
        reused_tokens = (len(edited) - 1) // 16 * 16
        assert sum(fed) == len(edited) - reused_tokens == 10
        # The whole document again: every block but the one holding its last token is reused.
        fed.clear()
        again = engine.submit(document, max_new_tokens=1).result(timeout=60)
        assert sum(fed) == 800 - 784
    assert first == alone_ids(long_tiny, document, dict(max_new_tokens=1)) == again
    assert second == alone_ids(long_tiny, edited, dict(max_new_tokens=1))


def test_evicted_prefixes_are_recomputed_correctly(long_tiny):
    rng = np.random.default_rng(9)
    documents = [rng.integers(0, 1000, 200).tolist() for _ in range(6)]
    options = dict(max_new_tokens=5)
    # Room for two documents: later ones evict the cached blocks of earlier ones, which then come back.
    with Engine(long_tiny, kv_cache_tokens=480) as engine:
        for document in [*documents, *documents[:3]]:
            assert engine.submit(document, **options).result(timeout=60) == alone_ids(long_tiny, document, options)
        assert engine.pool.blocks_in_use() == 0


def test_threads_and_asyncio_tasks_submit_at_once(long_tiny):
    rng = np.random.default_rng(10)
    prompts = [rng.integers(0, 1000, int(rng.integers(1, 200))).tolist() for _ in range(12)]
    options = dict(max_new_tokens=15, do_sample=True, seed=3)
    expected = [alone_ids(long_tiny, prompt, options) for prompt in prompts]
    with Engine(long_tiny, max_batch=8) as engine:
        results = [None] * 6

        def worker(i):
            results[i] = engine.submit(prompts[i], **options).result(timeout=120)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()

        async def submit_all():
            async def one(prompt):
                handle = engine.submit(prompt, **options)
                tokens = [event.token_id async for event in handle]
                assert tokens == handle.request.rows[0].ids[len(prompt):]
                return await handle.aresult()

            return await asyncio.gather(*(one(prompt) for prompt in prompts[6:]))

        async_results = asyncio.run(submit_all())
        for thread in threads:
            thread.join()
    assert [*results, *async_results] == expected


def test_events_carry_whole_characters_and_join_to_the_decoded_text(small_gpt2_dir):
    model = Model.from_pretrained(small_gpt2_dir)
    prompt = model.encode_prompt("Héllo wörld, 你好")
    with Engine(model) as engine:
        handles = [engine.submit(prompt, max_new_tokens=30, do_sample=True, seed=s, num_return_sequences=2)
                   for s in range(3)]
        for handle in handles:
            texts = {0: [], 1: []}
            for event in handle:
                assert "\ufffd" not in event.text or "\ufffd" in model.decode([event.token_id])
                texts[event.row].append(event.text)
            for row, ids in enumerate(handle.result()):
                assert "".join(texts[row]) == model.decode(ids[len(prompt):])
        stopped = engine.submit(prompt, max_new_tokens=30, stop=[" the", "e"]).result()[0]
    assert stopped == model.generate(prompt, max_new_tokens=30, stop=[" the", "e"])[0]


def test_closing_cancels_what_runs_and_refuses_new_requests(long_tiny):
    engine = Engine(long_tiny)
    handle = engine.submit(list(range(10)), max_new_tokens=1000, eos_token_id=None)
    engine.close()
    assert handle.done and handle.finish_reasons() == ["cancelled"]
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit([1, 2, 3])


def test_engine_options_are_checked(long_tiny):
    with pytest.raises(InputError, match="max_batch"):
        Engine(long_tiny, max_batch=0)
    with pytest.raises(InputError, match="kv_cache_tokens"):
        Engine(long_tiny, kv_cache_tokens=3)
