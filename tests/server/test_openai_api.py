"""``tinygpt serve`` through the official ``openai`` client and raw HTTP, on a real server process.

Every answer is compared with what the same model gives in this process: generation with ``Model.generate``
alone (the engine computes each request as it would alone, so texts are equal, not close), logprobs with
log-softmax of transformers' logits, embeddings with ``Model.embed``.
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import openai
import pytest
import torch
from checkpoints import load_hf_model


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hf_model(small_gpt2_dir):
    return load_hf_model(small_gpt2_dir)


def log_softmax_of_transformers(hf_model, ids: list[int]) -> np.ndarray:
    """float64 [len(ids), vocab]: log-probabilities of the next token after each prefix of ``ids``."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def alone(local_model, prompt: str, **options) -> list[str]:
    """The continuations ``Model.generate`` gives for ``prompt`` run by itself."""
    ids = local_model.encode_prompt(prompt)
    return [local_model.decode(row[len(ids):]) for row in local_model.generate(ids, **options)]


# ------------------------------------------------------------------------------------------ completions
def test_models_lists_the_served_model(client, model_id):
    assert [m.id for m in client.models.list().data] == [model_id]


def test_a_greedy_completion_equals_generate_alone(client, model_id, local_model):
    prompt = "The quick brown fox"
    result = client.completions.create(model=model_id, prompt=prompt, max_tokens=12, temperature=0)
    assert result.object == "text_completion"
    [choice] = result.choices
    assert choice.text == alone(local_model, prompt, max_new_tokens=12)[0]
    assert choice.finish_reason == "length"
    assert result.usage.prompt_tokens == len(local_model.encode_prompt(prompt))
    assert result.usage.completion_tokens == 12
    assert result.usage.total_tokens == result.usage.prompt_tokens + 12


def test_a_stream_joins_to_the_whole_completion_and_ends_with_usage(client, model_id, local_model):
    prompt = "Once upon a time"
    chunks = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) > 1  # it streamed: more than one piece
    assert "".join(c.choices[0].text for c in text_chunks) == alone(local_model, prompt, max_new_tokens=10)[0]
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 10
    assert usage.usage.prompt_tokens == len(local_model.encode_prompt(prompt))


def test_n_sampled_choices_with_a_seed_equal_generate_and_repeat(client, model_id, local_model):
    prompt = "In the beginning"
    request = dict(model=model_id, prompt=prompt, max_tokens=8, n=3, temperature=0.9, top_p=0.95, seed=1234)
    first = client.completions.create(**request)
    again = client.completions.create(**request)
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [c.text for c in sorted(again.choices, key=lambda c: c.index)]
    assert texts == alone(local_model, prompt, max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95,
                          top_k=None, seed=1234, num_return_sequences=3)
    assert len(set(texts)) > 1  # sampled, not three copies of one
    other_seed = client.completions.create(**{**request, "seed": 99})
    assert [c.text for c in sorted(other_seed.choices, key=lambda c: c.index)] != texts


def test_greedy_n_gives_n_equal_choices(client, model_id, local_model):
    result = client.completions.create(model=model_id, prompt="Hello", max_tokens=5, n=2, temperature=0)
    expected = alone(local_model, "Hello", max_new_tokens=5)[0]
    assert sorted(c.index for c in result.choices) == [0, 1]
    assert [c.text for c in result.choices] == [expected, expected]
    assert result.usage.completion_tokens == 10


def test_several_prompts_give_prompt_major_choices(client, model_id, local_model):
    prompts = ["Good morning", "Tokens are"]
    result = client.completions.create(model=model_id, prompt=prompts, max_tokens=6, temperature=0)
    by_index = {c.index: c.text for c in result.choices}
    assert by_index == {i: alone(local_model, p, max_new_tokens=6)[0] for i, p in enumerate(prompts)}


