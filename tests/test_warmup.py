"""``tinygpt warmup``: on an empty Numba cache it compiles every kernel the commands run, so that none of them
compiles (or gives the cold-cache notice) afterwards. One cold compile of everything: a minute or two here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tinygpt.cli import COMPILING

COMMAND = [sys.executable, "-m", "tinygpt.cli"]


def test_after_warmup_no_command_compiles(small_gpt2_dir, tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "TINYGPT_NUM_THREADS": "1"}

    def tinygpt(*args, input=None):
        return subprocess.run([*COMMAND, *map(str, args)], input=input, capture_output=True, text=True, env=env,
                              timeout=900)

    warmup = tinygpt("warmup")
    assert warmup.returncode == 0, warmup.stderr
    assert warmup.stderr == COMPILING + "\n"
    lines = warmup.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        f"{dtype} kernels, models {width} wide" for dtype in ("float32", "int8") for width in (768, 1024)]
    assert lines[-1].startswith("kernels for float32 and int8 weights compiled and cached in ")

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Document {i} says hello to the world."}) + "\n"
                              for i in range(3)))
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 80)
    model = ["--model", small_gpt2_dir]
    runs = {
        "generate": tinygpt("generate", "Hello", *model, "--greedy", "--max-new-tokens", 4),
        "generate int8": tinygpt("generate", "Hello", *model, "--dtype", "int8", "--num-return-sequences", 2,
                                 "--seed", 0, "--max-new-tokens", 4),
        "embed": tinygpt("embed", "Hello world", *model),
        "perplexity int8": tinygpt("perplexity", text, *model, "--dtype", "int8"),
        "score": tinygpt("score", corpus, tmp_path / "scores.jsonl", *model, "--embed"),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {run.stderr}"
        assert COMPILING not in run.stderr, name

    again = tinygpt("warmup", "--dtype", "int8")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout.splitlines()[-1].startswith("kernels for int8 weights already in Numba's cache, loaded in ")
