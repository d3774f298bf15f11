"""tinygpt.ray on real Ray, all on this machine: a local instance of 2 CPUs, then a cluster of two 1-CPU nodes
(ray.cluster_utils.Cluster) on which an actor dies mid-job. Every result is compared bit for bit with
tinygpt.corpus.score_batch run in this process on the whole input at once.

Ray starts slowly (seconds per instance, more per actor), so each instance is shared by the tests of one class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.cloudpickle
    import ray.data

    from tinygpt.ray import RayScoringError, Scorer, blas_threads, output_table, reserved_cpus, score_files
except ImportError:
    HAVE_RAY, Scorer = False, object  # the classes below still need a base; their tests are skipped
else:
    HAVE_RAY = True
    # The Scorer subclasses below live in this test module, which Ray's workers cannot import: ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray Data is not installed (pip install "tinygpt[ray]")')

from tinygpt.corpus import score_batch
from tinygpt.errors import InputError
from tinygpt.model import Model

SENTENCE = "The tower is 324 metres tall, about the same height as an 81-storey building. "


def corpus_rows() -> list[dict]:
    """Documents of many lengths (one longer than the small model's 256-position context, so scored in
    windows) and rows that cannot be scored: an empty text, a null one, a missing one, a one-token one."""
    rows = [{"id": i, "text": SENTENCE * (1 + i % 5) + f"Row {i}."} for i in range(36)]
    rows[3]["text"] = ""
    rows[8]["text"] = None
    del rows[13]["text"]
    rows[21]["text"] = "Hi"
    rows[30]["text"] = SENTENCE * 22  # ~400 tokens
    return rows


def write_jsonl(folder: Path, rows: list[dict], files: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(files):
        with open(folder / f"part-{part}.jsonl", "w", encoding="utf-8") as file:
            for row in rows[part::files]:
                file.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return corpus_rows()


@pytest.fixture(scope="module")
def jsonl_folder(tmp_path_factory, rows) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ray_input"), rows)


@pytest.fixture(scope="module")
def in_process(small_gpt2_dir, rows):
    """score_batch on the whole input, in this process: expected(...) -> {id: output row}. text_column names
    the text in the error messages."""
    model = Model.from_pretrained(small_gpt2_dir)
    cache = {}

    def expected(embed: bool = False, stride: int | None = None, text_column: str = "text") -> dict:
        key = embed, stride, text_column
        if key not in cache:
            columns = score_batch(model, {"id": [row["id"] for row in rows],
                                          text_column: [row.get("text") for row in rows]},
                                  text_column=text_column, embed=embed, stride=stride)
            cache[key] = {int(i): {name: columns[name][at] for name in columns} for at, i in enumerate(columns["id"])}
        return cache[key]

    return expected


def assert_identical(got: list[dict], expected: dict) -> None:
    """Every id exactly once, and each row's values the same bits as in-process scoring."""
    ids = [int(row["id"]) for row in got]
    assert sorted(ids) == sorted(expected), "rows lost or duplicated"
    assert len(set(ids)) == len(ids), "rows duplicated"
    for row in got:
        want = expected[int(row["id"])]
        assert int(row["tokens"]) == int(want["tokens"]), row["id"]
        assert row["error"] == want["error"], row["id"]
        for name in ("nll", "perplexity"):
            if want["error"] is None:
                assert float(row[name]) == float(want[name]), (row["id"], name)  # exactly: the same bits
            else:
                assert row[name] is None or np.isnan(row[name]), (row["id"], name)
        if "embedding" in want:
            if want["embedding"] is None:
                assert row["embedding"] is None
            else:
                assert np.array_equal(np.asarray(row["embedding"], np.float32), want["embedding"]), row["id"]


