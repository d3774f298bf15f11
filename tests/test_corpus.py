"""Scoring a corpus (tinygpt.corpus): score_batch against Model.score, and files and folders of shards in and out."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tinygpt import corpus, scoring
from tinygpt.corpus import score_batch, score_files
from tinygpt.errors import InputError, NonFiniteError
from tinygpt.model import Model

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

TEXTS = ["Hello world, this is a test.", "The quick brown fox jumps over the lazy dog.",
         "Ünïcödé façade — 東京 and more", "A short one."]
LONG = " ".join(f"Sentence {i} adds to the story." for i in range(40))  # more than the 256-position context


@pytest.fixture(scope="module")
def model(small_gpt2_dir) -> Model:
    return Model.from_pretrained(small_gpt2_dir)


def write_jsonl(path, lines) -> None:
    """Lines as given: dicts and lists become JSON, strings are written verbatim (bad JSON, blank lines)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_scores(row: dict, expected: scoring.DocumentScore) -> None:
    """An output row (as read back from JSON or Parquet) holds exactly the expected document's scores."""
    assert row["tokens"] == expected.tokens and row["error"] is None
    assert row["nll"] == expected.nll and row["perplexity"] == expected.perplexity
    if "embedding" in row:
        np.testing.assert_array_equal(np.array(row["embedding"], np.float32), expected.embedding)


# ------------------------------------------------------------------------------------------------ score_batch
def test_score_batch_gives_model_score_of_each_row_and_an_error_for_each_bad_row(model):
    texts = [TEXTS[0], None, LONG, 5, "", " ", "x\ud800y", TEXTS[1]]
    batch = {"text": np.array(texts, object), "id": np.array([10, 11, 12, 13, 14, 15, 16, 17])}
    out = score_batch(model, batch, embed=True, stride=100)

    assert list(out) == ["id", "tokens", "nll", "perplexity", "embedding", "error"]
    assert all(len(column) == len(texts) for column in out.values())
    assert out["id"].dtype == np.int64 and list(out["id"]) == list(range(10, 18))  # the input's ids and dtype
    assert out["tokens"].dtype == np.int64 and out["nll"].dtype == out["perplexity"].dtype == np.float64
    for row in (0, 2, 7):
        expected = model.score(texts[row], embed=True, stride=100)
        assert out["tokens"][row] == expected.tokens and out["error"][row] is None
        assert out["nll"][row] == expected.nll and out["perplexity"][row] == expected.perplexity
        assert out["embedding"][row].dtype == np.float32
        np.testing.assert_array_equal(out["embedding"][row], expected.embedding)
    errors = {1: "no text: 'text' is missing or null", 3: "'text' must be a string, got int 5",
              4: "'text' is an empty string", 5: "'text' has 1 token; scoring needs at least 2",
              6: "'text' cannot be tokenized: text is not valid Unicode: lone surrogate"}
    for row, message in errors.items():
        assert out["error"][row].startswith(message), out["error"][row]
        assert math.isnan(out["nll"][row]) and math.isnan(out["perplexity"][row]) and out["embedding"][row] is None
    assert list(out["tokens"][[1, 3, 4, 5, 6]]) == [0, 0, 0, 1, 0]  # the count when the text was tokenized


def test_score_batch_without_the_text_or_id_column(model):
    out = score_batch(model, {"body": ["Some text here", "More text here"]})
    assert list(out["id"]) == [None, None]
    assert list(out["error"]) == ["the input has no column 'text' to score"] * 2
    assert list(out) == ["id", "tokens", "nll", "perplexity", "error"]  # no embedding column unless asked

    named = score_batch(model, {"body": ["Some text here"], "key": ["k"]}, text_column="body", id_column="key")
    assert list(named["id"]) == ["k"] and named["error"][0] is None
    assert named["nll"][0] == model.score("Some text here").nll

    empty = score_batch(model, {"text": np.array([], object)}, embed=True)
    assert all(len(column) == 0 for column in empty.values()) and empty["tokens"].dtype == np.int64


def test_score_batch_checks_its_arguments(model):
    with pytest.raises(InputError, match="one length"):
        score_batch(model, {"text": ["a b", "c d"], "id": [1]})
    with pytest.raises(InputError, match="mapping"):
        score_batch(model, [("text", "a b")])
    with pytest.raises(InputError, match="stride"):
        score_batch(model, {"text": ["a b"]}, stride=0)


def test_a_non_finite_document_gets_the_error_and_its_batch_is_scored(model, monkeypatch):
    poisoned = model.tokenizer.encode(TEXTS[1])
    real_score = scoring.score

    def score(model, documents, **options):  # the model overflows on one document only
        if any(list(document) == poisoned for document in documents):
            of = f" of document {len(documents) - 1}" if len(documents) > 1 else ""  # as scoring names it
            raise NonFiniteError(f"the window of tokens 0..9{of}: NaN or infinity in the logits at position 3")
        return real_score(model, documents, **options)

    monkeypatch.setattr(scoring, "score", score)
    out = score_batch(model, {"text": TEXTS})
    assert out["error"][1] == "the window of tokens 0..9: NaN or infinity in the logits at position 3"
    assert math.isnan(out["nll"][1])
    assert out["tokens"][1] == len(poisoned)
    for row in (0, 2, 3):
        assert out["error"][row] is None and out["nll"][row] == model.score(TEXTS[row]).nll


