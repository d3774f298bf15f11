"""Four processes of one engine decoding at once on one machine: how much memory do they take together?

    python benchmarks/process_memory.py [--threads N] [--llama-bench PATH] [--gguf PATH]

On the random-init distilgpt2-shaped model of benchmarks/engine.py, for each engine in turn (never two
engines' processes alive at once) it starts 4 processes together, each loading the model and then generating
128 greedy tokens from a 32-token prompt over and over, with N threads (default 1). Once every one of them has
finished at least one whole generation, it reads /proc/PID/smaps_rollup of each 5 times, 0.5 s apart, while
they decode, keeps each process's sample with the highest PSS, and sums them. Then it stops them and does the
same with 1 process alone.

PSS (proportional set size) counts each resident page a process maps divided by the number of processes
mapping it, so the sum over the 4 counts a shared page once: the sum is what the 4 cost the machine together.
Pss_File is the part in mapped files (the weights among them, and the shared libraries); Pss_Anon the rest
(the heap, the interpreter's objects, JIT code, activations and KV cache, private copies of weights). RSS
counts a shared page in every process that maps it: its sum counts the shared weights 4 times. Private
(Private_Clean + Private_Dirty) is what only that process maps: what its exit would give back.

Engines:
  tinygpt-int8  Model.from_pretrained(dtype="int8"): the quantized linear weights and LM head are mapped from
                the int8 cache file (written by an untimed load first); embeddings, biases and LayerNorm stay
                float32, mapped from the source safetensors file: of the token embedding, only the pages the
                kernel maps around the rows read are resident (~30 MB of its 154 MB here).
  tinygpt-f32   every weight mapped from the source safetensors file.
  ct2-int8      CTranslate2 (compute_type int8) on engine.py's int8 conversion: it reads model.bin into memory
                of its own, a private copy per process. Skipped without the ctranslate2 package.
  llama-q8_0    llama.cpp's llama-bench (from --llama-bench) on a q8_0 GGUF file with its default load mode
                (mmap), run as ``llama-bench -m FILE -p 0 -n 128 -r 1000 -t N --progress``; it counts as
                ready once it starts its second timed generation. Skipped without --llama-bench.

The weight file column is the file each engine's weights come from (tinygpt-int8: its int8 cache file).
MB = 1e6 bytes. The parent, a Python process, maps the interpreter's own libraries too and takes a small share
of those pages from the children.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import engine

PROCESSES = 4
SAMPLES, SAMPLE_GAP_S = 5, 0.5
READY_TIMEOUT_S = 600  # 4 loads and generations sharing the cores
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty")
CHILD_ENGINES = ("tinygpt-int8", "tinygpt-f32", "ct2-int8")
READY = "process_memory: first generation done"  # what a child prints to stderr once it has decoded once
LLAMA_READY = "generation run 2/"  # llama-bench --progress: the warm-up and the first timed run are done


def decode_until_stdin_closes(name: str, model: Path, threads: int) -> None:
    """In a child: load the engine, generate, say so on stderr, and generate again until stdin closes (at
    once when stdin is /dev/null: one generation, the untimed warm-up)."""
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    runner, _ = engine.open_engine(name, model, threads)
    prompt = [engine.prompt_ids(engine.PROMPT_TOKENS, 1)]
    engine.generate_checked(runner, prompt, engine.NEW_TOKENS)
    print(READY, file=sys.stderr, flush=True)
    while not closed.is_set():
        engine.generate_checked(runner, prompt, engine.NEW_TOKENS)


def smaps_rollup(pid: int) -> dict[str, int]:
    """The FIELDS this kernel reports in /proc/PID/smaps_rollup, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0]) * 1024  # kB
    return values


def log_text(log) -> str:
    log.seek(0)
    return log.read()