def read_output(folder: Path) -> list[dict]:
    files = sorted(folder.iterdir())
    assert files, f"nothing written to {folder}"
    if files[0].suffix == ".parquet":
        return pq.read_table(folder).to_pylist()
    return [json.loads(line) for file in files for line in file.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------ no cluster
def test_import_without_ray_says_what_to_install():
    code = "import sys; sys.modules['ray'] = None; import tinygpt.ray"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert 'pip install "tinygpt[ray]"' in done.stderr.splitlines()[-1]
    assert done.stderr.splitlines()[-1].startswith("ImportError: tinygpt.ray needs Ray Data")


@needs_ray
def test_scorer_outside_ray_scores_like_score_batch(small_gpt2_dir, in_process, rows):
    """Called in a plain process, a Scorer leaves the thread settings alone and returns score_batch's rows."""
    from tinygpt.kernels.threads import get_num_threads

    before = get_num_threads()
    scorer = Scorer(str(small_gpt2_dir), embed=True)
    assert scorer.threads is None and get_num_threads() == before
    batch = {"id": np.array([row["id"] for row in rows]), "text": np.array([row.get("text") for row in rows], object)}
    table = scorer(batch)
    assert table.schema.field("error").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert_identical(table.to_pylist(), in_process(embed=True))


@needs_ray
def test_output_table_types_do_not_depend_on_the_rows():
    """A block whose rows all failed, or all succeeded, has the same schema as any other."""
    failed = output_table({"id": np.array([1, 2]), "tokens": np.zeros(2, np.int64), "nll": np.full(2, np.nan),
                           "perplexity": np.full(2, np.nan), "embedding": np.full(2, None, object),
                           "error": np.array(["no text", "no text"], object)})
    scored = output_table({"id": np.array([3]), "tokens": np.array([5]), "nll": np.array([1.5]),
                           "perplexity": np.array([4.5]), "embedding": np.array([np.ones(4, np.float32)] + [None],
                                                                                 object)[:1],
                           "error": np.full(1, None, object)})
    assert failed.schema == scored.schema
    mixed = output_table({"id": np.array([7, "seven", None], object), "tokens": np.zeros(3, np.int64),
                          "nll": np.zeros(3), "perplexity": np.ones(3), "error": np.full(3, None, object)})
    assert mixed.column("id").to_pylist() == ["7", "seven", None]


@needs_ray
def test_score_files_refuses_bad_paths_before_starting_ray(tmp_path, jsonl_folder):
    with pytest.raises(InputError, match="no-such-corpus: no such file or folder"):
        score_files(input_path=tmp_path / "no-such-corpus", output_path=tmp_path / "out")
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(InputError, match="no .jsonl, .json or .parquet files"):
        score_files(input_path=tmp_path, output_path=tmp_path / "out")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="already holds files"):
        score_files(input_path=jsonl_folder, output_path=taken)
    with pytest.raises(InputError, match="does not match"):
        score_files(input_path=jsonl_folder, output_path=tmp_path / "x.parquet", output_format="jsonl")
    assert not ray.is_initialized()


# ------------------------------------------------------------------------------------------------ one node
class ThreadReport(Scorer):
    """A Scorer that checks, inside its actor, that its kernels and BLAS run on the CPUs Ray reserved, and
    adds what it saw to each row."""

    def __call__(self, batch):
        from tinygpt.kernels.threads import get_num_threads

        reserved = reserved_cpus()
        assert get_num_threads() == reserved == self.threads, (get_num_threads(), reserved)
        assert set(blas_threads().values()) <= {int(reserved)}, blas_threads()
        table = super().__call__(batch)
        for name, value in (("threads", get_num_threads()), ("reserved", reserved),
                            ("blas", min(blas_threads().values(), default=-1)), ("pid", os.getpid())):
            table = table.append_column(name, pa.array([value] * table.num_rows))
        return table


