"""The ``tinygpt`` command line, end to end in subprocesses, against the same work done in-process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinygpt import pipeline
from tinygpt.model import Model
from tinygpt.scoring import PACK_TOKENS

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

PROMPT = "Hello, I'm a language model"
COMMAND = [sys.executable, "-m", "tinygpt.cli"]
# These models are tiny: a second kernel thread only adds synchronisation, which costs seconds on a busy machine.
# The subprocesses get one thread through the environment variable, this process through one_kernel_thread.
ONE_THREAD = {"TINYGPT_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


def tinygpt(*args, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``tinygpt ARGS`` in a new Python process; text in and out as UTF-8."""
    return subprocess.run([*COMMAND, *map(str, args)], input=input, capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, **ONE_THREAD, **(env or {})}, timeout=300)


def succeeded(result: subprocess.CompletedProcess) -> bool:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return True




@pytest.fixture(scope="module")
def model(small_gpt2_dir) -> Model:
    return Model.from_pretrained(small_gpt2_dir)


@pytest.fixture(scope="module")
def defaults_dir(small_gpt2_dir, tmp_path_factory) -> Path:
    """The small model with distilgpt2-style text-generation defaults in its config.json."""
    directory = tmp_path_factory.mktemp("cli_defaults")
    for file in small_gpt2_dir.iterdir():
        shutil.copy(file, directory / file.name)
    config = json.loads((directory / "config.json").read_text())
    config["task_specific_params"] = {"text-generation": {"do_sample": True, "max_length": 24}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


# ---------------------------------------------------------------------------------------------------- generate
def test_generate_greedy_prints_the_prompt_and_the_in_process_continuation(small_gpt2_dir, model):
    ids = model.encode_prompt(PROMPT)
    continuation = model.decode(model.generate(ids, max_new_tokens=12)[0][len(ids):])
    expected = PROMPT + continuation + "\n"
    options = ["--model", small_gpt2_dir, "--greedy", "--max-new-tokens", 12]

    assert succeeded(result := tinygpt("generate", PROMPT, *options, "--threads", 1))
    assert result.stdout == expected
    assert succeeded(from_stdin := tinygpt("generate", "-", *options, input=PROMPT + "\n"))
    assert from_stdin.stdout == expected


def test_generate_int8_prints_the_int8_models_continuation(small_gpt2_dir):
    int8 = Model.from_pretrained(small_gpt2_dir, dtype="int8")
    ids = int8.encode_prompt(PROMPT)
    expected = PROMPT + int8.decode(int8.generate(ids, max_new_tokens=12)[0][len(ids):]) + "\n"
    result = tinygpt("generate", PROMPT, "--model", small_gpt2_dir, "--greedy", "--max-new-tokens", 12,
                     "--dtype", "int8")
    assert succeeded(result)
    assert result.stdout == expected


def test_generate_samples_like_the_pipeline(small_gpt2_dir, defaults_dir):
    generator = pipeline("text-generation", small_gpt2_dir)
    args = ["generate", PROMPT, "--model", small_gpt2_dir, "--temperature", 0.8, "--top-k", 40, "--seed", 42,
            "--max-new-tokens", 10]
    expected = generator(PROMPT, do_sample=True, temperature=0.8, top_k=40, seed=42, max_new_tokens=10)
    first, second = tinygpt(*args), tinygpt(*args)
    assert succeeded(first) and succeeded(second)
    assert first.stdout == second.stdout == expected[0]["generated_text"] + "\n"

    several = tinygpt("generate", PROMPT, "--model", small_gpt2_dir, "--num-return-sequences", 3, "--seed", 7,
                      "--max-new-tokens", 6)
    texts = [r["generated_text"] for r in generator(PROMPT, do_sample=True, num_return_sequences=3, seed=7,
                                                    max_new_tokens=6)]
    assert succeeded(several)
    assert several.stdout == "\n".join(f"--- sequence {i} of 3 ---\n{text}\n" for i, text in enumerate(texts, 1))

    # Without sampling options, the model's text-generation defaults apply (here: sample, 24 tokens in all).
    with_defaults = tinygpt("generate", PROMPT, "--model", defaults_dir, "--seed", 3)
    assert succeeded(with_defaults)
    assert with_defaults.stdout == pipeline("text-generation", defaults_dir)(PROMPT, seed=3)[0]["generated_text"] + "\n"


def test_seed_alone_samples_without_warnings(small_gpt2_dir):
    # The model has no text-generation defaults: greedy, where a seed would change nothing; --seed means sampling.
    result = tinygpt("generate", PROMPT, "--model", small_gpt2_dir, "--seed", 42, "--max-new-tokens", 10)
    assert succeeded(result) and result.stderr == ""
    expected = pipeline("text-generation", small_gpt2_dir)(PROMPT, do_sample=True, seed=42, max_new_tokens=10)
    assert result.stdout == expected[0]["generated_text"] + "\n"


def test_generate_calls_the_model_without_the_pipeline(small_gpt2_dir):
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from tinygpt.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["generate", "Hello", "--model", {str(small_gpt2_dir)!r}, "--max-new-tokens", "2"])
        print(status, "tinygpt.text_generation" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **ONE_THREAD})
    assert result.stdout == "0 False\n", result.stderr