# ------------------------------------------------------------------------------------------------ files
BAD_LINES = [
    {"id": "a", "text": TEXTS[0]},
    {"id": "b", "text": "x"},  # one token
    "",  # a blank line: not a row
    "not json",
    [1, 2],
    "[" * 100_000,  # deeper than Python's parser goes
    {"id": "c", "text": 5},
    {"id": "d", "text": ""},
    {"id": "e"},  # no text
    {"text": TEXTS[1]},  # no id: its row number, 8
]
BAD_ERRORS = [None, "'text' has 1 token", "line 4 is not valid JSON (Expecting value at column 1)", "line 5 holds an array, not a JSON object",
              "line 6 is not valid JSON (nested too deeply)", "'text' must be a string", "'text' is an empty string",
              "no text", None]


def assert_bad_lines_output(rows: list[dict], model) -> None:
    assert len(rows) == len(BAD_ERRORS)  # every row but the blank line, in order
    assert [row["id"] for row in rows] == ["a", "b", 2, 3, 4, "c", "d", "e", 8]
    for row, error in zip(rows, BAD_ERRORS):
        assert (row["error"] is None) if error is None else row["error"].startswith(error), row
        if error is not None:
            assert row["nll"] is None and row["perplexity"] is None  # NaN is written null: JSON has no NaN
    assert_scores(rows[0], model.score(TEXTS[0]))
    assert_scores(rows[8], model.score(TEXTS[1]))


def test_jsonl_in_jsonl_out_keeps_every_row_in_order(model, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", BAD_LINES)
    summary = score_files(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", batch_size=3, progress=False)
    assert_bad_lines_output(read_jsonl(tmp_path / "out.jsonl"), model)
    assert (summary.documents, summary.errors, summary.shards_written) == (9, 7, 1)
    assert summary.tokens == len(model.tokenizer.encode(TEXTS[0])) + len(model.tokenizer.encode(TEXTS[1]))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary left


def test_parquet_in_parquet_out_with_embeddings(model, tmp_path):
    texts = [*TEXTS, None, LONG, TEXTS[0]]
    pq.write_table(pa.table({"id": pa.array([5, None, 7, 8, 9, 10, 11], pa.int32()), "text": texts,
                             "other": list(range(7))}), tmp_path / "in.parquet")
    summary = score_files(model, tmp_path / "in.parquet", tmp_path / "out.parquet", embed=True, batch_size=3,
                          progress=False)
    file = pq.ParquetFile(tmp_path / "out.parquet")
    assert file.metadata.num_row_groups == 3  # one per batch
    assert file.schema_arrow == pa.schema([("id", pa.int32()), ("tokens", pa.int64()), ("nll", pa.float64()),
                                           ("perplexity", pa.float64()), ("embedding", pa.list_(pa.float32())),
                                           ("error", pa.string())])
    rows = file.read().to_pylist()
    assert [row["id"] for row in rows] == [5, None, 7, 8, 9, 10, 11]
    for row, text in zip(rows, texts):
        if text is None:
            assert row["error"].startswith("no text") and row["embedding"] is None and math.isnan(row["nll"])
        else:
            assert_scores(row, model.score(text, embed=True))
    assert (summary.documents, summary.errors) == (7, 1)


def test_row_numbers_stand_for_missing_ids_and_json_ids_go_to_parquet(model, tmp_path):
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "no_ids.parquet")
    score_files(model, tmp_path / "no_ids.parquet", tmp_path / "out.jsonl", batch_size=3, progress=False)
    assert [row["id"] for row in read_jsonl(tmp_path / "out.jsonl")] == [0, 1, 2, 3]

    # JSON ids to Parquet: one column type; with a string among them, the others are written as JSON text
    write_jsonl(tmp_path / "in.jsonl", BAD_LINES)
    score_files(model, tmp_path / "in.jsonl", tmp_path / "out.parquet", batch_size=20, progress=False)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["id"] for row in rows] == ["a", "b", "2", "3", "4", "c", "d", "e", "8"]
    write_jsonl(tmp_path / "ints.jsonl", [{"id": 1, "text": TEXTS[0]}, {"text": TEXTS[1]}])
    score_files(model, tmp_path / "ints.jsonl", tmp_path / "ints.parquet", progress=False)
    assert pq.read_table(tmp_path / "ints.parquet")["id"].to_pylist() == [1, 1]  # 1, and row number 1


