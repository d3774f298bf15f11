"""Scoring a corpus: JSON Lines or Parquet files in, one row of scores per document out (``tinygpt score``).

:func:`score_batch` turns a batch of rows (a dict of equal-length columns, as Ray Data's ``map_batches`` passes)
into the output columns; :func:`score_files` streams files or folders of shards through it, a batch at a time,
so a corpus of any size needs the memory of one batch. Both give the same rows for the same input: a document's
numbers never depend on the documents scored beside it (see :mod:`tinygpt.scoring`).

Output rows, one per input row and in input order: ``id``, ``tokens``, ``nll`` (mean negative log-likelihood,
nats per token), ``perplexity``, ``embedding`` (with ``embed=True``) and ``error``. A row that cannot be scored
(no text, a text of fewer than 2 tokens, a line that is not a JSON object...) keeps its place, with its error
in ``error`` and NaN scores; only a file that cannot be read at all stops the run.

Each output file is written under a temporary name beside it (``.NAME.partial``, hidden, and not of a shard's
extension) and renamed when complete, so an output shard that exists is finished: a rerun skips it, and a run
stopped half-way (Ctrl-C, a crash) leaves no shard that looks done.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checks, scoring
from .errors import InputError, NonFiniteError, TinyGPTError
from .generation import plural

# The output columns, in order; "embedding" only when embeddings are asked for.
OUTPUT_COLUMNS = ("id", "tokens", "nll", "perplexity", "embedding", "error")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # file extension -> format
SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}  # format -> the extension of the files it writes
DEFAULT_BATCH_SIZE = 256
PARQUET_INSTALL_HINT = 'pip install "tinygpt[parquet]"'
PARTIAL = ".partial"  # temporary output files: "." + final name + PARTIAL


def output_columns(embed: bool) -> tuple[str, ...]:
    """The names of the columns :func:`score_batch` returns, in order."""
    return tuple(name for name in OUTPUT_COLUMNS if embed or name != "embedding")


# ------------------------------------------------------------------------------------------------ one batch
def score_batch(model, batch: Mapping[str, Sequence | np.ndarray], *, text_column: str = "text",
                id_column: str = "id", embed: bool = False, stride: int | None = None) -> dict[str, np.ndarray]:
    """Score a batch of rows: ``batch`` maps column names to equal-length columns (lists or NumPy arrays,
    object arrays may hold None), the text to score in ``text_column``.

    Returns equal-length NumPy columns, one row per input row, in order (see :func:`output_columns`): id (the
    ``id_column``, as given; None when the batch has no such column), tokens (int64), nll and perplexity
    (float64), embedding (with ``embed``: an object array of float32 [n_embd] arrays) and error (object: None
    when the row was scored, else why not). A row that cannot be scored gets NaN scores, a None embedding, the
    token count if the text was tokenized (else 0) and its error; the other rows are scored all the same.
    """
    if not isinstance(batch, Mapping):
        raise InputError(f"batch must be a mapping of column names to columns, got {type(batch).__name__}")
    size = _row_count(batch)
    embed = checks.flag(embed, "embed")
    scoring.window_options(model, stride, None)  # checks stride
    if model.tokenizer is None:
        raise InputError("this model has no tokenizer (its directory had no tokenizer files) to score text")

    texts = batch.get(text_column)
    if texts is None:
        documents = [(None, 0, f"the input has no column {text_column!r} to score")] * size
    else:
        documents = [_tokenized(model.tokenizer, text, text_column) for text in texts]
    scored_rows = [row for row, (ids, _, _) in enumerate(documents) if ids is not None]
    results = _score_documents(model, [documents[row][0] for row in scored_rows], embed, stride)

    columns = {"id": _id_column(batch, id_column, size),
               "tokens": np.array([count for _, count, _ in documents], np.int64),
               "nll": np.full(size, np.nan),
               "perplexity": np.full(size, np.nan)}
    if embed:
        columns["embedding"] = np.full(size, None, object)
    columns["error"] = np.array([error for _, _, error in documents], object)
    for row, result in zip(scored_rows, results):
        if isinstance(result, str):  # the model computed NaN or infinity for this document
            columns["error"][row] = result
            continue
        columns["nll"][row], columns["perplexity"][row] = result.nll, result.perplexity
        if embed:
            columns["embedding"][row] = result.embedding
    return columns


def _row_count(batch: Mapping) -> int:
    lengths = {}
    for name, column in batch.items():
        try:
            lengths[name] = len(column)
        except TypeError:
            raise InputError(f"batch column {name!r} is not a column of values: {type(column).__name__}") from None
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{name!r} {length}" for name, length in lengths.items())
        raise InputError(f"the batch's columns must have one length, got rows: {sizes}")
    return next(iter(lengths.values()), 0)


def _id_column(batch: Mapping, id_column: str, size: int) -> np.ndarray:
    """The batch's ids as a new array: its own dtype if it is an array (Ray's int or string columns)."""
    column = batch.get(id_column)
    if isinstance(column, np.ndarray):
        return column.copy()
    ids = np.full(size, None, object)
    if column is not None:
        for row, value in enumerate(column):  # one by one: np.array would turn a column of lists into a matrix
            ids[row] = value
    return ids


def _tokenized(tokenizer, text, column: str) -> tuple[list[int] | None, int, str | None]:
    """(token ids, their count, None) for a text that can be scored, else (None, token count or 0, why not)."""
    if text is None:
        return None, 0, f"no text: {column!r} is missing or null"
    if not isinstance(text, str):  # np.str_ is a str
        return None, 0, f"{column!r} must be a string, got {type(text).__name__} {_short(text)}"
    if not text:
        return None, 0, f"{column!r} is an empty string"
    try:
        ids = tokenizer.encode(text)
    except TinyGPTError as error:  # e.g. a lone surrogate from a JSON "\ud800" escape
        return None, 0, f"{column!r} cannot be tokenized: {error}"
    if len(ids) < 2:
        return None, len(ids), f"{column!r} has {plural(len(ids), 'token')}; scoring needs at least 2"
    return ids, len(ids), None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _score_documents(model, documents: list[list[int]], embed: bool, stride) -> list:
    """One DocumentScore per document, or for a document whose numbers are not finite, the error's message."""
    if not documents:
        return []
    try:
        return scoring.score(model, documents, embed=embed, stride=stride)
    except NonFiniteError as error:
        if len(documents) == 1:  # alone in its call, the document is not named in the message
            return [str(error)]
    # Which documents overflowed? Score them one by one (same numbers: a document's scores do not depend on its
    # batch), so that the error lands on those rows only.
    return [_score_documents(model, [document], embed, stride)[0] for document in documents]


