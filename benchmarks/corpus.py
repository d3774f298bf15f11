"""How fast does tinygpt score a corpus, in one process and on Ray, against what a user would write today (#17)?

    python benchmarks/corpus.py [--documents 10000] [--batch-size 16] [--engines ...] [--rounds 1]

The corpus: 10,000 documents of 20-2,000 tokens (lengths uniform, seed 0), each random GPT-2 token ids turned
into text, in 4 Parquet shards of columns id and text (built once under benchmarks/.cache/). ``--documents N``
scores its first N documents (the same documents whatever N): the whole corpus is ~10 M tokens, hours on two
cores for each engine. The model: distilgpt2's shape at random init with GPT-2's tokenizer (benchmarks/serve.py
builds it); its perplexities are huge, but both engines compute the same ones.

Engines, each timed from start to the last row (model loads and Ray actors' start-up included; a running Ray
instance is shared by the Ray engines, its own start-up not counted; the Ray engines get the corpus from the
driver, a batch per block):

  tinygpt-{f32,int8}            in-process: ``tinygpt.corpus.score_files`` (what ``tinygpt score`` runs)
  tinygpt-{f32,int8}-ray-AxC    Ray Data: ``read_parquet(...).map_batches(tinygpt.ray.Scorer, ...)`` on an actor
                                pool of A actors of C CPUs each
  transformers-ray-AxC          the baseline: the same pipeline over a class a user would write around
                                transformers' GPT2LMHeadModel (float32, torch threads = C): each batch tokenized,
                                sorted by length and cut into padded sub-batches of at most 4,096 tokens, the loss
                                per document from the logits (``cross_entropy(reduction="none")`` under the
                                attention mask); a document longer than the context by the perplexity guide's
                                sliding windows (stride 512)

Targets (issue #17), same run and same actor pool: tinygpt float32 >= 1.3x and int8 >= 2x the baseline's tokens/s;
per-document perplexities of tinygpt float32 and transformers equal within 1e-4 relative. The run also checks
that every Ray engine gives each document exactly the in-process numbers (the same bits).
"""

from __future__ import annotations

import tinygpt  # noqa: I001 -- before NumPy: tinygpt sets NumPy's BLAS thread variables on import

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import serve as serve_benchmark  # the distilgpt2-shaped model with GPT-2's tokenizer files
from batching import cpu_lines

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
CORPUS_DOCUMENTS = 10_000
SHARDS = 4
LENGTHS = (20, 2000)
CONTEXT = 1024
STRIDE = 512
SUB_BATCH_TOKENS = 4096
TARGETS = {"float32": 1.3, "int8": 2.0}
POOLS = ((1, 2), (2, 1))  # (actors, CPUs per actor) on a two-core machine


# ---- the corpus --------------------------------------------------------------------------------------------


def build_corpus(model_dir: Path) -> Path:
    """The 10,000 documents as Parquet shards of (id, text), built once."""
    folder = CACHE / f"corpus-{CORPUS_DOCUMENTS}"
    if folder.exists():
        return folder
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinygpt.tokenizers import Tokenizer

    tokenizer = Tokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    lengths = rng.integers(LENGTHS[0], LENGTHS[1] + 1, CORPUS_DOCUMENTS)
    texts = [tokenizer.decode(rng.integers(0, 50256, n).tolist()) for n in lengths]  # no <|endoftext|>
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    per_shard = CORPUS_DOCUMENTS // SHARDS
    for s in range(SHARDS):
        rows = range(s * per_shard, (s + 1) * per_shard)
        pq.write_table(pa.table({"id": list(rows), "text": [texts[i] for i in rows]}), partial / f"part-{s}.parquet")
    partial.rename(folder)
    return folder