def test_a_folder_of_shards_resumes_where_it_stopped(model, tmp_path, capsys):
    shards, out = tmp_path / "in", tmp_path / "out"
    shards.mkdir()
    write_jsonl(shards / "a.jsonl", [{"id": i, "text": text} for i, text in enumerate(TEXTS)])
    pq.write_table(pa.table({"id": ["p", "q"], "text": TEXTS[:2]}), shards / "b.parquet")
    write_jsonl(shards / "c.json", [{"id": "z", "text": TEXTS[3]}])
    (shards / "notes.txt").write_text("not a shard")
    write_jsonl(shards / ".hidden.jsonl", [{"text": "hidden files are not shards"}])

    summary = score_files(model, shards, out, batch_size=2, progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["a.jsonl", "b.parquet", "c.json"]
    assert (summary.documents, summary.shards_written) == (7, 3)
    assert [row["id"] for row in pq.read_table(out / "b.parquet").to_pylist()] == ["p", "q"]
    assert_scores(read_jsonl(out / "c.json")[0], model.score(TEXTS[3]))

    # A rerun skips the finished shards (left as they are) and redoes one whose temporary file was left behind.
    (out / "a.jsonl").write_text("finished earlier\n")
    (out / "c.json").unlink()
    (out / ".c.json.partial").write_text('{"id": "half a line')
    summary = score_files(model, shards, out, progress=True)
    assert "skipping 2 shards already done" in capsys.readouterr().err
    assert (summary.shards_skipped, summary.shards_written, summary.documents) == (2, 1, 1)
    assert (out / "a.jsonl").read_text() == "finished earlier\n"
    assert_scores(read_jsonl(out / "c.json")[0], model.score(TEXTS[3]))
    assert sorted(path.name for path in out.iterdir()) == ["a.jsonl", "b.parquet", "c.json"]

    # Another output format: the same stems
    score_files(model, shards, tmp_path / "as_parquet", output_format="parquet", progress=False)
    assert sorted(path.name for path in (tmp_path / "as_parquet").iterdir()) == ["a.parquet", "b.parquet",
                                                                                 "c.parquet"]


def test_an_interrupted_shard_leaves_no_output(model, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "in.jsonl", [{"text": text} for text in TEXTS])
    real_score_batch, calls = corpus.score_batch, []

    def interrupted(*args, **options):  # Ctrl-C while the second batch is scored
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_score_batch(*args, **options)

    monkeypatch.setattr(corpus, "score_batch", interrupted)
    for output in ("out.jsonl", "out.parquet"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            score_files(model, tmp_path / "in.jsonl", tmp_path / output, batch_size=2, progress=False)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


def test_progress_shows_documents_and_tokens_per_second(model, tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"text": text} for text in TEXTS])
    score_files(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", batch_size=2)
    stderr = capsys.readouterr().err  # not a terminal: tqdm's plain form, drawn at the start and at the end
    last = stderr.split("\r")[-1]
    assert last.startswith("score: 4 docs [") and " docs/s, " in last and last.endswith(" tokens/s]\n"), stderr
    assert stderr.isascii()


UNREADABLE = {
    "missing": (lambda tmp: tmp / "nothing.jsonl", "nothing.jsonl: no such file or folder"),
    "empty folder": (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no .jsonl, .json or .parquet"),
    "not utf-8": (lambda tmp: (tmp / "latin.jsonl").write_bytes(b'{"text": "ok text"}\n{"text": "caf\xe9"}\n')
                  and tmp / "latin.jsonl", "latin.jsonl is not UTF-8 text: line 2"),
    "corrupt parquet": (lambda tmp: (tmp / "bad.parquet").write_bytes(b"PAR1 not really") and tmp / "bad.parquet",
                        "bad.parquet is not a readable Parquet file"),
    "unknown extension": (lambda tmp: (tmp / "in.csv").write_text("text\n") and tmp / "in.csv",
                          "cannot tell the format of the input file"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_input_is_an_error_naming_it(case, model, tmp_path):
    make, message = UNREADABLE[case]
    source = make(tmp_path)
    output = tmp_path / ("out" if source.is_dir() else "out.jsonl")
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        score_files(model, source, output, progress=False)
    assert not output.exists() and not list(tmp_path.glob(".*.partial"))


def test_outputs_that_cannot_be(model, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": TEXTS[0]}])
    with pytest.raises(InputError, match="would overwrite its input"):
        score_files(model, tmp_path, tmp_path, output_format="jsonl", progress=False)
    with pytest.raises(InputError, match="cannot tell the format of the output file"):
        score_files(model, tmp_path / "in.jsonl", tmp_path / "out.txt", progress=False)
    with pytest.raises(InputError, match="both 'text'"):
        score_files(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", id_column="text", progress=False)


def test_without_pyarrow_json_lines_work_and_parquet_says_what_to_install(model, tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name == "pyarrow" or name.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    write_jsonl(tmp_path / "in.jsonl", [{"text": TEXTS[0]}])
    score_files(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    assert_scores(read_jsonl(tmp_path / "out.jsonl")[0], model.score(TEXTS[0]))
    with pytest.raises(RuntimeError, match=r'pip install "tinygpt\[parquet\]"'):
        score_files(model, tmp_path / "in.jsonl", tmp_path / "out.parquet", progress=False)
