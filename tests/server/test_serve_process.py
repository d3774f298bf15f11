"""The server as a process: its queue bound, its API key, loading, stopping, and running without the extra."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serving import free_port, running_server, wait_until_ready


def test_past_max_queue_requests_get_503_and_later_ones_succeed(distilgpt2_shape_gpt2_tokenizer_dir):
    """One sequence at a time and one waiting: a third request is refused with Retry-After, and once the
    first two are done, requests are served again. (A distilgpt2-sized model: the small one could finish the
    first request before the test has queued the second, on a busy machine.)"""
    with running_server(distilgpt2_shape_gpt2_tokenizer_dir, "--max-batch", "1", "--max-queue", "1") as url:
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        long = {"model": model, "prompt": "Busy", "max_tokens": 120, "temperature": 0, "ignore_eos": True}

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                running = asyncio.ensure_future(http.post("/v1/completions", json=long))
                await until(lambda: metric(url, "tinygpt_requests_running") == 1)
                waiting = asyncio.ensure_future(http.post("/v1/completions", json=long))
                await until(lambda: metric(url, "tinygpt_requests_waiting") == 1)
                refused = await http.post("/v1/completions", json={**long, "max_tokens": 1})
                return refused, await running, await waiting

        refused, first, second = asyncio.run(scenario())
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["code"] == "queue_full"
        assert first.status_code == second.status_code == 200
        later = httpx.post(url + "/v1/completions", json={**long, "max_tokens": 3}, timeout=60)
        assert later.status_code == 200 and later.json()["usage"]["completion_tokens"] == 3
        assert metric(url, 'tinygpt_requests_rejected_total{reason="queue_full"}') == 1


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_an_api_key_guards_the_api_but_not_health_or_the_page(small_gpt2_dir):
    with running_server(small_gpt2_dir, "--api-key", "s3cret", "--served-model-name", "tiny") as url:
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = httpx.get(url + "/v1/models", headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/metrics").status_code == 401
        good = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200
        # --served-model-name: the id clients see and send, in place of the directory's path.
        assert [m["id"] for m in good.json()["data"]] == ["tiny"]
        reply = httpx.post(url + "/v1/completions", headers={"Authorization": "Bearer s3cret"},
                           json={"model": "tiny", "prompt": "Hi", "max_tokens": 2})
        assert reply.status_code == 200 and reply.json()["model"] == "tiny"


def test_health_is_503_while_loading_then_200(small_gpt2_dir):
    """The app answers before the model is loaded (here a loader held back by the test)."""
    from starlette.testclient import TestClient

    from tinygpt import Model
    from tinygpt.server.app import ServerSettings, create_app

    release = threading.Event()

    def load(settings):
        release.wait(60)
        return Model.from_pretrained(settings.model)

    app = create_app(ServerSettings(model=str(small_gpt2_dir), max_batch=2, kv_cache_tokens=1024), load=load)
    with TestClient(app) as http:
        loading = http.get("/health")
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        early = http.post("/v1/completions", json={"model": str(small_gpt2_dir), "prompt": "x"})
        assert early.status_code == 503 and early.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 120
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.post("/v1/completions", json={"model": str(small_gpt2_dir), "prompt": "x",
                                                  "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_running_streams_and_the_server_exits_0(small_gpt2_dir, sig):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tinygpt", "serve", "--model", str(small_gpt2_dir), "--port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        body = {"model": str(small_gpt2_dir), "prompt": "On and on", "max_tokens": 240, "temperature": 0,
                "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as reply:
            lines = reply.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            started = time.monotonic()
            process.send_signal(sig)
            rest = list(lines)  # the stream ends (finished, or cut after the grace period)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
        assert all(not line or line.startswith("data: ") for line in rest)
        stderr = process.stderr.read().decode()
        assert "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_without_the_extra_says_how_to_install_it(small_gpt2_dir):
    # uvicorn made unimportable in this one process, as if the serve extra were not installed.
    code = ("import sys; sys.modules['uvicorn'] = None; from tinygpt.cli import main; "
            f"sys.exit(main(['serve', '--model', {str(small_gpt2_dir)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'pip install "tinygpt[serve]"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_model_that_cannot_load_ends_serve_with_its_error(tmp_path):
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "tinygpt", "serve", "--model", str(tmp_path / "missing"),
                             "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "missing" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_the_options_of_serve_are_checked(small_gpt2_dir):
    result = subprocess.run([sys.executable, "-m", "tinygpt", "serve", "--port", "70000"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--port" in result.stderr