def test_a_stop_string_ends_the_text_where_it_starts(client, model_id, local_model):
    prompt = "The weather today"
    full = alone(local_model, prompt, max_new_tokens=20)[0]
    stop = full[len(full) // 2:len(full) // 2 + 2]  # a piece from the middle of the greedy continuation
    expected = full[:full.index(stop)]
    result = client.completions.create(model=model_id, prompt=prompt, max_tokens=20, temperature=0, stop=[stop])
    assert result.choices[0].text == expected
    assert result.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=model_id, prompt=prompt, max_tokens=20, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected


def test_token_id_prompts_are_taken_as_ids(client, model_id, local_model):
    ids = local_model.encode_prompt("A list of numbers: 1, 2, 3")
    result = client.completions.create(model=model_id, prompt=ids, max_tokens=6, temperature=0)
    expected = local_model.decode(local_model.generate(ids, max_new_tokens=6)[0][len(ids):])
    assert result.choices[0].text == expected
    batch = client.completions.create(model=model_id, prompt=[ids, ids[:4]], max_tokens=3, temperature=0,
                                      echo=True)
    assert [c.text for c in sorted(batch.choices, key=lambda c: c.index)] == [
        local_model.decode(local_model.generate(p, max_new_tokens=3)[0]) for p in (ids, ids[:4])]


def test_presence_and_frequency_penalties_follow_openai(client, model_id, local_model):
    options = dict(max_new_tokens=16, presence_penalty=1.5, frequency_penalty=0.7)
    result = client.completions.create(model=model_id, prompt="the the the", max_tokens=16, temperature=0,
                                       presence_penalty=1.5, frequency_penalty=0.7,
                                       extra_body={"repetition_penalty": 1.2})
    assert result.choices[0].text == alone(local_model, "the the the", repetition_penalty=1.2, **options)[0]
    assert result.choices[0].text != alone(local_model, "the the the", max_new_tokens=16)[0]


# ------------------------------------------------------------------------------------------ logprobs
def test_generated_logprobs_equal_transformers(client, model_id, local_model, hf_model):
    prompt = "Logprobs are"
    result = client.completions.create(model=model_id, prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    choice = result.choices[0]
    ids = local_model.encode_prompt(prompt)
    full = local_model.generate(ids, max_new_tokens=6)[0]
    reference = log_softmax_of_transformers(hf_model, full)
    lp = choice.logprobs
    assert len(lp.token_logprobs) == 6
    for step, token in enumerate(full[len(ids):]):
        expected = reference[len(ids) + step - 1]
        assert abs(lp.token_logprobs[step] - expected[token]) < 1e-4
        top = lp.top_logprobs[step]
        best3 = np.argsort(expected)[::-1][:3]
        assert len(top) >= 3
        for rank in best3:
            assert abs(top[local_model.tokenizer.decode([int(rank)])] - expected[rank]) < 1e-4
    # Offsets count from the prompt's start, and each token's text starts there.
    whole = prompt + choice.text
    for token, offset in zip(lp.tokens, lp.text_offset):
        if not token.startswith("bytes:"):
            assert whole[offset:offset + len(token)] == token


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_with_logprobs_scores_the_prompt_like_lm_evaluation_harness(server, model_id, local_model, hf_model,
                                                                         max_tokens):
    """lm-evaluation-harness's local-completions: echo, logprobs 1, max_tokens 0 or 1, token ids as the prompt;
    it sums token_logprobs over the continuation and checks greediness against top_logprobs."""
    ids = local_model.encode_prompt("Question: what is two plus two? Answer: four")
    body = {"model": model_id, "prompt": [ids], "max_tokens": max_tokens, "echo": True, "logprobs": 1,
            "temperature": 0, "seed": 1234}
    reply = httpx.post(server + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    lp = reply.json()["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + max_tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    reference = log_softmax_of_transformers(hf_model, ids)
    strings = [local_model.tokenizer.decode([i]) for i in ids]
    assert lp["tokens"][:len(ids)] == strings
    for position in range(1, len(ids)):
        expected = reference[position - 1]
        assert abs(lp["token_logprobs"][position] - expected[ids[position]]) < 1e-4
        top = lp["top_logprobs"][position]
        best = int(np.argmax(expected))
        assert abs(top[local_model.tokenizer.decode([best])] - expected[best]) < 1e-4
        # The scored token is always listed, as OpenAI does (so a dict can have logprobs + 1 entries).
        assert abs(top[strings[position]] - expected[ids[position]]) < 1e-4
    text = reply.json()["choices"][0]["text"]
    assert text.startswith(local_model.decode(ids))


def test_the_openai_client_reads_echoed_prompt_logprobs(client, model_id, local_model, hf_model):
    prompt = "Scored by the official client"
    ids = local_model.encode_prompt(prompt)
    result = client.completions.create(model=model_id, prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    [choice] = result.choices
    assert choice.text == prompt and choice.finish_reason == "length"
    assert result.usage.completion_tokens == 0
    lp = choice.logprobs
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    reference = log_softmax_of_transformers(hf_model, ids)
    expected = reference[np.arange(len(ids) - 1), ids[1:]]
    assert np.abs(np.array(lp.token_logprobs[1:]) - expected).max() < 1e-4
    assert lp.text_offset == [len(local_model.decode(ids[:i])) for i in range(len(ids))]


def test_the_prompts_logprobs_do_not_depend_on_the_prefix_cache(server, model_id, local_model):
    """A second request with the same prompt finds its blocks cached; its prompt logprobs must still be all
    there and the same."""
    prompt = "A prompt long enough to fill more than one block of sixteen tokens, so that it is cached. " * 2
    body = {"model": model_id, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
    replies = [httpx.post(server + "/v1/completions", json=body, timeout=60).json() for _ in range(2)]
    first, second = (r["choices"][0]["logprobs"] for r in replies)
    assert len(first["tokens"]) == len(local_model.encode_prompt(prompt))
    assert first == second


# ------------------------------------------------------------------------------------------ embeddings
def test_embeddings_equal_model_embed_as_floats_and_base64(client, model_id, local_model):
    texts = ["a first text", "and another one, a little longer"]
    result = client.embeddings.create(model=model_id, input=texts, encoding_format="float")
    expected = local_model.embed(texts)
    got = np.array([d.embedding for d in sorted(result.data, key=lambda d: d.index)], np.float32)
    np.testing.assert_array_equal(got, expected)
    assert result.usage.prompt_tokens == sum(len(local_model.tokenizer.encode(t)) for t in texts)
    raw = httpx.post(client.base_url.join("embeddings").__str__(),
                     json={"model": model_id, "input": texts[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4")
    np.testing.assert_array_equal(decoded, expected[0])


# ------------------------------------------------------------------------------------------ raw HTTP
def sse_events(reply: httpx.Response) -> list[str]:
    """The data of each server-sent event, checking the framing: every event is one ``data: `` line and a
    blank line."""
    text = reply.read().decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [event[len("data: "):] for event in events]


def test_server_sent_events_are_framed_and_end_with_done(server, model_id):
    body = {"model": model_id, "prompt": "Framing", "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = sse_events(reply)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["usage"]["completion_tokens"] == 5 and chunks[-1]["choices"] == []


BAD_REQUESTS = [
    # (what, body or raw bytes, status, param)
    ("malformed JSON", b'{"model": "m", "prompt": "x",', 400, None),
    ("not an object", b'[1, 2]', 400, None),
    ("wrong type", {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ("unknown field", {"prompt": "x", "max_token": 5}, 400, "max_token"),
    ("negative max_tokens", {"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("max_tokens past the context", {"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("n of 0", {"prompt": "x", "n": 0}, 400, "n"),
    ("n above max batch", {"prompt": "x", "n": 17, "temperature": 1}, 400, "n"),
    ("prompt over the context", {"prompt": "word " * 400}, 400, "prompt"),
    ("token id outside the vocabulary", {"prompt": [1, 2, 50257]}, 400, "prompt"),
    ("negative token id", {"prompt": [[5, -1]]}, 400, "prompt[0]"),
    ("temperature out of range", {"prompt": "x", "temperature": 3}, 400, "temperature"),
    ("logprobs out of range", {"prompt": "x", "logprobs": 50}, 400, "logprobs"),
    ("stop not strings", {"prompt": "x", "stop": [1]}, 400, "stop"),
    ("stream_options without stream", {"prompt": "x", "stream_options": {"include_usage": True}}, 400,
     "stream_options"),
    ("bad logit_bias key", {"prompt": "x", "logit_bias": {"hello": 1}}, 400, "logit_bias"),
    ("no prompt", {"max_tokens": 3}, 400, "prompt"),
    ("unknown model", {"model": "gpt-4", "prompt": "x"}, 404, "model"),
    ("body over the size limit", {"prompt": "x" * (3 * 1024 * 1024)}, 413, None),
]


def test_every_bad_request_gets_a_4xx_naming_the_field_while_streams_run(server, model_id, local_model):
    """Bad requests arrive while four streams run; each gets OpenAI's error object, and the streams end as they
    would alone."""
    prompts = [f"Stream number {i} goes on" for i in range(4)]

    async def scenario():
        async with httpx.AsyncClient(base_url=server, timeout=120) as http:
            async def stream(prompt):
                body = {"model": model_id, "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": True}
                text = []
                async with http.stream("POST", "/v1/completions", json=body) as reply:
                    async for line in reply.aiter_lines():
                        if line.startswith("data: {"):
                            text += [c["text"] for c in json.loads(line[6:])["choices"]]
                return "".join(text)

            streams = [asyncio.ensure_future(stream(p)) for p in prompts]
            await asyncio.sleep(0.3)
            answers = []
            for what, body, status, param in BAD_REQUESTS:
                if isinstance(body, bytes):
                    reply = await http.post("/v1/completions", content=body,
                                            headers={"content-type": "application/json"})
                else:
                    reply = await http.post("/v1/completions", json={"model": model_id, **body})
                answers.append((what, status, param, reply))
            for path, method in [("/v1/chat/completions", "POST"), ("/v1/nothing", "GET"),
                                 ("/v1/completions", "GET")]:
                answers.append((path, None, None, await http.request(method, path, json={"model": model_id})))
            return answers, await asyncio.gather(*streams)

    answers, texts = asyncio.run(scenario())
    for what, status, param, reply in answers:
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, what
        assert error["message"], what
        if status is not None:
            assert reply.status_code == status, (what, reply.text)
            assert error["param"] == param, (what, error)
            if param is not None:
                assert param in error["message"], (what, error)
        else:
            assert 400 <= reply.status_code < 500, what
    chat = answers[-3][3]
    assert chat.status_code == 400 and "/v1/completions" in chat.json()["error"]["message"]
    assert [answers[-2][3].status_code, answers[-1][3].status_code] == [404, 405]
    assert texts == [alone(local_model, p, max_new_tokens=40)[0] for p in prompts]


def test_sixteen_concurrent_streams_each_equal_what_it_gets_alone(server, model_id, local_model):
    prompts = [f"Concurrent request {i}: the story of" + " and" * (i % 5) for i in range(16)]

    async def one(http, index, prompt):
        body = {"model": model_id, "prompt": prompt, "max_tokens": 24, "stream": True,
                "temperature": 0.8 if index % 2 else 0, "seed": index}
        pieces = []
        async with http.stream("POST", "/v1/completions", json=body) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                if line.startswith("data: {"):
                    pieces += [c["text"] for c in json.loads(line[6:])["choices"]]
        return "".join(pieces)

    async def scenario():
        async with httpx.AsyncClient(base_url=server, timeout=180) as http:
            return await asyncio.gather(*(one(http, i, p) for i, p in enumerate(prompts)))

    texts = asyncio.run(scenario())
    for index, (prompt, text) in enumerate(zip(prompts, texts)):
        options = dict(do_sample=True, temperature=0.8, top_k=None, seed=index) if index % 2 else {}
        assert text == alone(local_model, prompt, max_new_tokens=24, **options)[0], index


# ------------------------------------------------------------------------------------------ metrics, logs
def metric(server: str, name: str) -> float:
    text = httpx.get(server + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics:\n{text}")


def test_metrics_count_tokens_and_steps(server, model_id, client):
    before = metric(server, "tinygpt_generation_tokens_total"), metric(server, "tinygpt_step_seconds_count")
    client.completions.create(model=model_id, prompt="Counting", max_tokens=7, temperature=0)
    after = metric(server, "tinygpt_generation_tokens_total"), metric(server, "tinygpt_step_seconds_count")
    assert after[0] - before[0] == 7
    assert after[1] - before[1] >= 7
    text = httpx.get(server + "/metrics").text
    assert "# TYPE tinygpt_step_seconds histogram" in text
    assert 'tinygpt_step_seconds_bucket{le="+Inf"}' in text
    assert metric(server, "tinygpt_kv_cache_blocks") > 0


def wait_for_metric(server: str, name: str, value: float, seconds: float = 20) -> float:
    import time

    deadline = time.monotonic() + seconds
    while True:
        current = metric(server, name)
        if current == value or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def test_a_client_that_disconnects_has_its_sequence_cancelled(server, model_id):
    assert wait_for_metric(server, "tinygpt_sequences_running", 0) == 0
    body = {"model": model_id, "prompt": "A long story", "max_tokens": 200, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as reply:
        lines = reply.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        assert metric(server, "tinygpt_sequences_running") == 1
        assert metric(server, "tinygpt_kv_cache_blocks_in_use") > 0
    # The connection is closed: the sequence leaves at the engine's next step, its blocks with it.
    assert wait_for_metric(server, "tinygpt_sequences_running", 0) == 0
    assert wait_for_metric(server, "tinygpt_kv_cache_blocks_in_use", 0) == 0
    cancelled = metric(server, 'tinygpt_requests_finished_total{reason="cancelled"}')
    assert cancelled >= 1
    # Not streamed: the client gives up waiting for 16 sequences of 240 tokens, and they stop well before that.
    generated = metric(server, "tinygpt_generation_tokens_total")
    big = {**body, "stream": False, "n": 16, "temperature": 1.0, "max_tokens": 240}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/completions", json=big, timeout=0.5)
    assert wait_for_metric(server, "tinygpt_sequences_running", 0) == 0
    assert metric(server, 'tinygpt_requests_finished_total{reason="cancelled"}') == cancelled + 1
    assert metric(server, "tinygpt_generation_tokens_total") - generated < 16 * 240


def test_one_log_line_per_request(server, model_id, client, served_log):
    result = client.completions.create(model=model_id, prompt="Log me", max_tokens=3, temperature=0)
    lines = [line for line in served_log.read_text().splitlines() if result.id in line]
    assert len(lines) == 1
    line = lines[0]
    for part in ("prompt_tokens=", "completion_tokens=3", "ttft=", "tok/s", "finish=length"):
        assert part in line, line
    # A refused request is logged with the reason it was given.
    httpx.post(server + "/v1/completions", json={"model": model_id, "prompt": [[]]})
    assert "refused: 400 prompt[0]: is an empty list of token ids" in served_log.read_text().splitlines()[-1]


def test_health_and_the_editor_page(server):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