def test_ctrl_c_exits_quietly_with_130(small_gpt2_dir):
    process = subprocess.Popen([*COMMAND, "generate", PROMPT, "--model", str(small_gpt2_dir), "--greedy",
                                "--max-new-tokens", "240"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **ONE_THREAD})
    assert process.stdout.read(len(PROMPT)) == PROMPT.encode()  # printed once the model is loaded and starts
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr == b""
    assert stdout.endswith(b"\n")  # the streamed text is a finished line: the shell's prompt starts on its own


# Runs the command line with a Ctrl-C arriving at one point: the process sends itself SIGINT there, as a terminal
# would, and the Python handler then interrupts whatever runs at that moment.
INTERRUPTED_RUN = textwrap.dedent("""
    import os, signal, sys

    def interrupt():
        os.kill(os.getpid(), signal.SIGINT)

    phase, *sys.argv[1:] = sys.argv[1:]
    if phase == "imports":  # while the command imports NumPy (and then Numba)
        class InterruptNumPyImport:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy":
                    interrupt()
                return None
        sys.meta_path.insert(0, InterruptNumPyImport())
    elif phase == "load":  # while the model loads (config.json is read first)
        from tinygpt.config import GPT2Config
        read = GPT2Config.from_file.__func__
        GPT2Config.from_file = classmethod(lambda cls, path: (interrupt(), read(cls, path))[1])
    elif phase == "flush":  # while the output, written in full, is flushed at exit
        class InterruptedFlush:
            def __init__(self, stream):
                self.stream = stream
            def write(self, text):
                return self.stream.write(text)
            def flush(self):
                interrupt()
                self.stream.flush()
        sys.stdout = InterruptedFlush(sys.stdout)
    from tinygpt.cli import run
    run()
""")


@pytest.mark.parametrize("phase", ["imports", "load", "flush"])
def test_ctrl_c_in_every_phase_exits_quietly_with_130(phase, small_gpt2_dir):
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_RUN, phase, "embed", "first", "second", "--model",
                             small_gpt2_dir], capture_output=True, timeout=120, env={**os.environ, **ONE_THREAD})
    assert (result.returncode, result.stderr) == (130, b"")
    if phase == "flush":  # the command itself had finished: both vectors were printed
        assert len(result.stdout.splitlines()) == 2


def test_closed_stdout_is_a_one_line_error(small_gpt2_dir):
    # As a shell runs `tinygpt generate ... >&-`: the process starts without a file descriptor 1.
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *COMMAND, "generate", PROMPT, "--model",
                             str(small_gpt2_dir), "--max-new-tokens", "3"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **ONE_THREAD})
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["tinygpt: error: standard output is closed; tinygpt prints its results "
                                          "there (redirect it to a file, or to /dev/null to discard them)"]


# ----------------------------------------------------------------------------------------------------- tokenize
def test_tokenize_lists_ids_entries_and_texts_like_transformers(small_gpt2_dir):
    from transformers import AutoTokenizer

    text = "Hello, wörld! 東京  x <|endoftext|>"
    result = tinygpt("tokenize", text, "--model", small_gpt2_dir)
    assert succeeded(result)
    rows = [re.fullmatch(r"\s*(\d+)\s+(\S+)\s+(\".*\")", line).groups() for line in result.stdout.splitlines()]

    reference = AutoTokenizer.from_pretrained(small_gpt2_dir)
    ids = reference(text)["input_ids"]
    assert [int(token_id) for token_id, _, _ in rows] == ids
    assert [entry for _, entry, _ in rows] == reference.convert_ids_to_tokens(ids)
    assert [json.loads(piece) for _, _, piece in rows] == [reference.decode([token_id]) for token_id in ids]


