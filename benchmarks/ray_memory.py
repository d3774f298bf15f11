"""What does a second Ray actor scoring with tinygpt cost in memory, with float32 and with int8 weights?

    python benchmarks/ray_memory.py [--documents N]

On a model of distilgpt2's exact shape (engine.py's random-init one, with GPT-2's tokenizer files beside it),
for float32 and then int8 weights: starts a local Ray instance, one actor holding a tinygpt.ray.Scorer (which
loads the model and runs on 1 kernel thread, its 1 reserved CPU), has it score N documents, and reads the PSS of
the actor's process from /proc/PID/smaps_rollup; then a second actor does the same, and it reads both.

PSS (proportional set size) counts each page a process maps divided by the number of processes mapping it,
so the sum over the actors counts a shared page once: the sum is what the actors cost the machine together,
and the rise from one actor to two is what the second one added. float32 weights are memory-mapped from the
safetensors file (copy-on-write, never written), so actors on one node share them through the page cache;
int8 weights are mapped the same way from tinygpt's int8 cache file (written by the first int8
load on the machine), and shared alike. RSS counts shared pages in every process
that maps them; the table shows it too, for comparison. The file-backed part of PSS (Pss_File: mapped files,
the weights among them) and the rest (Pss_Anon: the heap, Python, Numba, activations) are listed apart.
The rest of Ray (raylet, GCS, idle workers) is the same whatever tinygpt does and is not counted; the shared
libraries its Python workers map too (libpython, NumPy's, pyarrow's) are split with them, as PSS does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engine  # noqa: E402  (benchmarks/engine.py: the distilgpt2-shaped model)
import peers  # noqa: E402  (benchmarks/peers.py: GPT-2's tokenizer files beside it)

TEXT = ("The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest "
        "structure in Paris. Its base is square, measuring 125 metres on each side. ")
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File")


def smaps_rollup(pid: int) -> dict[str, float]:
    """The memory totals of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0]) / 1024  # kB
    return values


def documents(count: int) -> list[str]:
    """Texts of ~40 to ~330 tokens."""
    return [TEXT * (1 + i % 8) + f"Document {i}." for i in range(count)]


def measure(model_dir: Path, dtype: str, texts: list[str]) -> list[dict[str, float]]:
    """[totals with 1 actor, totals with 2 actors], each summed over the actors' processes."""
    import numpy as np
    import ray

    from tinygpt.ray import Scorer

    @ray.remote(num_cpus=1)
    class Replica:
        """An actor holding one Scorer, as Ray Data's map_batches builds one per actor."""

        def __init__(self):
            self.scorer = Scorer(str(model_dir), dtype=dtype)

        def score(self, batch: list[str]) -> int:
            table = self.scorer({"id": np.arange(len(batch)), "text": np.array(batch, object)})
            assert table.column("error").null_count == len(batch), "a document was not scored"
            return table.num_rows

        def pid(self) -> int:
            return os.getpid()

    replicas, totals = [], []
    for _ in range(2):
        replica = Replica.remote()
        assert ray.get(replica.score.remote(texts)) == len(texts)
        replicas.append(replica)
        time.sleep(1.0)  # let the allocator settle after the last batch
        pids = ray.get([r.pid.remote() for r in replicas])
        per_actor = [smaps_rollup(pid) for pid in pids]
        totals.append({name: sum(values[name] for values in per_actor) for name in FIELDS})
    for replica in replicas:
        ray.kill(replica)
    return totals


def machine_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    import numpy
    import ray

    return (f"{cpu}, {os.cpu_count()} cores; Linux {platform.release()}; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, ray {ray.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=8, help="documents each actor scores (default 8)")
    args = parser.parse_args()

    model_dir = peers.with_gpt2_tokenizer(engine.build_model())
    texts = documents(args.documents)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = {dtype: measure(model_dir, dtype, texts) for dtype in ("float32", "int8")}
    finally:
        ray.shutdown()

    print(machine_line())
    print(f"distilgpt2's shape ({(model_dir / 'model.safetensors').stat().st_size / 2**20:.0f} MiB of float32 "
          f"weights), each actor 1 CPU = 1 kernel thread, {args.documents} documents scored per actor. MiB:")
    print()
    print("| weights | actors | PSS, sum | of it file-backed (Pss_File) | of it the rest (Pss_Anon) | RSS, sum |")
    print("|---|---|---|---|---|---|")
    for dtype, totals in results.items():
        for actors, total in enumerate(totals, start=1):
            print(f"| {dtype} | {actors} | {total['Pss']:.0f} | {total['Pss_File']:.0f} | {total['Pss_Anon']:.0f} "
                  f"| {total['Rss']:.0f} |")
    print()
    for dtype, (one, two) in results.items():
        print(f"{dtype}: the second actor adds {two['Pss'] - one['Pss']:.0f} MiB of PSS "
              f"(the first costs {one['Pss']:.0f} MiB)")


if __name__ == "__main__":
    main()
