"""The ``tinygpt`` command: generate, tokenize, perplexity, embed, score, serve, warmup.

Start-up time matters (a whole short generation should take about a second), so only the standard library
is imported here; NumPy, Numba and the model load inside the commands that need them, and ``tinygpt --help``
imports neither (nor does ``--version``). Every error ends the command with one line on stderr and exit status 1
(2 for bad usage); Ctrl-C ends it quietly with status 130, whatever it was doing (in the middle of compiling a
kernel, at the next point where Numba can stop: see ``tinygpt.compiling``). The first run on a machine, which
compiles the kernels, says so once on stderr.

The commands call :class:`~tinygpt.model.Model` directly, as ``tinygpt.pipeline`` does beside them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import sys
import time

from .errors import InputError, TinyGPTError, TokenizerError

DEFAULT_MODEL = "distilgpt2"
SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")  # each of them implies sampling
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
COMPILING = "tinygpt: compiling kernels for this CPU (first run only, 20 s to a minute)..."
EXAMPLES = """examples:
  tinygpt generate "Hello, I'm a language model," --seed 42
  echo "这是很久之前的事情了" | tinygpt generate - --model uer/gpt2-distil-chinese-cluecorpussmall
  tinygpt tokenize "Hello world"
  tinygpt perplexity book.txt --stride 256
  tinygpt embed "first text" "second text"
  tinygpt score corpus.jsonl scores.parquet --embed
  tinygpt serve --dtype int8        (then open http://127.0.0.1:8000/)
  tinygpt warmup                    (compile the kernels ahead, e.g. in a container image)

Run "tinygpt COMMAND --help" for the options of a command."""


class _Version(argparse.Action):
    """``--version``: prints "tinygpt <version>" from the installed package's metadata, read only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print tinygpt's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("tinygpt")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "(unknown: not installed, so there is no package metadata)"
        print(f"tinygpt {number}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    try:
        if sys.stdout is None:  # started with stdout closed (``>&-``): every command (and --help) prints there
            raise OSError("standard output is closed; tinygpt prints its results there (redirect it to a file, or "
                          "to /dev/null to discard them)")
        args = build_parser().parse_args(argv)
        args.command(args)
    except SystemExit as done:  # --help, --version or a usage error: argparse has printed it, with its status
        return done.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail
        return 1
    except Exception as error:  # the command line reports every failure as one line
        print(f"tinygpt: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The ``tinygpt`` executable: :func:`main`, then exit at once. Tearing down the interpreter with Numba
    and LLVM loaded takes ~0.5 s that a finished command does not need; output is flushed first.

    From here on, a Ctrl-C ends it with status 130 and nothing on stderr, whatever it interrupts: the import of
    NumPy and Numba, the model's load, generation (the streamed line is ended first), the final flush.
    """
    signal.signal(signal.SIGINT, _interrupt)
    try:
        status = main()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away: nothing left to tell it
        status = status or 1
    os._exit(status)


def _interrupt(signum, frame) -> None:
    """SIGINT: stop the command with KeyboardInterrupt, once. Later ones are ignored, so that a second Ctrl-C
    cannot turn the clean-up (ending the streamed line, flushing) into a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _one_line(error: Exception) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    # Our own errors (and the ValueError/OSError/RuntimeError kinds) have messages that say it all; name the rest.
    if isinstance(error, (TinyGPTError, ValueError, OSError, RuntimeError)):
        return message
    return f"{type(error).__name__}: {message}"


# ------------------------------------------------------------------------------------------------ the parser
def _checked(convert, valid, expected: str):
    """An argparse type: the flag's text through ``convert`` (int or float), which ``valid`` must accept.

    The errors name the flag (argparse puts it in front), where generate's own would name its option.
    """
    def value(text: str):
        try:
            number = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {convert.__name__} value: {text!r}") from None
        if not valid(number):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return number
    return value


COUNT = _checked(int, lambda n: n >= 1, "an integer >= 1")
NON_NEGATIVE_INT = _checked(int, lambda n: n >= 0, "an integer >= 0")
POSITIVE_NUMBER = _checked(float, lambda x: 0 < x < math.inf, "a positive finite number")
TEMPERATURE = _checked(float, lambda t: 0 < t < math.inf,
                       "a positive finite number (for greedy decoding use --greedy)")
FRACTION = _checked(float, lambda p: 0 <= p <= 1, "a number between 0 and 1")


def build_parser() -> argparse.ArgumentParser:
    """The ``tinygpt`` parser; each subcommand stores its handler in ``args.command``."""
    parser = _Parser(prog="tinygpt", description="Run GPT-2-family models on the CPU with tinygpt.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    model_options = _Parser(add_help=False)
    model_options.add_argument("--model", default=DEFAULT_MODEL,
                               help=f"hub repo id or local model directory (default: {DEFAULT_MODEL})")
    model_options.add_argument("--revision", help="branch, tag or commit of a hub repo")
    compute_options = _Parser(add_help=False, parents=[model_options])
    compute_options.add_argument("--threads", type=int, metavar="N",
                                 help="kernel threads (default: TINYGPT_NUM_THREADS, else every available core)")
    compute_options.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                                 help="weights as loaded (float32) or quantized to int8 at load: a quarter of "
                                      "the bytes to read per token, slightly different numbers (default float32)")

    generate = commands.add_parser(
        "generate", parents=[compute_options], help="continue a prompt, printing the text as it is produced",
        description="Continue PROMPT and print it with its continuation as tokens are produced. Without options, "
                    "generation follows the model's text-generation defaults (config.json task_specific_params; "
                    "distilgpt2 samples up to 50 tokens in all); a model without them generates 20 new tokens "
                    "greedily.")
    generate.add_argument("prompt", metavar="PROMPT", help="the text to continue; - reads it from stdin")
    generate.add_argument("--max-new-tokens", type=COUNT, metavar="N", help="generate at most N tokens")
    generate.add_argument("--temperature", type=TEMPERATURE, help="sampling temperature (implies sampling)")
    generate.add_argument("--top-k", type=NON_NEGATIVE_INT, metavar="K",
                          help="sample from the K likeliest tokens; 0: all (implies sampling)")
    generate.add_argument("--top-p", type=FRACTION, metavar="P",
                          help="nucleus sampling threshold in [0, 1] (implies sampling)")
    generate.add_argument("--repetition-penalty", type=POSITIVE_NUMBER, metavar="R",
                          help="> 1 discourages repeats")
    generate.add_argument("--num-return-sequences", type=COUNT, metavar="N",
                          help="sample N continuations (implies sampling), printed one after another")
    generate.add_argument("--seed", type=NON_NEGATIVE_INT,
                          help="random seed (implies sampling): the same seed gives the same text")
    generate.add_argument("--greedy", action="store_true", help="always take the likeliest token (no sampling)")
    generate.set_defaults(command=run_generate)

    tokenize = commands.add_parser(
        "tokenize", parents=[model_options], help="show the tokens of a text",
        description="Print one line per token of TEXT: its id, its vocabulary entry and its text (JSON-quoted).")
    tokenize.add_argument("text", metavar="TEXT", help="the text to tokenize; - reads it from stdin")
    tokenize.set_defaults(command=run_tokenize)

    perplexity = commands.add_parser(
        "perplexity", parents=[compute_options], help="perplexity of a text file under the model",
        description="Print the perplexity of FILE (UTF-8 text) by the sliding-window method of transformers' "
                    "perplexity guide. Shows its progress on stderr: in place on a terminal, else as a plain "
                    f"line redrawn at most every {ProgressBar.LOG_INTERVAL:g} s.")
    perplexity.add_argument("file", metavar="FILE", help="UTF-8 text file; - reads stdin")
    perplexity.add_argument("--stride", type=int, metavar="N",
                            help="tokens between window starts (default: half the context, 512 for distilgpt2)")
    perplexity.set_defaults(command=run_perplexity)

    serve = commands.add_parser(
        "serve", parents=[compute_options], help="an OpenAI-compatible server and the editor page",
        description="Serve the model over HTTP: OpenAI's /v1/completions, /v1/embeddings and /v1/models, "
                    "/health, /metrics, and the Write With Transformer editor page at /. Needs the serve extra: "
                    'pip install "tinygpt[serve]". Ctrl-C or SIGTERM stops it.')
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to "
                            "the network)")
    serve.add_argument("--port", type=_checked(int, lambda n: 0 <= n <= 65535, "a port number"), default=8000,
                       help="default 8000")
    serve.add_argument("--max-batch", type=COUNT, metavar="N", default=16,
                       help="output sequences generated at once (default 16)")
    serve.add_argument("--max-queue", type=NON_NEGATIVE_INT, metavar="N", default=64,
                       help="requests that may wait for room; past that, 503 with Retry-After (default 64)")
    serve.add_argument("--kv-cache-tokens", type=COUNT, metavar="N",
                       help="positions of keys and values kept for all sequences (default: max-batch x 512)")
    serve.add_argument("--served-model-name", metavar="NAME",
                       help="the model id clients send and /v1/models lists (default: --model as given)")
    serve.add_argument("--api-key", metavar="KEY",
                       help="require 'Authorization: Bearer KEY' on the API (default: TINYGPT_API_KEY if set)")
    serve.set_defaults(command=run_serve)

    embed = commands.add_parser(
        "embed", parents=[compute_options], help="mean-pooled hidden states of texts",
        description="Print one JSON array per TEXT: the mean of its final hidden states (n_embd floats).")
    embed.add_argument("texts", metavar="TEXT", nargs="+", help="a text to embed")
    embed.set_defaults(command=run_embed)

    score = commands.add_parser(
        "score", parents=[compute_options], help="score every document of a corpus (JSON Lines or Parquet)",
        description="Score each row of INPUT, a JSON Lines (.jsonl, .json) or Parquet (.parquet) file or a folder "
                    "of them, into OUTPUT: one row per input row, in order, with its id, tokens, nll (mean "
                    "negative log-likelihood per token), perplexity, [embedding] and error (null when the row "
                    "was scored). A row that cannot be scored gets its error and the run goes on. A folder "
                    "INPUT gives a folder OUTPUT, one file per input file; files already there are complete and "
                    "skipped, so an interrupted run resumes where it stopped. Parquet needs pyarrow: "
                    'pip install "tinygpt[parquet]". Shows its progress on stderr (documents/s, tokens/s).')
    score.add_argument("input", metavar="INPUT", help="a .jsonl, .json or .parquet file, or a folder of them")
    score.add_argument("output", metavar="OUTPUT",
                       help="the output file (its extension picks the format), or folder for a folder INPUT")
    score.add_argument("--text-column", default="text", metavar="NAME",
                       help="the column (JSON field) holding the text (default: text)")
    score.add_argument("--id-column", default="id", metavar="NAME",
                       help="the column copied to the output's id; rows without it get their row number "
                            "within their file, from 0 (default: id)")
    score.add_argument("--embed", action="store_true",
                       help="add an embedding column: the mean of each document's final hidden states")
    score.add_argument("--stride", type=COUNT, metavar="N",
                       help="tokens between window starts for documents longer than the context "
                            "(default: half the context)")
    score.add_argument("--batch-size", type=COUNT, metavar="N", default=256,
                       help="rows read, scored and written at a time (default 256)")
    score.add_argument("--output-format", choices=("jsonl", "parquet"),
                       help="the format of a folder's output files (default: each input file's own)")
    score.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on a Ray cluster: ADDRESS of a running cluster, auto to find one, none to start "
                            "a local one")
    score.add_argument("--actors", type=COUNT, metavar="N", help="with --ray: model replicas scoring at once")
    score.add_argument("--cpus-per-actor", type=COUNT, metavar="K", help="with --ray: CPUs each replica takes")
    score.set_defaults(command=run_score)

    warmup = commands.add_parser(
        "warmup", help="compile the kernels ahead of time (for container images and deploys)",
        description="Compile every kernel that generate, serve, embed, perplexity and score use, into Numba's "
                    "cache, so that the first real run does not spend 20 s to a minute compiling. Needs no model: "
                    "it runs small random ones. Run it where tinygpt will run (the machine code is for this CPU), "
                    "as the user that runs it, with the same NUMBA_CACHE_DIR if that is set. On a warm cache it "
                    "only loads the kernels and takes a few seconds.")
    warmup.add_argument("--dtype", choices=("float32", "int8", "both"), default="both",
                        help="the weights whose kernels to compile (default both)")
    warmup.set_defaults(command=run_warmup)
    return parser


# ------------------------------------------------------------------------------------------------ the commands
def run_generate(args: argparse.Namespace) -> None:
    """Print the prompt, then its continuation piece by piece (or several continuations, one after another)."""
    prompt = _text_argument(args.prompt)
    options = _generation_options(args)
    model = _load_model_with_tokenizer(args, "generate")
    from .generation import with_defaults

    options = with_defaults(options, model.generation_defaults)
    ids = _prompt_ids(model, prompt, args.max_new_tokens)
    if options.get("num_return_sequences", 1) > 1:
        sequences = model.generate(ids, **options)
        _print_sequences([prompt + model.decode(sequence[len(ids):]) for sequence in sequences])
        return
    pieces = model.stream(ids, **options)  # checks the options before anything is printed
    try:
        _write(prompt)
        for piece in pieces:
            _write(piece)
    finally:  # also after Ctrl-C or an error: the shell's prompt then starts on a line of its own
        _write("\n")


def run_tokenize(args: argparse.Namespace) -> None:
    """Print ``id  vocabulary-entry  "text"`` for each token (the tokenizer only: no model weights are read)."""
    text = _text_argument(args.text)
    from .hub import resolve_model_dir
    from .tokenizers import Tokenizer

    tokenizer = Tokenizer.from_pretrained(resolve_model_dir(args.model, args.revision))
    ids = tokenizer.encode(text)
    entries = tokenizer.convert_ids_to_tokens(ids)
    width = max(map(len, entries), default=0)
    for token_id, entry in zip(ids, entries):
        piece = json.dumps(tokenizer.decode([token_id]), ensure_ascii=False)
        print(f"{token_id:>6}  {entry:<{width}}  {piece}")


def run_perplexity(args: argparse.Namespace) -> None:
    """Print the perplexity of a file (full precision)."""
    text = _read_file(args.file)
    model = _load_model_with_tokenizer(args, "perplexity")
    progress = ProgressBar(sys.stderr) if sys.stderr is not None else None
    try:
        value = model.perplexity(text, stride=args.stride, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    print(value)


def run_serve(args: argparse.Namespace) -> None:
    """Serve until stopped; a model that cannot be loaded ends the command with its error."""
    _prepare_kernels(args.threads)
    from .server import serve

    kv_cache_tokens = args.kv_cache_tokens
    if kv_cache_tokens is None:
        kv_cache_tokens = args.max_batch * 512
    serve(args.model, revision=args.revision, served_name=args.served_model_name, dtype=args.dtype,
          host=args.host, port=args.port, max_batch=args.max_batch,
          max_queue=args.max_queue, kv_cache_tokens=kv_cache_tokens,
          api_key=args.api_key or os.environ.get("TINYGPT_API_KEY") or None)


def run_embed(args: argparse.Namespace) -> None:
    """Print one JSON array of floats per text."""
    model = _load_model_with_tokenizer(args, "embed")
    for vector in model.embed(args.texts):
        print(json.dumps(vector.tolist()))


def run_score(args: argparse.Namespace) -> None:
    """Score a corpus file or folder into the output, in-process or (--ray) on a Ray cluster."""
    if args.ray is None:
        for flag in ("actors", "cpus_per_actor"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} needs --ray: it sizes the Ray actor pool")
    else:
        _run_score_on_ray(args)
        return
    from .corpus import plan, score_files

    plan(args.input, args.output, args.output_format)  # a mistyped path fails now, not after the model's load
    model = _load_model_with_tokenizer(args, "score")
    summary = score_files(model, args.input, args.output, text_column=args.text_column,
                          id_column=args.id_column, embed=args.embed, stride=args.stride,
                          batch_size=args.batch_size, output_format=args.output_format,
                          progress=sys.stderr is not None)
    if sys.stderr is not None:
        _report_scores(summary, args.output)


def _run_score_on_ray(args: argparse.Namespace) -> None:
    from .ray import score_files as ray_score_files

    # --output-format is passed on only when given: the Ray runner may pick output formats its own way
    extra = {"output_format": args.output_format} if args.output_format is not None else {}
    ray_score_files(model=args.model, dtype=args.dtype, revision=args.revision, input_path=args.input,
                    output_path=args.output, text_column=args.text_column, id_column=args.id_column,
                    embed=args.embed, stride=args.stride, batch_size=args.batch_size, address=args.ray,
                    actors=args.actors, cpus_per_actor=args.cpus_per_actor, **extra)


def run_warmup(args: argparse.Namespace) -> None:
    """Compile (or load from Numba's cache) every kernel the commands use; print what was done and its time."""
    _prepare_kernels(None)
    from .generation import plural
    from .warmup import warmup

    dtypes = ("float32", "int8") if args.dtype == "both" else (args.dtype,)
    start = time.perf_counter()
    compiled = 0
    for step in warmup(dtypes):
        compiled += step.compiled
        print(f"{step.dtype} kernels, models {step.width} wide: {step.seconds:.1f} s "
              f"({plural(step.compiled, 'function')} compiled)", flush=True)
    done = "compiled and cached" if compiled else "already in Numba's cache, loaded"
    print(f"kernels for {' and '.join(dtypes)} weights {done} in {time.perf_counter() - start:.1f} s")


def _report_scores(summary, output: str) -> None:
    """One line on stderr: what was written where (stdout stays empty: the scores are in the files)."""
    from .generation import plural

    if not summary.shards_written:
        print(f"nothing to score: every output file in {output} is already done", file=sys.stderr)
        return
    files = f" ({plural(summary.shards_written, 'file')})" if summary.shards_written > 1 else ""
    scored = summary.documents - summary.errors
    errors = f", {summary.errors} with an error (see their error column)" if summary.errors else ""
    print(f"wrote {output}{files}: {plural(summary.documents, 'row')}, {scored} scored "
          f"({plural(summary.tokens, 'token')}){errors}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ helpers
class ProgressBar:
    """perplexity's ``progress(done, total)`` callback, drawn by tqdm: tokens scored, rate and time left.

    On a terminal the bar is redrawn in place and erased when the work is over. Elsewhere (a pipe, a log file)
    tqdm's plain form: ASCII, redrawn at most every LOG_INTERVAL seconds so that a long run does not fill the
    log, and left as the last line. The bar starts at the first call, when the number of tokens is known, so an
    error before any window is scored is the only line on stderr.
    """

    LOG_INTERVAL = 10.0  # seconds

    def __init__(self, stream):
        self._stream = stream
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        from tqdm import tqdm  # here, not at the top: it would add to every command's start-up time

        terminal = self._stream.isatty()
        self._bar = tqdm(desc="perplexity", total=total, initial=done, unit="token", file=self._stream,
                         dynamic_ncols=terminal, ascii=not terminal, leave=not terminal,
                         mininterval=0.1 if terminal else self.LOG_INTERVAL)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _generation_options(args: argparse.Namespace) -> dict:
    """The generate options set on the command line (unset ones are left to the model's defaults)."""
    options = {
        name: getattr(args, name)
        for name in ("max_new_tokens", *SAMPLING_FLAGS, "repetition_penalty", "num_return_sequences")
        if getattr(args, name) is not None
    }
    sampling_flags = [name for name in SAMPLING_FLAGS if name in options]
    if args.greedy and sampling_flags:
        flag = "--" + sampling_flags[0].replace("_", "-")
        raise InputError(f"--greedy cannot be combined with {flag}: greedy decoding does not sample")
    if args.greedy and options.get("num_return_sequences", 1) > 1:
        raise InputError(f"--greedy cannot be combined with --num-return-sequences {args.num_return_sequences}: "
                         "greedy decoding gives the same sequence every time")
    # Sampling settings, or asking for several different continuations, only make sense when sampling.
    if args.greedy or sampling_flags or options.get("num_return_sequences", 1) > 1:
        options["do_sample"] = not args.greedy
    return options


def _prepare_kernels(threads: int | None) -> None:
    """Before a command's first kernel: the notice and the Ctrl-C guard of a compile, the thread count."""
    from .kernels.threads import set_num_threads  # first: it checks NUMBA_NUM_THREADS before Numba's import
    from .compiling import watch

    watch(_say_compiling)
    if threads is not None:
        try:
            set_num_threads(threads)
        except ValueError as error:
            raise InputError(f"--threads: {error}") from None


def _load_model_with_tokenizer(args: argparse.Namespace, command: str):
    """The kernels prepared (:func:`_prepare_kernels`) and the model loaded, with Python's cyclic garbage
    collector paused meanwhile. Importing Numba and building the tokenizer's tables create a few hundred
    thousand objects that live as long as the command, and every collection they would set off walks all of
    them; they are then frozen (``gc.freeze``: left out of later collections), or the first collection after
    the pause would walk them all at once. ``benchmarks/startup.py`` measures the difference."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        _prepare_kernels(args.threads)
        from .model import Model

        model = Model.from_pretrained(args.model, revision=args.revision, dtype=args.dtype)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    from .tokenizers import TOKENIZER_FILE_SETS

    if model.tokenizer is None:
        raise TokenizerError(f"the model directory of {args.model} has no tokenizer files ({TOKENIZER_FILE_SETS}), "
                             f"which {command} needs to read text")
    return model


def _prompt_ids(model, prompt: str, max_new_tokens: int | None) -> list[int]:
    """The prompt's ids, checked against the model's context in the command line's terms (the flag, not the
    option of ``generate``, which would also call the only prompt "prompt 0")."""
    from .generation import plural

    ids = model.encode_prompt(prompt)
    if not ids:
        raise InputError("the prompt is empty: generation needs at least one token to continue from")
    n_positions, tokens = model.config.n_positions, plural(len(ids), "token")
    room = n_positions - len(ids)
    if room < 1:
        raise InputError(f"the prompt has {tokens} and fills the model's context of {n_positions} positions: "
                         "there is no room for a new token")
    if max_new_tokens is not None and max_new_tokens > room:
        raise InputError(f"--max-new-tokens {max_new_tokens}: the prompt has {tokens}, so the model's context of "
                         f"{n_positions} positions leaves room for {plural(room, 'new token')} at most")
    return ids


def _text_argument(value: str) -> str:
    """A text argument; ``-`` reads stdin, without the line end a shell pipeline leaves at its end."""
    return sys.stdin.read().rstrip("\r\n") if value == "-" else value


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise OSError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None


def _print_sequences(texts: list[str]) -> None:
    for number, text in enumerate(texts, start=1):
        if number > 1:
            _write("\n")
        _write(f"--- sequence {number} of {len(texts)} ---\n{text}\n")


def _say_compiling() -> None:
    """The cold-cache notice. On a terminal, generate's prompt may be waiting on its line for the
    continuation: the notice then takes a line of its own."""
    if sys.stderr is None:
        return
    on_own_line = _stdout_line_open and sys.stdout.isatty() and sys.stderr.isatty()
    print(("\n" if on_own_line else "") + COMPILING, file=sys.stderr, flush=True)


_stdout_line_open = False  # whether _write left stdout in the middle of a line


def _write(text: str) -> None:
    global _stdout_line_open
    sys.stdout.write(text)
    sys.stdout.flush()
    if text:
        _stdout_line_open = not text.endswith("\n")


if __name__ == "__main__":
    run()