def test_help_and_tokenize_do_not_load_numba(small_gpt2_dir):
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from tinygpt.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
            after_help = "numba" in sys.modules
            main(["tokenize", "Hello", "--model", {str(small_gpt2_dir)!r}])
        print(after_help, "numba" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout == "False False\n", result.stderr


def test_help_and_version_load_neither_numpy_nor_numba():
    script = textwrap.dedent("""
        import contextlib, io, sys
        from tinygpt.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            statuses = main(["--help"]), main(["generate", "--help"]), main(["--version"])
        print(statuses, out.getvalue().splitlines()[-1], [name for name in ("numpy", "numba") if name in sys.modules])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    from importlib.metadata import version

    assert result.stdout == f"(0, 0, 0) tinygpt {version('tinygpt')} []\n", result.stderr


def test_version():
    from importlib.metadata import version

    result = tinygpt("--version")
    assert succeeded(result)
    assert result.stdout == f"tinygpt {version('tinygpt')}\n"


# --------------------------------------------------------------------------------------------------- perplexity
def test_perplexity_equals_the_model_perplexity(small_gpt2_dir, model, tmp_path):
    # Long enough for several forward passes: each packs PACK_TOKENS // n_positions windows (see below).
    text = " ".join(f"Sentence {i} says something new about the lazy dog and the fox." for i in range(80))
    assert len(model.tokenizer.encode(text)) > model.config.n_positions  # more than one window
    file = tmp_path / "text.txt"
    file.write_text(text, encoding="utf-8")

    default_stride = tinygpt("perplexity", file, "--model", small_gpt2_dir)
    assert succeeded(default_stride)
    assert float(default_stride.stdout) == model.perplexity(text, stride=model.config.n_positions // 2)
    from_stdin = tinygpt("perplexity", "-", "--model", small_gpt2_dir, "--stride", 64, input=text)
    assert succeeded(from_stdin)
    assert float(from_stdin.stdout) == model.perplexity(text, stride=64)


def test_perplexity_progress_off_a_terminal_is_plain_and_brief(small_gpt2_dir, tmp_path):
    # Long enough for several forward passes: each packs PACK_TOKENS // n_positions windows (see below).
    text = " ".join(f"Sentence {i} says something new about the lazy dog and the fox." for i in range(80))
    file = tmp_path / "text.txt"
    file.write_text(text, encoding="utf-8")
    result = subprocess.run([*COMMAND, "perplexity", str(file), "--model", str(small_gpt2_dir), "--stride", "32"],
                            capture_output=True, timeout=300, env={**os.environ, **ONE_THREAD})  # stderr: a pipe
    assert result.returncode == 0, result.stderr
    # tqdm's plain form: ASCII, drawn when the first forward pass is done and once more at the end (redraws in
    # between wait LOG_INTERVAL seconds), the last state left as a line of its own. The first pass packs
    # PACK_TOKENS // 256 windows of the model's 256 positions: 256 new tokens in the first, 32 in each other.
    stderr = result.stderr.decode("ascii")
    draws = stderr.split("\r")
    assert draws[0] == "" and 2 <= len(draws) - 1 <= 3, stderr
    assert "\033" not in stderr and "Traceback" not in stderr
    first_pass = 256 + (PACK_TOKENS // 256 - 1) * 32
    first = re.fullmatch(rf"perplexity: +\d+%\|[#\d ]+\| {first_pass}/(\d+) \[00:00<\?, \?token/s\]", draws[1])
    assert first, draws[1]
    total = first.group(1)
    assert re.fullmatch(rf"perplexity: 100%\|#+\| {total}/{total} \[\d\d:\d\d<00:00, +[\d.]+token/s\]\n", draws[-1])


def test_perplexity_progress_on_a_terminal_is_redrawn_in_place_then_erased(small_gpt2_dir, tmp_path):
    import fcntl
    import select
    import struct
    import termios

    # Long enough for several forward passes: each packs PACK_TOKENS // n_positions windows (see below).
    text = " ".join(f"Sentence {i} says something new about the lazy dog and the fox." for i in range(80))
    file = tmp_path / "text.txt"
    file.write_text(text, encoding="utf-8")
    terminal, stderr_end = os.openpty()
    fcntl.ioctl(stderr_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    process = subprocess.Popen([*COMMAND, "perplexity", str(file), "--model", str(small_gpt2_dir), "--stride", "32"],
                               stdout=subprocess.PIPE, stderr=stderr_end, env={**os.environ, **ONE_THREAD})
    os.close(stderr_end)
    shown = b""
    while select.select([terminal], [], [], 120)[0]:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the process has closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    float(stdout)
    draws = shown.decode("utf-8").split("\r")
    assert draws[0] == "" and draws[-1] == "" and draws[-2].strip() == ""  # the last draw blanks the line
    bars = draws[1:-2]
    assert bars and all(re.fullmatch(r"perplexity: +\d+%\|.*\| \d+/\d+ \[\d\d:\d\d<.*token/s\]", bar) for bar in bars)
    assert all(len(bar) <= 100 for bar in bars)  # the width of the terminal


# -------------------------------------------------------------------------------------------------------- embed
def test_embed_prints_one_json_vector_per_text(small_gpt2_dir, model):
    texts = ["Hello world", "Ünïcödé façade — 東京"]
    result = tinygpt("embed", *texts, "--model", small_gpt2_dir)
    assert succeeded(result)
    vectors = np.array([json.loads(line) for line in result.stdout.splitlines()], dtype=np.float32)
    np.testing.assert_array_equal(vectors, model.embed(texts))


# -------------------------------------------------------------------------------------------------------- score
SCORE_TEXTS = ["Hello world, this is a test.", "The quick brown fox jumps over the lazy dog.", "A short one."]


def test_score_writes_the_model_scores_of_each_row(small_gpt2_dir, model, tmp_path):
    lines = [json.dumps({"id": "a", "text": SCORE_TEXTS[0]}), "not json", json.dumps({"text": SCORE_TEXTS[1]})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run([*COMMAND, "score", str(tmp_path / "in.jsonl"), str(tmp_path / "out.parquet"),
                             "--model", str(small_gpt2_dir), "--embed", "--batch-size", "2"],
                            capture_output=True, timeout=300, env={**os.environ, **ONE_THREAD})  # stderr: a pipe
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""  # the scores are in the file
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["id"] for row in rows] == ["a", "1", "2"]  # the row number where a row has no id
    assert rows[1]["error"].startswith("line 2 is not valid JSON") and rows[1]["embedding"] is None
    for row, text in ((rows[0], SCORE_TEXTS[0]), (rows[2], SCORE_TEXTS[1])):
        expected = model.score(text, embed=True)
        assert (row["tokens"], row["nll"], row["perplexity"]) == (expected.tokens, expected.nll, expected.perplexity)
        np.testing.assert_array_equal(np.array(row["embedding"], np.float32), expected.embedding)
    # progress off a terminal: plain ASCII, documents/s and tokens/s; then one line on what was written
    stderr = result.stderr.decode("ascii")
    *draws, summary = stderr.split("\r")[-1].splitlines()
    assert "\033" not in stderr and "Traceback" not in stderr
    assert re.fullmatch(r"score: 3 docs \[\d\d:\d\d, +[\d.]+ docs/s, \d+ tokens, \d+ tokens/s\]", draws[-1]), stderr
    tokens = rows[0]["tokens"] + rows[2]["tokens"]
    assert summary == (f"wrote {tmp_path / 'out.parquet'}: 3 rows, 2 scored ({tokens} tokens), 1 with an error "
                       "(see their error column)")


def test_score_folder_resumes(small_gpt2_dir, model, tmp_path):
    shards = tmp_path / "in"
    shards.mkdir()
    for number, text in enumerate(SCORE_TEXTS):
        (shards / f"part-{number}.jsonl").write_text(json.dumps({"id": number, "text": text}) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-1.jsonl").write_text("done before\n")

    result = tinygpt("score", shards, tmp_path / "out", "--model", small_gpt2_dir, "--output-format", "jsonl")
    assert succeeded(result)
    assert result.stderr.startswith("skipping 1 shard already done\n")
    assert (tmp_path / "out" / "part-1.jsonl").read_text() == "done before\n"
    for number in (0, 2):
        (row,) = [json.loads(line) for line in (tmp_path / "out" / f"part-{number}.jsonl").read_text().splitlines()]
        assert row["id"] == number and row["nll"] == model.score(SCORE_TEXTS[number]).nll
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"part-{n}.jsonl" for n in range(3)]


def test_score_help():
    result = tinygpt("score", "--help")
    assert succeeded(result)
    assert result.stdout.startswith("usage: tinygpt score ") and "--ray [ADDRESS]" in result.stdout


# --------------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["", "generate", "tokenize", "perplexity", "embed", "warmup"])
def test_help(command):
    result = tinygpt(*command.split(), "--help")
    assert succeeded(result)
    assert result.stdout.startswith(f"usage: tinygpt {command}".rstrip() + " ")


def test_installed_entry_point():
    script = Path(sys.executable).with_name("tinygpt")
    if not script.exists():
        pytest.skip("the tinygpt console script is not installed next to this Python")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "generate" in result.stdout


# ------------------------------------------------------------------------------------------------------- errors
def closed_port_url() -> str:
    """A loopback URL nobody listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


ERRORS = {
    "missing model dir": (["generate", PROMPT, "--model", "{tmp}/no/such/dir"], {}, "neither an existing directory"),
    "hub unreachable": (["generate", PROMPT, "--model", "nobody/nothing"],
                        {"HF_ENDPOINT": "{closed}", "HF_HUB_CACHE": "{tmp}/hub"}, "could not be reached"),
    "bad option value": (["generate", PROMPT, "--model", "{model}", "--temperature", "-1"], {},
                         "argument --temperature: must be a positive finite number"),
    "zero temperature": (["generate", PROMPT, "--model", "{model}", "--temperature", "0"], {},
                         "--temperature: must be a positive finite number (for greedy decoding use --greedy)"),
    "top-p out of range": (["generate", PROMPT, "--model", "{model}", "--top-p", "1.5"], {},
                           "argument --top-p: must be a number between 0 and 1, got 1.5"),
    "greedy and several sequences": (["generate", PROMPT, "--model", "{model}", "--greedy",
                                      "--num-return-sequences", "2"], {},
                                     "--greedy cannot be combined with --num-return-sequences 2"),
    "greedy and seed": (["generate", PROMPT, "--model", "{model}", "--greedy", "--seed", "1"], {},
                        "--greedy cannot be combined with --seed"),
    "unparsable option": (["generate", PROMPT, "--model", "{model}", "--top-k", "many"], {},
                          "argument --top-k: invalid int value"),
    "greedy and sampling": (["generate", PROMPT, "--model", "{model}", "--greedy", "--top-p", "0.9"], {},
                            "--greedy cannot be combined with --top-p"),
    "empty prompt": (["generate", "", "--model", "{model}"], {}, "the prompt is empty"),
    "context overflow": (["generate", PROMPT, "--model", "{model}", "--max-new-tokens", "300"], {},
                         "context of 256 positions"),
    "max new tokens past the context": (["generate", "hi", "--model", "{model}", "--max-new-tokens", "5000"], {},
                                        "--max-new-tokens 5000: the prompt has 1 token, so the model's context of "
                                        "256 positions leaves room for 255 new tokens at most"),
    "bad thread count": (["embed", "x", "--model", "{model}", "--threads", "0"], {}, "--threads"),
    "bad thread variable": (["embed", "x", "--model", "{model}"], {"TINYGPT_NUM_THREADS": "many"},
                            "TINYGPT_NUM_THREADS must be an integer"),
    "missing file": (["perplexity", "{tmp}/missing.txt", "--model", "{model}"], {}, "cannot read"),
    "text too short": (["perplexity", "-", "--model", "{model}"], {}, "at least 2 tokens"),
    "perplexity without tokenizer": (["perplexity", "-", "--model", "{tiny}"], {},
                                     "has no tokenizer files (vocab.json + merges.txt, tokenizer.json or "
                                     "vocab.txt), which perplexity needs to read text"),
    "no tokenizer": (["tokenize", "x", "--model", "{tiny}"], {}, "found no tokenizer"),
    "score missing input": (["score", "{tmp}/corpus.jsonl", "{tmp}/out.jsonl", "--model", "{model}"], {},
                            "corpus.jsonl: no such file or folder"),
    "score output format": (["score", "{model}/config.json", "{tmp}/out.txt", "--model", "{model}"], {},
                            "cannot tell the format of the output file"),
    "score actors without ray": (["score", "in.jsonl", "out.jsonl", "--actors", "2"], {}, "--actors needs --ray"),
    "warmup dtype": (["warmup", "--dtype", "int4"], {}, "argument --dtype: invalid choice: 'int4'"),
    "unknown command": (["translate", "x"], {}, "invalid choice: 'translate'"),
    "no command": ([], {}, "the following arguments are required"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_one_line_without_traceback(case, small_gpt2_dir, tiny_model_dir, tmp_path):
    args, env, message = ERRORS[case]
    paths = {"model": small_gpt2_dir, "tiny": tiny_model_dir, "tmp": tmp_path, "closed": closed_port_url()}
    result = tinygpt(*(arg.format(**paths) for arg in args), input="a",
                     env={name: value.format(**paths) for name, value in env.items()})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tinygpt") and message in lines[0]
