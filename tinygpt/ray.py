"""Scoring a corpus on a Ray cluster: :class:`Scorer` for Ray Data's ``map_batches``, and :func:`score_files`,
what ``tinygpt score INPUT OUTPUT --ray [ADDRESS]`` runs.

In a pipeline of your own::

    import ray
    from tinygpt.ray import Scorer

    (ray.data.read_parquet("s3://bucket/corpus/")
        .map_batches(Scorer, fn_constructor_kwargs={"model": "distilgpt2", "dtype": "int8"},
                     batch_size=256, batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
        .write_parquet("s3://bucket/scores/"))

Each actor loads the model once and runs its kernels on as many threads as the CPUs it reserved (``num_cpus``),
never more, so actors sharing a node do not fight over its cores. A batch's rows come out as
:func:`tinygpt.corpus.score_batch` gives them (id, tokens, nll, perplexity, [embedding], error: a row that
cannot be scored keeps its place with its error), with the same bits as in-process scoring: a document's numbers
do not depend on the batch or the actor it landed in.

Needs the ``ray`` extra: ``pip install "tinygpt[ray]"``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import ray
    import ray.data
    from ray.data.datasource import BlockBasedFileDatasink
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError as _error:  # raised from here, so the message is the first thing a user reads
    raise ImportError(f'tinygpt.ray needs Ray Data, pyarrow and threadpoolctl, which cannot be imported here ({_error}): '
                      f'pip install "tinygpt[ray]"') from _error

from . import checks
from .errors import InputError, TinyGPTError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # as tinygpt.corpus reads them
# Arrow types of the output columns (the id keeps the input's type): what tinygpt.corpus writes to Parquet.
COLUMN_TYPES = {"tokens": pa.int64(), "nll": pa.float64(), "perplexity": pa.float64(),
                "embedding": pa.list_(pa.float32()), "error": pa.string()}
LOCAL = ("local", "none")  # addresses that mean "start a Ray instance on this machine"


class RayScoringError(TinyGPTError, RuntimeError):
    """Scoring on Ray could not be done: no cluster at the address, a pool the cluster cannot hold, or an actor
    that failed (its own error, a model that cannot be loaded say, is in the message)."""


# ------------------------------------------------------------------------------------------------ the actor
class Scorer:
    """A callable class for ``Dataset.map_batches``: each Ray actor builds one, which loads the model once and
    then scores every batch it is given.

    model: a hub repo id or a local model directory (each node must reach it: the same path, or the hub);
    dtype "float32" or "int8"; revision: a hub branch, tag or commit. text_column: the text to score;
    id_column: copied to the output's ``id`` (keep one: Ray writes rows in no fixed order). embed: add the
    ``embedding`` column; stride: window starts for documents longer than the context (default: half of it).

    A batch may come as NumPy columns (``batch_format="numpy"``), lists, a pandas DataFrame or a pyarrow Table.
    The result is a pyarrow Table of the output columns with fixed types (tokens int64, nll and perplexity
    float64, embedding list<float32>, error string; id as the input's column), so every block of the output
    has one schema, even a block whose rows all succeeded (no error strings) or all failed (no embeddings).

    Threads: in a Ray actor (or task) the kernels use as many threads as the CPUs it reserved: ``num_cpus``
    of map_batches; at least one (a reservation below 1 CPU, or none, gives one thread), at most the cores
    the process may use. NumPy's BLAS is held to the same count. Outside Ray the thread settings are left as
    they are.
    """

    def __init__(self, model, dtype: str = "float32", revision: str | None = None, text_column: str = "text",
                 id_column: str = "id", embed: bool = False, stride: int | None = None):
        if not isinstance(model, (str, os.PathLike)):
            raise InputError(f"model must be a hub repo id or a model directory (str or path), got "
                             f"{type(model).__name__}: each actor loads its own copy")
        _check_columns(text_column, id_column)
        self.text_column, self.id_column = text_column, id_column
        self.embed = checks.flag(embed, "embed")
        self.stride = None if stride is None else checks.count(stride, "stride", minimum=1)
        self.threads = use_reserved_cpus()  # before the load: an int8 load already runs kernels
        from .corpus import score_batch
        from .model import Model

        self._score_batch = score_batch
        self.model = Model.from_pretrained(model, revision=revision, dtype=dtype)
        if self.model.tokenizer is None:
            raise InputError(f"the model {model} has no tokenizer files (vocab.json + merges.txt, or vocab.txt) "
                             "to turn text into tokens")

    def __call__(self, batch) -> pa.Table:
        ids, columns = None, batch
        if isinstance(batch, pa.Table):
            if self.id_column in batch.column_names:  # kept as it is: the input's type, bit for bit
                ids = batch.column(self.id_column).combine_chunks()
            columns = {name: batch.column(name).to_pylist()
                       for name in (self.text_column, self.id_column) if name in batch.column_names}
            if not columns:  # neither column: score_batch needs a column to count the rows it says so for
                columns = {"": [None] * batch.num_rows}
        elif type(batch).__module__.startswith("pandas"):
            columns = {name: batch[name].to_numpy() for name in batch.columns}
        scored = self._score_batch(self.model, columns, text_column=self.text_column, id_column=self.id_column,
                                   embed=self.embed, stride=self.stride)
        return output_table(scored, ids)


def output_table(columns: dict, ids: pa.Array | None = None) -> pa.Table:
    """score_batch's NumPy columns as a pyarrow Table with fixed column types; ``ids`` replaces the id column
    (the input's own Arrow column)."""
    arrays = {}
    for name, values in columns.items():
        if name == "id":
            arrays[name] = ids if ids is not None else _id_array(values)
        elif name in COLUMN_TYPES:
            values = list(values) if values.dtype == object else values
            arrays[name] = pa.array(values, type=COLUMN_TYPES[name], from_pandas=False)
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _id_array(values) -> pa.Array:
    """Ids given as NumPy or a list: Arrow's type for them; strings (numbers as their JSON text) if they mix
    strings and other values, as tinygpt.corpus writes such ids."""
    values = [value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
              for value in values]
    if not any(isinstance(value, str) for value in values):
        try:
            return pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
    from .corpus import _json_value

    return pa.array([value if value is None or isinstance(value, str) else _json_value(value) for value in values],
                    type=pa.string())


def _check_columns(text_column, id_column) -> None:
    for name, value in (("text_column", text_column), ("id_column", id_column)):
        if not isinstance(value, str) or not value:
            raise InputError(f"{name} must be a column name (a non-empty str), got {value!r}")
    if text_column == id_column:
        raise InputError(f"text_column and id_column are both {text_column!r}: the id must be another column")


# ------------------------------------------------------------------------------------------------ threads
def reserved_cpus() -> float | None:
    """The CPUs Ray reserved for the calling actor or task (0.0 if none), or None outside a Ray worker."""
    if not ray.is_initialized():
        return None
    try:
        resources = ray.get_runtime_context().get_assigned_resources()
    except AssertionError:  # the driver: Ray says only a worker has assigned resources
        return None
    return float(resources.get("CPU", 0.0))


def use_reserved_cpus() -> int | None:
    """In a Ray worker, run tinygpt's kernels and NumPy's BLAS on as many threads as the CPUs Ray reserved for
    it (at least 1; at most the cores this process may use). Returns that count, or None outside Ray."""
    cpus = reserved_cpus()
    if cpus is None:
        return None
    from .kernels.threads import max_threads, set_num_threads

    threads = max(1, math.floor(cpus + 1e-9))
    if threads > max_threads():
        warnings.warn(f"tinygpt: this actor reserved {cpus:g} CPUs, but its node lets it run on {max_threads()} "
                      f"cores: using {max_threads()} threads", RuntimeWarning, stacklevel=2)
        threads = max_threads()
    set_num_threads(threads)
    limit_blas_threads(threads)
    return threads


def limit_blas_threads(threads: int) -> dict[str, int]:
    """Hold the BLAS libraries to ``threads`` threads: those loaded in this process now, through threadpoolctl
    (they read the environment only once, when loaded, and NumPy is loaded before any actor code runs), and
    through OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS any loaded later or started by a child
    process. Returns {library file: its thread count now}."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    threadpool_limits(limits=threads, user_api="blas")
    return blas_threads()


def blas_threads() -> dict[str, int]:
    """{library file: thread count} of each BLAS library loaded in this process."""
    return {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


# ------------------------------------------------------------------------------------------------ files
@dataclass
class Summary:
    """What :func:`score_files` did: rows written (documents), their tokens (of the scored rows), the rows with
    an error, output files, and the pool that scored them."""

    documents: int = 0
    tokens: int = 0
    errors: int = 0
    files: int = 0
    actors: int = 0
    cpus_per_actor: int = 0
    seconds: float = 0.0
    output: str = ""

    def __str__(self) -> str:
        from .generation import plural

        scored = self.documents - self.errors
        errors = f", {self.errors} with an error (see their error column)" if self.errors else ""
        rate = f", {self.tokens / self.seconds:,.0f} tokens/s" if self.seconds > 0 and self.tokens else ""
        return (f"wrote {self.output} ({plural(self.files, 'file')}): {plural(self.documents, 'row')}, {scored} "
                f"scored ({plural(self.tokens, 'token')}){errors}; {self.seconds:.1f} s on "
                f"{plural(self.actors, 'actor')} x {plural(self.cpus_per_actor, 'CPU')}{rate}")


def score_files(*, model: str = "distilgpt2", dtype: str = "float32", revision: str | None = None, input_path,
                output_path, text_column: str = "text", id_column: str = "id", embed: bool = False,
                stride: int | None = None, batch_size: int | None = None, address: str | None = None,
                actors: int | None = None, cpus_per_actor: int | None = None, output_format: str | None = None,
                progress: bool = True) -> Summary:
    """Score every row of ``input_path`` into the folder ``output_path`` on a Ray cluster, with Ray Data:
    read, ``map_batches(Scorer)`` over a pool of actors, write.

    input_path: a JSON Lines (.jsonl, .json) or Parquet (.parquet) file, or a folder of them (one format), local
    or a URI Ray reads (s3://...). output_path: a new (or empty) folder; Ray writes it as part files in
    ``output_format`` ("jsonl" or "parquet"; default: the extension of output_path if it has one of the above,
    else the input's format). Rows come out in no fixed order, each with its id, so the input needs an id
    column. Every node reads the input and writes the output: on a cluster of several machines, give paths
    they all reach (shared storage, s3://).

    address: None or "local" starts a Ray instance on this machine with all its CPUs; "auto" joins the cluster
    running here; "HOST:6379" or "ray://HOST:10001" joins that cluster. A process already connected to Ray
    keeps its connection (address is then not used). Ray is shut down (or disconnected) at the end.
    cpus_per_actor (default 1): the CPUs, so kernel threads, of each actor; actors (default: as many as the
    cluster's nodes hold, filling its CPUs). batch_size: rows per batch (default 256, as tinygpt.corpus);
    a batch is what an actor scores at once and what Ray retries if the actor dies.

    Prints a summary line on stderr (and Ray Data its progress) when ``progress``; returns the :class:`Summary`.
    """
    from .corpus import DEFAULT_BATCH_SIZE
    from .generation import plural
    from .weights import WEIGHT_DTYPES

    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model must be a hub repo id or a model directory, got {type(model).__name__}")
    model = os.path.abspath(model) if os.path.isdir(model) else str(model)  # actors do not share our cwd
    if dtype not in WEIGHT_DTYPES:
        raise InputError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    _check_columns(text_column, id_column)
    embed = checks.flag(embed, "embed")
    if stride is not None:
        stride = checks.count(stride, "stride", minimum=1)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else checks.count(batch_size, "batch_size", minimum=1)
    cpus_per_actor = 1 if cpus_per_actor is None else checks.count(cpus_per_actor, "cpus_per_actor", minimum=1)
    if actors is not None:
        actors = checks.count(actors, "actors", minimum=1)
    source, source_format = _locate_input(input_path)
    target, target_format = _locate_output(output_path, output_format, source_format)

    stream = sys.stderr if progress else None
    connected = _connect(address)
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    try:
        context.enable_progress_bars = bool(progress) and bars
        nodes = _node_cpus()
        actors = _pool_size(nodes, actors, cpus_per_actor)
        if stream is not None:
            print(f"scoring {source} on {_nodes_text(nodes)}: {plural(actors, 'actor')} x "
                  f"{plural(cpus_per_actor, 'CPU')}", file=stream, flush=True)
        # Reading and writing reserve no CPU: with every CPU held by an actor (the default) they could never
        # start, and next to scoring they cost little. One at a time per node is plenty for them.
        io = dict(num_cpus=0, concurrency=len(nodes))
        if source_format == "parquet":
            dataset = _read_parquet(source, io)
        else:
            dataset = ray.data.read_json(source, file_extensions=["jsonl", "json"], **io)
        _check_id_column(dataset, source, id_column)
        scored = dataset.map_batches(
            Scorer, fn_constructor_kwargs=dict(model=model, dtype=dtype, revision=revision, text_column=text_column,
                                               id_column=id_column, embed=embed, stride=stride),
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor)
        started = time.perf_counter()
        try:
            if target_format == "parquet":
                scored.write_parquet(target, ray_remote_args={"num_cpus": 0}, concurrency=len(nodes))
            else:
                scored.write_datasink(JsonLinesDatasink(target, embed=embed), ray_remote_args={"num_cpus": 0},
                                      concurrency=len(nodes))
        except ray.exceptions.RayError as error:
            raise _scoring_error(error) from None
        seconds = time.perf_counter() - started
        context.enable_progress_bars = False  # counting what was written is quick: no bars for it
        summary = _summarize(target, target_format)
        summary.seconds, summary.actors, summary.cpus_per_actor = seconds, actors, cpus_per_actor
    finally:
        context.enable_progress_bars = bars
        if connected:
            ray.shutdown()
    if stream is not None:
        print(summary, file=stream, flush=True)
    return summary


def _nodes_text(nodes: list[float]) -> str:
    from .generation import plural

    return f"{plural(len(nodes), 'node')} with {sum(nodes):g} CPUs"


def _locate_input(path) -> tuple[str, str]:
    """(the input as Ray should read it: local paths made absolute, its format); an InputError naming the path
    if there is nothing there or no file of a known format."""
    text = os.fspath(path)
    location, (filesystem, inner) = _location(text)
    try:
        info = filesystem.get_file_info(inner)
        entries = (filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
                   if info.type == pafs.FileType.Directory else [])
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InputError(f"{text}: cannot read the input ({error})") from None
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{text}: no such file or folder")
    if info.type == pafs.FileType.File:
        return location, _format_of(text, "input")
    found = set()
    for entry in entries:  # as Ray reads a folder: every file below it, but those whose names start . or _
        name = entry.base_name
        suffix = os.path.splitext(name)[1].lower()
        if entry.type == pafs.FileType.File and suffix in FORMATS and not name.startswith((".", "_")):
            found.add(FORMATS[suffix])
    if not found:
        raise InputError(f"{text}: the folder has no .jsonl, .json or .parquet files to score")
    if len(found) > 1:
        raise InputError(f"{text}: the folder holds both JSON Lines and Parquet files; on Ray, score one format "
                         "at a time (a folder each)")
    return location, found.pop()


def _location(text: str):
    """(the path as Ray's workers should get it: a URI as given, a local path made absolute, since they do not
    share our working directory; (its pyarrow filesystem, the path within it))."""
    if "://" in text:
        try:
            return text, pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise InputError(f"{text}: cannot reach it ({error})") from None
    location = os.path.abspath(text)
    return location, (pafs.LocalFileSystem(), location)


def _format_of(path: str, role: str) -> str:
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if suffix not in FORMATS:
        raise InputError(f"cannot tell the format of the {role} {path} from its extension: use .jsonl or .json "
                         "(JSON Lines) or .parquet")
    return FORMATS[suffix]


def _locate_output(path, output_format: str | None, source_format: str) -> tuple[str, str]:
    """(the output folder as Ray should write it, its format). It must not hold files already: Ray adds part
    files to a folder, and old ones beside them would be read back as rows of this run."""
    if output_format not in (None, "jsonl", "parquet"):
        raise InputError(f"output_format must be 'jsonl' or 'parquet', got {output_format!r}")
    text = os.fspath(path)
    named = FORMATS.get(os.path.splitext(text.rstrip("/"))[1].lower())
    if output_format is not None and named is not None and named != output_format:
        raise InputError(f"output format {output_format} does not match the output {text}, whose extension "
                         f"means {named}")
    location, (filesystem, inner) = _location(text)
    try:
        info = filesystem.get_file_info(inner)
        held = (filesystem.get_file_info(pafs.FileSelector(inner)) if info.type == pafs.FileType.Directory else [])
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InputError(f"{text}: cannot use it as the output ({error})") from None
    if info.type == pafs.FileType.File:
        raise InputError(f"{text} is a file: on Ray the output is a folder of part files; give a new folder")
    if held:
        raise InputError(f"{text} already holds files: on Ray the output is a new folder of part files "
                         "(old files would mix with them); remove it or give another folder")
    return location, output_format or named or source_format


def _connect(address) -> bool:
    """Connect to Ray as ``address`` says; True if this call connected (and so must shut down)."""
    if ray.is_initialized():
        return False
    if address is not None and not isinstance(address, str):
        raise InputError(f"address must be a str ('local', 'auto', 'HOST:PORT' or 'ray://HOST:PORT'), got "
                         f"{type(address).__name__}")
    local = address is None or address.strip().lower() in LOCAL
    try:
        if local:  # "local", not None: None would join a cluster named by RAY_ADDRESS or a `ray start` here
            ray.init(address="local", include_dashboard=False)
        else:
            ray.init(address=address.strip())
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = ("a local Ray instance" if local else "the cluster running on this machine"
                 if address.strip() == "auto" else f"the Ray cluster at {address}")
        raise RayScoringError(f"cannot start or join {where}: {' '.join(str(error).split())}") from None
    return True


def _node_cpus() -> list[float]:
    """The CPU count of each live node of the cluster."""
    return [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")]


def _pool_size(nodes: list[float], actors: int | None, cpus_per_actor: int) -> int:
    """The actor count: as asked if the cluster's nodes can hold that many actors of cpus_per_actor CPUs
    (an actor lives on one node), else a RayScoringError; by default as many as they hold."""
    room = sum(int(cpus // cpus_per_actor) for cpus in nodes)
    if room == 0:
        largest = max(nodes, default=0)
        raise RayScoringError(f"no node of the cluster has {cpus_per_actor} CPUs for an actor (the largest has "
                              f"{largest:g}): lower cpus_per_actor")
    if actors is None:
        return room
    if actors > room:
        raise RayScoringError(f"{actors} actors of {cpus_per_actor} CPUs do not fit on the cluster "
                              f"({_nodes_text(nodes)}: room for {room})")
    return actors


def _read_parquet(source: str, io: dict):
    """read_parquet through Ray Data's first Parquet reader: the newer one (DataContext.use_datasource_v2,
    the default in Ray 2.60) lists the files in a task that always reserves a CPU, and so waits for ever when
    the actors hold every CPU of the cluster, as they do by default."""
    context = ray.data.DataContext.get_current()
    newer = getattr(context, "use_datasource_v2", False)
    context.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(source, file_extensions=["parquet"], **io)
    finally:
        if newer:
            context.use_datasource_v2 = newer


def _check_id_column(dataset, source: str, id_column: str) -> None:
    """Ray writes rows in no fixed order: each row must carry its id, so the input must have the id column."""
    schema = dataset.schema()
    if schema is not None and id_column not in schema.names:
        raise InputError(f"{source} has no column {id_column!r}: on Ray rows are written in no fixed order, so "
                         f"each needs its id; name the id column (id_column, --id-column), or add one")


# "module.Name: message" lines of a traceback Ray passes on as text (the exception objects do not survive)
_RAISED = re.compile(r"^((?:\w+\.)*(\w+)): (.+)$", re.MULTILINE)


def _scoring_error(error: Exception) -> RayScoringError:
    """A Ray failure as one line: the error an actor raised, which Ray passes on only as the text of its
    traceback (tinygpt's own error when there is one), else Ray's first line."""
    text = str(error)
    raised = [(name, message) for path, name, message in _RAISED.findall(text)
              if not path.startswith("ray.") and name.endswith(("Error", "Exception"))]
    ours = [(name, message) for name, message in raised if f"tinygpt.errors.{name}: {message}" in text]
    starting = isinstance(error, ray.exceptions.RayActorError) and getattr(error, "actor_init_failed", False)
    what = "a scoring actor could not start" if starting else "a scoring actor failed"
    if ours or raised:
        name, message = (ours or raised)[-1]
        return RayScoringError(f"scoring on Ray failed: {what}: {name}: {message.strip()}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return RayScoringError(f"scoring on Ray failed: {type(error).__name__}: {first}")


def _summarize(target: str, target_format: str) -> Summary:
    """Count what was written, reading back only the columns it needs."""
    summary = Summary(output=target)
    try:
        if target_format == "parquet":
            written = ray.data.read_parquet(target, file_extensions=["parquet"]).select_columns(["tokens", "error"])
        else:
            written = ray.data.read_json(target, file_extensions=["jsonl"]).select_columns(["tokens", "error"])
    except (FileNotFoundError, ValueError):  # nothing written: an input without rows
        return summary
    summary.files = _count_files(target, target_format)
    for batch in written.iter_batches(batch_format="pyarrow", batch_size=65536):
        error = batch.column("error")
        failed = error.null_count != len(error)
        tokens = batch.column("tokens")
        summary.documents += batch.num_rows
        summary.errors += len(error) - error.null_count
        summary.tokens += int(pc.sum(pc.filter(tokens, pc.is_null(error)) if failed else tokens).as_py() or 0)
    return summary


def _count_files(folder: str, file_format: str) -> int:
    _, (filesystem, inner) = _location(folder)
    suffix = ".parquet" if file_format == "parquet" else ".jsonl"
    return sum(1 for entry in filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
               if entry.type == pafs.FileType.File and entry.base_name.endswith(suffix))


class JsonLinesDatasink(BlockBasedFileDatasink):
    """Ray Data's writer of JSON Lines files, one per block, each line as tinygpt.corpus writes it: floats that
    read back as the same bits (Ray's own write_json goes through pandas, which keeps 10 digits), NaN as null,
    embeddings as 9-digit float32 values."""

    def __init__(self, path: str, *, embed: bool):
        super().__init__(path, file_format="jsonl")
        from .corpus import output_columns

        self.names = output_columns(embed)

    def write_block_to_file(self, block, file) -> None:
        from .corpus import _json_value

        table = block.to_arrow()
        columns = [table.column(name).to_pylist() for name in self.names]
        if "embedding" in self.names:  # float32 arrays: _json_value writes them in 9 digits
            at = self.names.index("embedding")
            columns[at] = [None if value is None else _as_float32(value) for value in columns[at]]
        lines = ("{" + ", ".join(f'"{name}": {_json_value(value)}' for name, value in zip(self.names, row))
                 + "}\n" for row in zip(*columns))
        file.write("".join(lines).encode("utf-8"))


def _as_float32(values):
    import numpy as np

    return np.asarray(values, dtype=np.float32)