# ------------------------------------------------------------------------------------------------ files
@dataclass
class Summary:
    """What :func:`score_files` did: documents (rows written), their tokens, the rows with an error, and the
    output shards written and skipped (already complete)."""

    documents: int = 0
    tokens: int = 0
    errors: int = 0
    shards_written: int = 0
    shards_skipped: int = 0


@dataclass(frozen=True)
class Shard:
    """One input file and the output file it is scored into, with their formats ("jsonl" or "parquet")."""

    source: Path
    source_format: str
    target: Path
    target_format: str


def score_files(model, input_path, output_path, *, text_column: str = "text", id_column: str = "id",
                embed: bool = False, stride: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                output_format: str | None = None, progress: bool = True) -> Summary:
    """Score every row of ``input_path`` into ``output_path``, streaming ``batch_size`` rows at a time.

    input_path: a JSON Lines (.jsonl, .json) or Parquet (.parquet) file, written to the file output_path in the
    format its extension names (replacing it if it exists); or a folder of such files ("shards": its files with
    those extensions, hidden ones aside), each written to the folder output_path under the same stem, as
    ``output_format`` ("jsonl" or "parquet"; default: the shard's own format). Output shards that exist are
    complete and are skipped. Rows are scored by :func:`score_batch`; a row's id is its ``id_column`` value, or
    where the row has no such field its number (from 0) within its file. ``progress``: a progress bar on stderr
    (documents/s and tokens/s), and a line on the shards skipped.
    """
    embed = checks.flag(embed, "embed")
    scoring.window_options(model, stride, None)
    batch_size = checks.count(batch_size, "batch_size", minimum=1)
    for name, value in (("text_column", text_column), ("id_column", id_column)):
        if not isinstance(value, str) or not value:
            raise InputError(f"{name} must be a column name (a non-empty str), got {value!r}")
    if text_column == id_column:
        raise InputError(f"text_column and id_column are both {text_column!r}: the id must be another column")
    if model.tokenizer is None:
        raise InputError("this model has no tokenizer (its directory had no tokenizer files) to score text")

    shards = plan(input_path, output_path, output_format)
    summary = Summary()
    folder = Path(input_path).is_dir()  # a single output file is rewritten; a folder's finished files are kept
    to_do = [shard for shard in shards if not (folder and shard.target.exists())]
    summary.shards_skipped = len(shards) - len(to_do)
    stream = sys.stderr if progress else None
    if stream is not None and summary.shards_skipped:
        print(f"skipping {plural(summary.shards_skipped, 'shard')} already done", file=stream, flush=True)
    if any("parquet" in (shard.source_format, shard.target_format) for shard in to_do):
        _parquet()  # a missing pyarrow is an error now, not after the JSON Lines shards before it
    if not to_do:
        return summary
    options = dict(text_column=text_column, id_column=id_column, embed=embed, stride=stride)
    bar = _Progress(stream, _total_rows(to_do))
    try:
        for shard in to_do:
            _score_shard(model, shard, options, batch_size, bar, summary)
    finally:
        bar.close()
    return summary