@pytest.fixture(scope="class")
def local_ray():
    """A Ray instance of 2 CPUs on this machine, this process connected to it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@needs_ray
@pytest.mark.usefixtures("local_ray")
class TestOneNode:
    @pytest.mark.parametrize("actors, cpus", [(2, 1), (1, 2)])
    def test_scorer_in_a_pipeline(self, small_gpt2_dir, jsonl_folder, in_process, actors, cpus):
        """The pipeline the README shows: actors of ``cpus`` CPUs run that many kernel threads (checked in the
        actor), and the rows equal in-process scoring."""
        dataset = ray.data.read_json(str(jsonl_folder), num_cpus=0).map_batches(
            ThreadReport, fn_constructor_kwargs={"model": str(small_gpt2_dir), "embed": True},
            batch_size=5, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus)
        got = dataset.take_all()
        assert {row["threads"] for row in got} == {cpus}
        assert {row["reserved"] for row in got} == {cpus}
        assert {row["blas"] for row in got} == {cpus}
        assert len({row["pid"] for row in got}) == actors
        assert_identical(got, in_process(embed=True))

    def test_score_files_jsonl_writes_what_corpus_writes(self, small_gpt2_dir, jsonl_folder, tmp_path, capsys):
        """JSON Lines in and out: the same lines as tinygpt.corpus.score_files writes in-process."""
        from tinygpt.corpus import score_files as score_in_process

        summary = score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "ray",
                              embed=True, stride=100, batch_size=4)
        ours = sorted(line for file in (tmp_path / "ray").iterdir() for line in file.read_text().splitlines())
        model = Model.from_pretrained(small_gpt2_dir)
        score_in_process(model, jsonl_folder, tmp_path / "local", embed=True, stride=100, progress=False)
        theirs = sorted(line for file in (tmp_path / "local").iterdir() for line in file.read_text().splitlines())
        assert ours == theirs
        assert (summary.documents, summary.errors, summary.actors, summary.cpus_per_actor) == (36, 4, 2, 1)
        assert summary.tokens == sum(json.loads(line)["tokens"] for line in theirs if '"error": null' in line)
        assert f"wrote {tmp_path / 'ray'}" in capsys.readouterr().err
        assert ray.is_initialized()  # a connection it found is left open

    def test_score_files_parquet_keeps_the_id_type(self, small_gpt2_dir, rows, in_process, tmp_path):
        source = tmp_path / "corpus.parquet"
        pq.write_table(pa.table({"doc": [f"d{row['id']:03d}" for row in rows],
                                 "body": [row.get("text") for row in rows]}), source)
        score_files(model=str(small_gpt2_dir), input_path=source, output_path=tmp_path / "scores",
                    text_column="body", id_column="doc", actors=1, cpus_per_actor=2, progress=False)
        table = pq.read_table(tmp_path / "scores")
        assert table.schema.field("id").type == pa.string()
        assert table.column_names == ["id", "tokens", "nll", "perplexity", "error"]
        got = [dict(row, id=int(row["id"][1:])) for row in table.to_pylist()]
        assert_identical(got, in_process(text_column="body"))

    def test_score_files_says_what_an_actor_raised(self, small_gpt2_dir, jsonl_folder, tmp_path):
        with pytest.raises(RayScoringError, match=r"a scoring actor failed: InputError: stride must be an integer "
                                                  r"between 1 and max_length \(256\), got 1000"):
            score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "out",
                        stride=1000, progress=False)
        with pytest.raises(RayScoringError, match=r"could not start: MissingFileError: .*no-model"):
            score_files(model=str(tmp_path / "no-model"), input_path=jsonl_folder, output_path=tmp_path / "out",
                        progress=False)

    def test_score_files_checks_the_pool_and_the_id_column(self, small_gpt2_dir, jsonl_folder, tmp_path):
        with pytest.raises(RayScoringError, match=r"3 actors of 1 CPUs do not fit .*room for 2"):
            score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "o", actors=3)
        with pytest.raises(RayScoringError, match="no node of the cluster has 4 CPUs"):
            score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "o",
                        cpus_per_actor=4)
        with pytest.raises(InputError, match="has no column 'key'"):
            score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "o",
                        id_column="key", progress=False)


# ------------------------------------------------------------------------------------------------ two nodes
class DiesOnce(Scorer):
    """A Scorer whose actor kills its own process at its second batch, once in the whole job (the marker file
    says it happened), and that adds its node to each row."""

    def __init__(self, *, marker: str, **options):
        super().__init__(**options)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # as a crash would: no clean-up, no exception for Ray to report
        table = super().__call__(batch)
        node = ray.get_runtime_context().get_node_id()
        return table.append_column("node", pa.array([node] * table.num_rows))


@pytest.fixture(scope="class")
def cluster():
    """Two Ray nodes of 1 CPU each, on this machine; this process not connected."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@needs_ray
class TestTwoNodes:
    def test_an_actor_that_dies_is_restarted_and_its_batch_retried(self, cluster, small_gpt2_dir, jsonl_folder,
                                                                   in_process, tmp_path):
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            marker = tmp_path / "died"
            dataset = ray.data.read_json(str(jsonl_folder), num_cpus=0).map_batches(
                DiesOnce, fn_constructor_kwargs={"model": str(small_gpt2_dir), "embed": True, "marker": str(marker)},
                batch_size=4, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
            got = dataset.take_all()
        finally:
            ray.shutdown()
        assert marker.exists(), "no actor died"
        assert len({row["node"] for row in got}) == 2, "the actors did not run on both nodes"
        assert_identical(got, in_process(embed=True))

    def test_score_files_joins_a_cluster_by_its_address(self, cluster, small_gpt2_dir, jsonl_folder, in_process,
                                                        tmp_path):
        assert not ray.is_initialized()
        summary = score_files(model=str(small_gpt2_dir), input_path=jsonl_folder, output_path=tmp_path / "out.parquet",
                              address=cluster.address, batch_size=3, progress=False)
        assert not ray.is_initialized()  # it connected, so it disconnected
        assert (summary.actors, summary.cpus_per_actor, summary.documents) == (2, 1, 36)
        assert_identical(read_output(tmp_path / "out.parquet"), in_process())
