"""The int8 weight cache: written at the first int8 load, memory-mapped (not quantized) by later ones, rebuilt
when missing, truncated, foreign or stale, written atomically, and skipped with one warning where it cannot
be written. Every load gives the bits that quantizing in memory gives."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinygpt import int8_cache
from tinygpt.config import GPT2Config
from tinygpt.errors import WeightsError
from tinygpt.kernels import quantized as quantizers
from tinygpt.weights import QuantizedWeight, load_weights

LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    """A copy of the tiny model, free to change."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE", str(folder))
    return folder


def load_int8(model_dir) -> dict:
    return load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"), dtype="int8")


def quantized_in_memory(model_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the int8 load must give: the quantizers run on the file's float32 tensors, by name."""
    stored = {name.removeprefix("transformer."): array for name, array in
              load_file(model_dir / "model.safetensors").items()}
    n_layer = GPT2Config.from_file(model_dir / "config.json").n_layer
    expected = {f"h.{i}.{kind}.weight": quantizers.quantize_columns(stored[f"h.{i}.{kind}.weight"])
                for i in range(n_layer) for kind in LINEAR}
    expected["lm_head.weight"] = quantizers.quantize_rows(stored.get("lm_head.weight", stored["wte.weight"]))
    return expected


def assert_quantized_as(weights: dict, expected: dict) -> None:
    assert sorted(name for name, w in weights.items() if isinstance(w, QuantizedWeight)) == sorted(expected)
    for name, (q, scale) in expected.items():
        np.testing.assert_array_equal(weights[name].q, q, strict=True)
        np.testing.assert_array_equal(weights[name].scale, scale, strict=True)


def assert_mapped(weights: dict) -> None:
    """Every quantized array a view of a file mapping (pages shared with other processes), of the kind the
    kernels were compiled for: writable (copy-on-write), C-contiguous, aligned."""
    for weight in (w for w in weights.values() if isinstance(w, QuantizedWeight)):
        for array in (weight.q, weight.scale):
            assert type(array) is np.ndarray and not array.flags.owndata
            assert isinstance(array.base, np.memmap)
            assert array.flags.writeable and array.flags.c_contiguous and array.flags.aligned


def cache_files(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture
def no_quantizing(monkeypatch):
    """Make quantizing fail: a load that still succeeds read everything from the cache."""
    def refuse(w):
        raise AssertionError("quantized, where the cache should have been read")

    def install():
        monkeypatch.setattr(quantizers, "quantize_columns", refuse)
        monkeypatch.setattr(quantizers, "quantize_rows", refuse)
    return install


# ------------------------------------------------------------------------------------------------------ reuse
def test_the_first_load_writes_the_cache_and_the_next_maps_it_without_quantizing(model_dir, cache, no_quantizing):
    expected = quantized_in_memory(model_dir)
    first = load_int8(model_dir)
    assert_quantized_as(first, expected)
    assert_mapped(first)  # the first load maps the file it wrote, too
    (name,) = cache_files(cache)
    assert name.startswith("int8-") and name.endswith(".safetensors")

    no_quantizing()
    second = load_int8(model_dir)
    assert_quantized_as(second, expected)
    assert_mapped(second)
    assert cache_files(cache) == [name]
    for weight in ("wte.weight", "h.0.ln_1.bias"):  # the float32 tensors as the float32 load gives them
        np.testing.assert_array_equal(second[weight], load_weights(model_dir, GPT2Config.from_file(
            model_dir / "config.json"))[weight], strict=True)


def test_the_file_holds_its_key_in_the_metadata(model_dir, cache):
    load_int8(model_dir)
    (name,) = cache_files(cache)
    raw = (cache / name).read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    metadata = header["__metadata__"]
    source = (model_dir / "model.safetensors").resolve()
    assert metadata["format"] == "tinygpt-int8"
    assert metadata["quantizer_version"] == str(int8_cache.QUANTIZER_VERSION)
    assert json.loads(metadata["sources"]) == [{"path": str(source), "size": source.stat().st_size,
                                                "mtime_ns": source.stat().st_mtime_ns}]


def test_an_untied_head_and_a_sharded_checkpoint_are_cached(model_dir, cache, no_quantizing):
    tensors = load_file(model_dir / "model.safetensors")
    tensors["lm_head.weight"] = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, model_dir / shard)
    (model_dir / "model.safetensors").unlink()
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    first = load_int8(model_dir)
    np.testing.assert_array_equal(first["lm_head.weight"].q,
                                  quantizers.quantize_rows(tensors["lm_head.weight"])[0], strict=True)
    no_quantizing()
    second = load_int8(model_dir)
    for name, weight in first.items():
        if isinstance(weight, QuantizedWeight):
            np.testing.assert_array_equal(second[name].q, weight.q, strict=True)
    assert len(cache_files(cache)) == 1


# -------------------------------------------------------------------------------------------------- staleness
def rewrite(model_dir, edit) -> None:
    path = model_dir / "model.safetensors"
    save_file(edit(load_file(path)), path, metadata={"format": "pt"})


def test_a_changed_source_is_stale_and_its_file_rebuilt_in_place(model_dir, cache):
    load_int8(model_dir)
    (name,) = cache_files(cache)

    def double_a_weight(tensors):
        tensors["transformer.h.1.mlp.c_fc.weight"] *= 2
        return tensors

    rewrite(model_dir, double_a_weight)
    weights = load_int8(model_dir)
    assert_quantized_as(weights, quantized_in_memory(model_dir))
    assert cache_files(cache) == [name]  # replaced under its own name: no orphan per version of the source


def test_a_touched_source_is_quantized_again(model_dir, cache, monkeypatch):
    load_int8(model_dir)
    calls = []
    quantize_rows = quantizers.quantize_rows
    monkeypatch.setattr(quantizers, "quantize_rows", lambda w: (calls.append(w.shape), quantize_rows(w))[1])
    source = model_dir / "model.safetensors"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert_quantized_as(load_int8(model_dir), quantized_in_memory(model_dir))
    assert calls  # rebuilt
    calls.clear()
    load_int8(model_dir)
    assert not calls  # and read from then on


def test_another_quantizer_version_is_stale(model_dir, cache, monkeypatch):
    load_int8(model_dir)
    (name,) = cache_files(cache)
    written = (cache / name).stat().st_mtime_ns
    monkeypatch.setattr(int8_cache, "QUANTIZER_VERSION", int8_cache.QUANTIZER_VERSION + 1)
    assert_quantized_as(load_int8(model_dir), quantized_in_memory(model_dir))
    assert len(load_file(cache / name)) == 2 * (4 * 2 + 1)  # a complete file, rewritten: q and scale of each
    assert (cache / name).stat().st_mtime_ns != written


def test_cached_loads_still_check_the_float32_tensors(model_dir, cache):
    """A source changed without its size or time changing looks unchanged; the float32 tensors it gives
    are still checked for NaN/inf at every load (only the cached int8 ones, checked when written, are not)."""
    load_int8(model_dir)
    source = model_dir / "model.safetensors"
    stat = source.stat()

    def poison(tensors):
        tensors["transformer.h.0.ln_2.bias"][3] = np.nan
        return tensors

    rewrite(model_dir, poison)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size
    with pytest.raises(WeightsError, match=r"tensor 'transformer\.h\.0\.ln_2\.bias' has a non-finite value nan"):
        load_int8(model_dir)


def test_no_file_is_written_for_weights_that_do_not_load(model_dir, cache):
    def poison(tensors):
        tensors["transformer.h.0.ln_2.bias"][3] = np.inf
        return tensors

    rewrite(model_dir, poison)
    with pytest.raises(WeightsError, match="non-finite"):
        load_int8(model_dir)
    assert not cache.exists() or cache_files(cache) == []


# ------------------------------------------------------------------------------------------------- corruption
def truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


def cut_in_the_header(data: bytes) -> bytes:
    return data[:20]


def foreign(data: bytes) -> bytes:
    """A valid safetensors file with the same tensors, written by someone else: no tinygpt metadata."""
    from safetensors.numpy import load, save

    return save(load(data))


@pytest.mark.parametrize("damage", [truncated, garbage, cut_in_the_header, foreign])
def test_a_damaged_or_foreign_file_is_rebuilt(model_dir, cache, damage, no_quantizing):
    expected = quantized_in_memory(model_dir)
    load_int8(model_dir)
    (name,) = cache_files(cache)
    path = cache / name
    path.write_bytes(damage(path.read_bytes()))
    assert_quantized_as(load_int8(model_dir), expected)
    assert cache_files(cache) == [name]
    no_quantizing()
    assert_quantized_as(load_int8(model_dir), expected)  # the rebuilt file is read from then on


def test_a_write_cut_short_leaves_nothing_behind(model_dir, cache, monkeypatch):
    """Interrupted while writing (Ctrl-C, say): the temporary file is removed, the final name never made;
    the next load writes the file whole."""
    import safetensors.numpy

    def interrupted(tensors, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"half a file")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(safetensors.numpy, "save_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            load_int8(model_dir)
    assert cache_files(cache) == []
    assert_quantized_as(load_int8(model_dir), quantized_in_memory(model_dir))
    assert len(cache_files(cache)) == 1


def test_a_temporary_file_left_by_a_crash_is_never_read(model_dir, cache):
    load_int8(model_dir)
    (name,) = cache_files(cache)
    (cache / f".{name}.0123456789abcdef.tmp").write_bytes(b"a crashed writer's half file")
    (cache / name).unlink()
    assert_quantized_as(load_int8(model_dir), quantized_in_memory(model_dir))
    assert name in cache_files(cache)


# ------------------------------------------------------------------------------------------ concurrent loads
LOAD_WHEN_TOLD = textwrap.dedent("""
    import hashlib, sys, time
    from pathlib import Path
    from tinygpt import int8_cache
    from tinygpt.config import GPT2Config
    from tinygpt.weights import QuantizedWeight, load_weights

    model_dir, go = Path(sys.argv[1]), Path(sys.argv[2])
    config = GPT2Config.from_file(model_dir / "config.json")
    write = int8_cache.write

    def slow_write(*args):  # both find no file, and their writes overlap
        time.sleep(0.5)
        write(*args)
        print("wrote")

    int8_cache.write = slow_write
    while not go.exists():  # both processes imported and ready: they load at the same moment
        time.sleep(0.005)
    weights = load_weights(model_dir, config, dtype="int8")
    digest = hashlib.sha256()
    for name in sorted(weights):
        if isinstance(weights[name], QuantizedWeight):
            digest.update(name.encode() + weights[name].q.tobytes() + weights[name].scale.tobytes())
    print(digest.hexdigest())
""")


def digest_of(weights: dict) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(weights):
        if isinstance(weights[name], QuantizedWeight):
            digest.update(name.encode() + weights[name].q.tobytes() + weights[name].scale.tobytes())
    return digest.hexdigest()


def test_two_processes_loading_at_once_both_succeed_and_leave_one_complete_file(model_dir, cache, tmp_path):
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", LOAD_WHEN_TOLD, str(model_dir), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "TINYGPT_CACHE": str(cache), "TINYGPT_NUM_THREADS": "1"})
                 for _ in range(2)]
    go.touch()
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr
        assert stderr == ""
    expected = digest_of({name: QuantizedWeight(q, scale) for name, (q, scale)
                          in quantized_in_memory(model_dir).items()})
    assert [stdout.split() for stdout, _ in results] == [["wrote", expected]] * 2
    (name,) = cache_files(cache)  # one file, no temporary file of either writer left behind
    assert name.endswith(".safetensors") and not name.startswith(".")
    assert digest_of(load_int8(model_dir)) == expected


# ------------------------------------------------------------------------------------------ unwritable folder
def unwritable_folder(kind: str, tmp_path):
    if kind == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders (the case under a file covers root)")
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        return folder
    blocker = tmp_path / "a-file"  # a folder under a regular file cannot be made, even by root
    blocker.write_text("")
    return blocker / "cache"


@pytest.mark.parametrize("kind", ["read-only folder", "under a file"])
def test_an_unwritable_folder_quantizes_in_memory_with_one_warning(model_dir, tmp_path, monkeypatch, kind):
    folder = unwritable_folder(kind, tmp_path)
    monkeypatch.setenv("TINYGPT_CACHE", str(folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = load_int8(model_dir)
    assert [w.category for w in caught] == [RuntimeWarning]
    message = str(caught[0].message)
    assert str(folder) in message and "TINYGPT_CACHE" in message and "quantized in memory" in message
    assert_quantized_as(weights, quantized_in_memory(model_dir))
    assert weights["lm_head.weight"].q.flags.owndata  # in this process's memory


def test_no_home_directory_quantizes_in_memory_with_one_warning(model_dir, monkeypatch):
    for name in ("TINYGPT_CACHE", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(pathlib.Path, "home", classmethod(no_home))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = load_int8(model_dir)
    assert len(caught) == 1 and "no home directory" in str(caught[0].message)
    assert_quantized_as(weights, quantized_in_memory(model_dir))