def measure(command: list[str], count: int, ready: str) -> list[dict[str, int]]:
    """Start ``count`` processes running ``command``; once each has printed ``ready`` to stderr, sample
    their smaps_rollup while they run and return each one's sample of highest PSS. Stops them all, whatever
    happens (an error, Ctrl-C)."""
    logs = [tempfile.TemporaryFile("w+") for _ in range(count)]  # their stderr: unlinked, shown on failure
    processes = []
    try:
        for log in logs:
            # Python children stop when stdin closes; llama-bench gets /dev/null and is terminated.
            stdin = subprocess.PIPE if command[0] == sys.executable else subprocess.DEVNULL
            processes.append(subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=log,
                                              text=True))
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(range(count))
        while waiting:
            for i in list(waiting):
                if processes[i].poll() is not None:
                    raise RuntimeError(f"{command[:4]} stopped (exit code {processes[i].returncode}):\n"
                                       f"{log_text(logs[i])[-3000:]}")
                if ready in log_text(logs[i]):
                    waiting.remove(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[:4]}: not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.2)
        peaks = [{"Pss": -1} for _ in processes]
        for sample in range(SAMPLES):
            if sample:
                time.sleep(SAMPLE_GAP_S)
            for peak, process in zip(peaks, processes, strict=True):
                now = smaps_rollup(process.pid)  # raises if it has exited: then it was not decoding
                if now["Pss"] > peak["Pss"]:
                    peak.clear()
                    peak.update(now)
        return peaks
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            else:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)  # a Python child ends its current generation first
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def engines_to_run(args: argparse.Namespace) -> tuple[dict[str, tuple[list[str], str, Path]], list[str]]:
    """{engine: (command, ready marker, weight file)} of the engines that can run here, and why the others
    cannot."""
    runs, skipped = {}, []
    for name in CHILD_ENGINES:
        missing = engine.ENGINES[name].missing(args)
        if missing:
            skipped.append(f"{name}: needs {missing}")
            continue
        model = engine.ENGINES[name].files(args)
        command = [sys.executable, __file__, "--child", name, "--model", str(model), "--threads", str(args.threads)]
        # The untimed load: writes tinygpt's int8 cache file (so all 4 map it) and warms Numba's caches.
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} (untimed load) failed:\n{done.stderr[-3000:]}")
        runs[name] = (command, READY, weight_file(name, model))
    if args.llama_bench is None:
        skipped.append("llama-q8_0: needs --llama-bench PATH")
    elif args.gguf is None or not args.gguf.exists():
        skipped.append(f"llama-q8_0: no GGUF file ({args.gguf or 'give --gguf PATH'})")
    else:
        command = [str(args.llama_bench), "-m", str(args.gguf), "-p", "0", "-n", str(engine.NEW_TOKENS),
                   "-r", "1000", "-t", str(args.threads), "--progress"]
        runs["llama-q8_0"] = (command, LLAMA_READY, args.gguf)
    return runs, skipped


def weight_file(name: str, model: Path) -> Path:
    if name == "tinygpt-int8":
        from tinygpt import int8_cache  # the standard library only: the parent stays free of NumPy and Numba

        return int8_cache.file_for(int8_cache.key([model / "model.safetensors"]))
    return model / ("model.bin" if name.startswith("ct2") else "model.safetensors")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    parser.add_argument("--llama-bench", type=Path, metavar="PATH", help="llama.cpp's llama-bench binary")
    default_gguf = engine.gguf_file("q8_0")
    if not default_gguf.exists():  # the serve benchmark's conversion: the same shape
        default_gguf = engine.CACHE / "serve-distilgpt2-random-q8_0.gguf"
    parser.add_argument("--gguf", type=Path, default=default_gguf, metavar="PATH",
                        help=f"q8_0 GGUF file for llama-bench (default {default_gguf})")
    parser.add_argument("--child", choices=CHILD_ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.threads <= cores:
        parser.error(f"--threads must be between 1 and {cores} (the cores this process may use)")
    args.llama_cpp_converter = None  # what Engine.missing asks about
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        decode_until_stdin_closes(args.child, args.model, args.threads)
        return
    runs, skipped = engines_to_run(args)
    results = {}
    for name, (command, ready, _) in runs.items():
        print(f"{name}: 1 process, then {PROCESSES} ...", file=sys.stderr, flush=True)
        results[name] = (measure(command, 1, ready)[0], measure(command, PROCESSES, ready))

    def total(peaks: list[dict[str, int]], field: str) -> float:
        return sum(peak.get(field, 0) for peak in peaks) / 1e6

    print(f"distilgpt2 shape (6 layers, 768 wide, 50257 vocab), random weights; each process decodes "
          f"{engine.NEW_TOKENS} greedy tokens from a {engine.PROMPT_TOKENS}-token prompt over and over; "
          f"per process the highest PSS of {SAMPLES} samples {SAMPLE_GAP_S} s apart; MB")
    print(f"{'engine':<14}{'1 proc PSS':>12}{f'{PROCESSES} procs PSS':>13}{'of it anon':>12}{'file':>8}"
          f"{'private':>9}{f'{PROCESSES} procs RSS':>13}{'weight file':>13}")
    for name, (one, many) in results.items():
        private = total(many, "Private_Clean") + total(many, "Private_Dirty")
        print(f"{name:<14}{one['Pss'] / 1e6:12.1f}{total(many, 'Pss'):13.1f}{total(many, 'Pss_Anon'):12.1f}"
              f"{total(many, 'Pss_File'):8.1f}{private:9.1f}{total(many, 'Rss'):13.1f}"
              f"{runs[name][2].stat().st_size / 1e6:13.1f}")
    print(engine.machine_line(args.threads))
    if "llama-q8_0" in runs:
        print(f"llama-q8_0: {args.llama_bench} on {args.gguf}")
    for reason in skipped:
        print(f"skipped {reason}")
    if "tinygpt-int8" in results and "ct2-int8" in results:
        ours, theirs = total(results["tinygpt-int8"][1], "Pss"), total(results["ct2-int8"][1], "Pss")
        print(f"target: tinygpt-int8's sum of PSS <= ct2-int8's: {ours:.1f} vs {theirs:.1f} MB, ratio "
              f"{ours / theirs:.2f}: {'met' if ours <= theirs else 'NOT met'}")


if __name__ == "__main__":
    main()