def plan(input_path, output_path, output_format: str | None = None) -> list[Shard]:
    """The files :func:`score_files` reads and writes, checked (it exists; formats are known; no output
    overwrites an input), without reading them: a folder's shards in name order, or the one file."""
    if output_format not in (None, *SUFFIXES):
        raise InputError(f"output_format must be 'jsonl' or 'parquet', got {output_format!r}")
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.is_dir():
        if output_path.exists() and not output_path.is_dir():
            raise InputError(f"{output_path} is a file, but the input {input_path} is a folder: the output must "
                             "be a folder too (one output file per input file)")
        sources = sorted((path for path in input_path.iterdir()
                          if path.suffix.lower() in FORMATS and not path.name.startswith(".") and path.is_file()),
                         key=lambda path: path.name)
        if not sources:
            raise InputError(f"{input_path}: the folder has no .jsonl, .json or .parquet files to score")
        shards = [_folder_shard(source, output_path, output_format) for source in sources]
        targets = [shard.target for shard in shards]
        clashing = sorted({str(t) for t in targets if targets.count(t) > 1})
        if clashing:
            raise InputError(f"two input files would be written to the same output file {clashing[0]}; "
                             "give them different names")
    elif input_path.is_file():
        if output_path.is_dir():
            raise InputError(f"{output_path} is a folder, but the input {input_path} is a file: give an output "
                             f"file name ending in .jsonl, .json or .parquet")
        target_format = _format(output_path, "output")
        if output_format is not None and output_format != target_format:
            raise InputError(f"output format {output_format} does not match the output file {output_path}, "
                             f"whose extension means {target_format}")
        shards = [Shard(input_path, _format(input_path, "input"), output_path, target_format)]
    elif input_path.exists():
        raise InputError(f"{input_path} is neither a file nor a folder")
    else:
        raise InputError(f"{input_path}: no such file or folder")
    for shard in shards:
        if shard.target.resolve() == shard.source.resolve():
            raise InputError(f"the output {shard.target} would overwrite its input; write it elsewhere")
    return shards


def _folder_shard(source: Path, folder: Path, output_format: str | None) -> Shard:
    """A folder's input file and its output: the same stem; the same extension if the format is unchanged."""
    source_format = FORMATS[source.suffix.lower()]
    target_format = output_format or source_format
    suffix = source.suffix if target_format == source_format else SUFFIXES[target_format]
    return Shard(source, source_format, folder / (source.stem + suffix), target_format)