def corpus_subset(corpus: Path, documents: int, into: Path) -> Path:
    """The first ``documents`` rows of the corpus, as shards of their own (so every engine reads only them)."""
    import pyarrow.parquet as pq

    table = pq.read_table(corpus).sort_by("id").slice(0, documents)
    into.mkdir(parents=True)
    per_shard = -(-documents // SHARDS)
    for s in range(SHARDS):
        part = table.slice(s * per_shard, per_shard)
        if part.num_rows:
            pq.write_table(part, into / f"part-{s}.parquet")
    return into


# ---- the baseline ------------------------------------------------------------------------------------------


class TransformersScorer:
    """What a user would write today: GPT2LMHeadModel in a callable class for Ray Data's map_batches."""

    def __init__(self, model_dir: str, threads: int):
        import torch
        from transformers import GPT2LMHeadModel, GPT2TokenizerFast

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = GPT2TokenizerFast.from_pretrained(model_dir)
        self.model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    def __call__(self, batch: dict) -> dict:
        encoded = [self.tokenizer(str(text))["input_ids"] for text in batch["text"]]
        nll = np.empty(len(encoded))
        short = sorted((i for i, ids in enumerate(encoded) if len(ids) <= CONTEXT), key=lambda i: len(encoded[i]))
        group: list[int] = []
        for i in short:  # sorted by length: each padded sub-batch holds documents of similar lengths
            if group and (len(group) + 1) * len(encoded[i]) > SUB_BATCH_TOKENS:
                self._short_documents([encoded[j] for j in group], nll, group)
                group = []
            group.append(i)
        if group:
            self._short_documents([encoded[j] for j in group], nll, group)
        for i, ids in enumerate(encoded):
            if len(ids) > CONTEXT:
                nll[i] = self._long_document(ids)
        return {"id": np.asarray(batch["id"]), "tokens": np.array([len(ids) for ids in encoded]),
                "perplexity": np.exp(nll)}

    def _short_documents(self, documents: list[list[int]], nll: np.ndarray, rows: list[int]) -> None:
        torch = self.torch
        width = max(map(len, documents))
        ids = torch.zeros((len(documents), width), dtype=torch.long)
        mask = torch.zeros((len(documents), width), dtype=torch.long)
        for r, document in enumerate(documents):
            ids[r, :len(document)] = torch.tensor(document)
            mask[r, :len(document)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        valid = mask[:, 1:].double()
        per_document = (losses.double() * valid).sum(dim=1) / valid.sum(dim=1)
        for r, row in enumerate(rows):
            nll[row] = float(per_document[r])

    def _long_document(self, ids: list[int]) -> float:
        """The perplexity guide's loop: windows of CONTEXT tokens every STRIDE, each scoring its new tokens."""
        torch = self.torch
        all_ids = torch.tensor([ids])
        nll_sum, n_tokens, previous_end = 0.0, 0, 0
        for begin in range(0, len(ids), STRIDE):
            end = min(begin + CONTEXT, len(ids))
            target_length = end - previous_end
            window = all_ids[:, begin:end]
            targets = window.clone()
            targets[:, :-target_length] = -100
            with torch.no_grad():
                loss = self.model(window, labels=targets).loss
            counted = (targets != -100).sum().item() - 1
            nll_sum += loss.item() * counted
            n_tokens += counted
            previous_end = end
            if end == len(ids):
                break
        return nll_sum / n_tokens


# ---- the runs ----------------------------------------------------------------------------------------------


def in_process(model_dir: Path, corpus: Path, dtype: str, batch_size: int, threads: int, work: Path) -> dict:
    import pyarrow.parquet as pq

    from tinygpt.corpus import score_files
    from tinygpt.model import Model

    tinygpt.set_num_threads(threads)
    out = work / f"in-process-{dtype}"
    start = time.perf_counter()
    model = Model.from_pretrained(model_dir, dtype=dtype)
    score_files(model, corpus, out, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return columns(pq.read_table(out).to_pydict(), seconds)


def on_ray(scorer, options: dict, corpus: Path, batch_size: int, actors: int, cpus: int) -> dict:
    import pyarrow.parquet as pq
    import ray.data

    start = time.perf_counter()
    # Read by the driver and handed over a batch per block, so that the actors share the batches: Ray Data's
    # read tasks each reserve a CPU, which actors holding every CPU would never leave them (tinygpt.ray's
    # score_files reads with num_cpus=0 instead; here the read is not what is timed).
    table = pq.read_table(corpus)
    blocks = [table.slice(first, batch_size) for first in range(0, table.num_rows, batch_size)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        scorer, fn_constructor_kwargs=options, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus)
    rows = dataset.to_pandas()
    seconds = time.perf_counter() - start
    return columns({name: rows[name].tolist() for name in ("id", "tokens", "perplexity")}, seconds)


def columns(table: dict, seconds: float) -> dict:
    order = np.argsort(np.asarray(table["id"]))
    return {"id": np.asarray(table["id"])[order], "tokens": np.asarray(table["tokens"])[order],
            "perplexity": np.asarray(table["perplexity"], dtype=np.float64)[order], "seconds": seconds}


def engine_names(args) -> list[str]:
    names = [f"tinygpt-{d}" for d in ("float32", "int8")]
    for actors, cpus in POOLS:
        names += [f"tinygpt-{d}-ray-{actors}x{cpus}" for d in ("float32", "int8")]
        names.append(f"transformers-ray-{actors}x{cpus}")
    return [name for name in names if not args.engines or name in args.engines]


def run(name: str, model_dir: Path, corpus: Path, args, work: Path) -> dict:
    if "-ray-" not in name:
        return in_process(model_dir, corpus, name.split("-")[1], args.batch_size, args.threads, work)
    actors, cpus = map(int, name.rsplit("-", 1)[1].split("x"))
    if name.startswith("transformers"):
        return on_ray(TransformersScorer, {"model_dir": str(model_dir), "threads": cpus}, corpus, args.batch_size,
                      actors, cpus)
    from tinygpt.ray import Scorer

    return on_ray(Scorer, {"model": str(model_dir), "dtype": name.split("-")[1]}, corpus, args.batch_size,
                  actors, cpus)


def report(results: dict[str, dict], args) -> None:
    print("\n".join(cpu_lines(args.threads)))
    some = next(iter(results.values()))
    tokens = int(some["tokens"].sum())
    print(f"{len(some['id'])} documents, {tokens:,} tokens (tinygpt's count); batches of {args.batch_size} rows; "
          f"best of {args.rounds} round(s)\n")
    print("| engine | documents/s | tokens/s | vs transformers on the same pool | target |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        rate = tokens / result["seconds"]
        pool = name.rsplit("-", 1)[1] if "-ray-" in name else None
        baseline = results.get(f"transformers-ray-{pool}")
        ratio, target = "", ""
        if baseline is not None and not name.startswith("transformers"):
            value = baseline["seconds"] / result["seconds"]
            wanted = TARGETS[name.split("-")[1]]
            ratio, target = f"{value:.2f}x", f">= {wanted}x {'met' if value >= wanted else 'NOT met'}"
        print(f"| {name} | {len(result['id']) / result['seconds']:.2f} | {rate:.0f} | {ratio} | {target} |")
    print()
    for name, result in results.items():
        if name.startswith("transformers"):
            reference = results.get("tinygpt-float32") or results.get(name.replace("transformers", "tinygpt-float32"))
            if reference is not None:
                assert (reference["id"] == result["id"]).all()
                same_tokens = int((reference["tokens"] == result["tokens"]).sum())
                relative = np.abs(reference["perplexity"] / result["perplexity"] - 1)
                print(f"{name} vs tinygpt float32: token counts equal for {same_tokens}/{len(relative)} documents; "
                      f"perplexity max relative difference {relative.max():.2e} (target <= 1e-4: "
                      f"{'met' if relative.max() <= 1e-4 else 'NOT met'})")
        elif "-ray-" in name:
            local = results.get(name.split("-ray-")[0])
            if local is not None:
                same = int((local["perplexity"] == result["perplexity"]).sum())
                print(f"{name}: {same}/{len(result['id'])} documents with the in-process perplexity bit for bit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=CORPUS_DOCUMENTS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--engines", nargs="+", help="a subset of the engines (default: all)")
    args = parser.parse_args()
    model_dir = serve_benchmark.build_model()
    corpus = build_corpus(model_dir)
    names = engine_names(args)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subset = corpus_subset(corpus, args.documents, work / "corpus") if args.documents < CORPUS_DOCUMENTS else corpus
        if any("-ray-" in name for name in names):
            import ray

            ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
        results: dict[str, dict] = {}
        for round_ in range(args.rounds):
            for name in names:  # the engines take turns within each round
                print(f"round {round_ + 1}: {name} ...", file=sys.stderr, flush=True)
                result = run(name, model_dir, subset, args, work / f"{name}-{round_}")
                if name not in results or result["seconds"] < results[name]["seconds"]:
                    results[name] = result
    report(results, args)


if __name__ == "__main__":
    main()