def _format(path: Path, role: str) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"cannot tell the format of the {role} file {path} from its extension: use .jsonl or "
                         ".json (JSON Lines) or .parquet") from None


def _total_rows(shards: list[Shard]) -> int | None:
    """Rows to score, when every file says (Parquet's footer does; counting JSON Lines would read them twice)."""
    if not shards or any(shard.source_format != "parquet" for shard in shards):
        return None
    return sum(_open_parquet(shard.source).metadata.num_rows for shard in shards)


def _score_shard(model, shard: Shard, options: dict, batch_size: int, bar, summary: Summary) -> None:
    """Score one input file into its output file: written under a temporary name, renamed once complete."""
    partial = shard.target.with_name("." + shard.target.name + PARTIAL)
    reader = _read_parquet if shard.source_format == "parquet" else _read_jsonl
    id_type, chunks = reader(shard.source, batch_size, options["text_column"], options["id_column"])
    writer = _writer(shard.target_format, partial, shard.target, options["embed"], id_type)
    try:
        for chunk in chunks:
            columns = _with_unreadable(score_batch(model, chunk.columns, **options), chunk)
            writer.write(columns)
            scored = np.array([error is None for error in columns["error"]], bool)
            tokens = int(columns["tokens"][scored].sum())
            summary.documents += chunk.size
            summary.errors += chunk.size - int(scored.sum())
            summary.tokens += tokens
            bar.update(chunk.size, tokens)
        writer.close()
        os.replace(partial, shard.target)  # only now does the output exist: complete
    except BaseException:  # also Ctrl-C: the half-written file goes; a rerun starts this shard again
        chunks.close()
        writer.abort()
        partial.unlink(missing_ok=True)
        raise
    summary.shards_written += 1


# ---- reading
@dataclass
class _Chunk:
    """Rows read from a file: ``columns`` holds the readable ones (as score_batch takes them); ``unreadable``
    maps the place in the chunk of each row that could not be read to its (id, error)."""

    columns: dict
    size: int
    unreadable: dict[int, tuple[object, str]] = field(default_factory=dict)


def _read_jsonl(path: Path, batch_size: int, text_column: str, id_column: str):
    """(None: ids of no fixed type, the chunks of the JSON Lines file). Blank lines are not rows."""
    return None, _jsonl_chunks(path, batch_size, text_column, id_column)


def _jsonl_chunks(path: Path, batch_size: int, text_column: str, id_column: str) -> Iterator[_Chunk]:
    def empty():
        return _Chunk({text_column: [], id_column: []}, 0)

    try:
        file = open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    chunk, row = empty(), 0
    with file:
        for number, line in _lines(file, path):
            if not line.strip():
                continue
            value, error = _json_object(line, number)
            if error is None:
                chunk.columns[text_column].append(value.get(text_column))
                chunk.columns[id_column].append(value[id_column] if id_column in value else row)
            else:
                chunk.unreadable[chunk.size] = (row, error)
            chunk.size += 1
            row += 1
            if chunk.size == batch_size:
                yield chunk
                chunk = empty()
    if chunk.size:
        yield chunk


def _lines(file, path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of each line; a file that is not UTF-8 cannot be trusted to split into rows."""
    try:
        for number, data in enumerate(file, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path} is not UTF-8 text: line {number}, byte {error.start} of the line "
                                 f"({error.reason})") from None
            yield number, line.removeprefix("\ufeff") if number == 1 else line
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def _json_object(line: str, number: int) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:  # its own "line 1" would be the file's line ``number``
        return None, f"line {number} is not valid JSON ({error.msg} at column {error.colno})"
    except (ValueError, RecursionError) as error:  # an int of too many digits; nesting too deep for the parser
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return None, f"line {number} is not valid JSON ({reason})"
    if not isinstance(value, dict):
        return None, f"line {number} holds {_JSON_KINDS[type(value)]}, not a JSON object"
    return value, None


def _read_parquet(path: Path, batch_size: int, text_column: str, id_column: str):
    """(the id column's Arrow type, or None when row numbers stand for ids; the chunks of the Parquet file)."""
    file = _open_parquet(path)
    schema = file.schema_arrow
    id_type = schema.field(id_column).type if id_column in schema.names else None
    return id_type, _parquet_chunks(file, path, batch_size, text_column, id_column)


def _parquet_chunks(file, path: Path, batch_size: int, text_column: str, id_column: str) -> Iterator[_Chunk]:
    import pyarrow as pa

    names = file.schema_arrow.names
    wanted = [name for name in dict.fromkeys((text_column, id_column)) if name in names]
    row = 0
    try:
        for batch in file.iter_batches(batch_size=batch_size, columns=wanted):
            # a column absent from the file stays absent: score_batch then says so on every row
            columns = {name: batch.column(name).to_pylist() for name in wanted}
            if id_column not in names:
                columns[id_column] = list(range(row, row + batch.num_rows))
            row += batch.num_rows
            yield _Chunk(columns, batch.num_rows)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: cannot read the Parquet file ({error})") from None


def _open_parquet(path: Path):
    import pyarrow as pa

    parquet = _parquet()
    try:
        return parquet.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path} is not a readable Parquet file ({error})") from None


def _parquet():
    """pyarrow.parquet, imported only when a Parquet file is involved."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise RuntimeError(f"Parquet files need pyarrow, which is not installed: {PARQUET_INSTALL_HINT}") from None
    return pyarrow.parquet


def _with_unreadable(scored: dict[str, np.ndarray], chunk: _Chunk) -> dict[str, np.ndarray]:
    """The chunk's output columns: the scored rows, and each unreadable row in its place with its error."""
    if not chunk.unreadable:
        return scored
    bad = np.array(sorted(chunk.unreadable), np.int64)
    good = np.setdiff1d(np.arange(chunk.size), bad)
    columns = {}
    for name, column in scored.items():
        columns[name] = np.empty(chunk.size, object if name == "id" else column.dtype)
        columns[name][good] = column
    for place in bad:
        row_id, error = chunk.unreadable[place]
        columns["id"][place], columns["tokens"][place], columns["error"][place] = row_id, 0, error
        columns["nll"][place] = columns["perplexity"][place] = np.nan
        if "embedding" in columns:
            columns["embedding"][place] = None
    return columns


# ---- writing
def _writer(output_format: str, path: Path, target: Path, embed: bool, id_type):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if output_format == "parquet":
            return _ParquetWriter(path, target, embed, id_type)
        return _JsonLinesWriter(path, embed)
    except OSError as error:
        raise OSError(f"cannot write {target}: {error.strerror or error}") from None


def _close_durably(file) -> None:
    """Flush and close: the renamed file must hold its rows, even after a power cut."""
    file.flush()
    os.fsync(file.fileno())
    file.close()


class _JsonLinesWriter:
    """One JSON object per line. NaN scores (error rows) are written null: JSON has no NaN."""

    def __init__(self, path: Path, embed: bool):
        self.file = open(path, "w", encoding="utf-8", newline="\n")
        self.names = output_columns(embed)

    def write(self, columns: dict[str, np.ndarray]) -> None:
        rows = zip(*(columns[name] for name in self.names))
        self.file.write("".join(
            "{" + ", ".join(f'"{name}": {_json_value(value)}' for name, value in zip(self.names, row)) + "}\n"
            for row in rows))

    def close(self) -> None:
        _close_durably(self.file)

    def abort(self) -> None:
        self.file.close()


def _json_value(value) -> str:
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        # 9 significant digits read back as the same float32 (a double's 17 would double the file), and
        # Python's formatting of floats is several times faster than NumPy's shortest float32 form
        return "[" + ", ".join(map("{:.9g}".format, value.tolist())) + "]"
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return "null"
    # ASCII: an id holding a lone surrogate (from a JSON "\ud800") still makes a valid UTF-8 file
    return json.dumps(value, default=_json_default)


def _json_default(value):
    """JSON for the id values other formats hold: NumPy scalars and arrays, dates, bytes, decimals."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


class _ParquetWriter:
    """One row group per batch. The id column keeps the input's Arrow type; ids read from JSON Lines take the
    type of the first batch's ids."""

    def __init__(self, path: Path, target: Path, embed: bool, id_type):
        import pyarrow as pa

        self.file, self.target, self.writer = open(path, "wb"), target, None
        self.id_type = id_type
        self.types = {"tokens": pa.int64(), "nll": pa.float64(), "perplexity": pa.float64(),
                      "embedding": pa.list_(pa.float32()), "error": pa.string()}
        self.names = output_columns(embed)

    def write(self, columns: dict[str, np.ndarray]) -> None:
        table = self._table(columns)
        if self.writer is None:
            self.writer = _parquet().ParquetWriter(self.file, table.schema)
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        if self.writer is None:  # an empty input: an output with the columns and no rows
            self.write({name: np.empty(0, object) for name in self.names})
        self.writer.close()
        _close_durably(self.file)

    def abort(self) -> None:
        """Stop without finishing the file (it is deleted): whatever goes wrong here must not hide the error."""
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception:
            pass
        self.file.close()

    def _table(self, columns: dict[str, np.ndarray]):
        import pyarrow as pa

        arrays = [self._ids(columns["id"])]
        for name in self.names[1:]:
            values = columns[name]
            arrays.append(pa.array(list(values) if values.dtype == object else values, type=self.types[name],
                                   from_pandas=False))
        return pa.Table.from_arrays(arrays, names=list(self.names))

    def _ids(self, ids: np.ndarray):
        import pyarrow as pa

        values = [value.item() if isinstance(value, np.generic) else value for value in ids]
        if self.id_type is None:  # ids from JSON Lines: the first rows decide the column's type
            self.id_type = _json_id_type(values)
        if pa.types.is_string(self.id_type):
            values = [value if value is None or isinstance(value, str) else _json_value(value) for value in values]
        try:
            return pa.array(values, type=self.id_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
            raise InputError(f"writing {self.target}: an id does not fit the id column's type {self.id_type}, "
                             f"which the first rows set ({error}); make the ids one type, or write JSON Lines "
                             "(--output-format jsonl)") from None


def _json_id_type(values: list):
    """The Parquet type for ids read from JSON: string if any is a string (or they have no common type),
    else what Arrow makes of them; int64, the row numbers' type, when they are all null."""
    import pyarrow as pa

    if any(isinstance(value, str) for value in values):
        return pa.string()
    try:
        inferred = pa.array(values).type
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.string()
    return pa.int64() if pa.types.is_null(inferred) else inferred


# ---- progress
class _Progress:
    """A tqdm bar over documents, with the tokens scored and their rate beside tqdm's documents/s.

    Like ``perplexity``'s bar (tinygpt.cli.ProgressBar): on a terminal redrawn in place and erased at the end;
    elsewhere (a pipe, a log file) plain ASCII, redrawn at most every LOG_INTERVAL seconds and left as the last
    line. Both rates are averages since the start, so that the two agree on what they measure.
    """

    LOG_INTERVAL = 10.0  # seconds

    def __init__(self, stream, total: int | None):
        self.bar, self.tokens = None, 0
        if stream is None:
            return
        from tqdm import tqdm  # here: only runs that show progress need it

        terminal = stream.isatty()
        self.bar = tqdm(desc="score", total=total, unit=" docs", file=stream, smoothing=0,
                        dynamic_ncols=terminal, ascii=not terminal, leave=not terminal,
                        mininterval=0.1 if terminal else self.LOG_INTERVAL)

    def update(self, documents: int, tokens: int) -> None:
        if self.bar is None:
            return
        self.tokens += tokens
        elapsed = self.bar.format_dict["elapsed"]
        rate = _number(self.tokens / elapsed) if elapsed > 0 else "?"
        self.bar.set_postfix_str(f"{_number(self.tokens)} tokens, {rate} tokens/s", refresh=False)
        self.bar.update(documents)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _number(value: float) -> str:
    """12, 345, 6.78k, 9.01M: a count or rate in a few characters."""
    from tqdm import tqdm

    return f"{value:.0f}" if value < 999.5 else tqdm.format_sizeof(value)
