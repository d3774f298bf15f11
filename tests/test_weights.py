"""Loading safetensors checkpoints: both published layouts, other float types, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinygpt.config import GPT2Config
from tinygpt import weights as weights_module
from tinygpt.weights import WeightsError, expected_shapes, load_weights


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def rewrite_tensors(model_dir, edit):
    """Apply ``edit`` to the checkpoint's name -> array dict and write it back."""
    path = model_dir / "model.safetensors"
    tensors = edit(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


def edit_header(model_dir, edit):
    """Apply ``edit`` to the JSON header of the checkpoint (name -> dtype, shape, data_offsets) in place and
    write it back in front of the unchanged data."""
    path = model_dir / "model.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])


def shard_checkpoint(model_dir, weight_map):
    """Replace model.safetensors by an index with ``weight_map`` (no shard files are written)."""
    (model_dir / "model.safetensors").unlink()
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_loads_every_tensor_with_its_shape_and_ties_the_head(tiny_model_dir):
    config = GPT2Config.from_file(tiny_model_dir / "config.json")
    weights = load_weights(tiny_model_dir, config)
    stored = load_file(tiny_model_dir / "model.safetensors")
    for name, shape in expected_shapes(config).items():
        assert weights[name].shape == shape
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], stored["transformer." + name])
    assert weights["lm_head.weight"] is weights["wte.weight"]


def test_float32_tensors_are_memory_mapped_not_copied(tiny_model_dir):
    config = GPT2Config.from_file(tiny_model_dir / "config.json")
    weights = load_weights(tiny_model_dir, config)
    array = weights["h.0.mlp.c_fc.weight"]
    assert not array.flags.owndata
    base = array
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)


@pytest.mark.parametrize("float_type", [np.float32, np.float16])
def test_int8_load_quantizes_what_the_file_holds(tiny_model_dir, tmp_path, float_type):
    """int8 weights come from mapped slabs of a float32 file, or from converted rows of a float16 one; either
    way each equals the quantizer run on the whole float32 tensor, and the LM head is quantized by rows."""
    from tinygpt.kernels.quantized import quantize_columns, quantize_rows

    model_dir = copy_model(tiny_model_dir, tmp_path / "model")
    rewrite_tensors(model_dir, lambda t: {name: a.astype(float_type) for name, a in t.items()})
    config = GPT2Config.from_file(model_dir / "config.json")
    stored = {name.removeprefix("transformer."): a.astype(np.float32)
              for name, a in load_file(model_dir / "model.safetensors").items()}
    weights = load_weights(model_dir, config, dtype="int8")
    for name in (f"h.{i}.{kind}.weight" for i in range(config.n_layer)
                 for kind in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")):
        q, scale = quantize_columns(stored[name])
        np.testing.assert_array_equal(weights[name].q, q)
        np.testing.assert_array_equal(weights[name].scale, scale)
    q, scale = quantize_rows(stored["wte.weight"])
    np.testing.assert_array_equal(weights["lm_head.weight"].q, q)
    np.testing.assert_array_equal(weights["lm_head.weight"].scale, scale)


def test_untied_lm_head_is_used_when_present(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    head = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    rewrite_tensors(model_dir, lambda t: {**t, "lm_head.weight": head})
    config = GPT2Config.from_file(model_dir / "config.json")
    np.testing.assert_array_equal(load_weights(model_dir, config)["lm_head.weight"], head)


def test_sharded_checkpoint(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    tensors = load_file(model_dir / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, model_dir / shard)
    (model_dir / "model.safetensors").unlink()
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = GPT2Config.from_file(model_dir / "config.json")
    weights = load_weights(model_dir, config)
    np.testing.assert_array_equal(weights["ln_f.bias"], tensors["transformer.ln_f.bias"])


def test_truncated_file_names_file_and_tensor(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"model\.safetensors: truncated file: tensor 'transformer\.[\w.]+'"):
        load_weights(model_dir, config)


def test_file_cut_inside_the_header(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"model\.safetensors: truncated or corrupt"):
        load_weights(model_dir, config)


def test_wrong_shape_names_tensor_and_shapes(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    bad = np.zeros((64, 100), np.float32)
    rewrite_tensors(model_dir, lambda t: {**t, "transformer.h.1.attn.c_attn.weight": bad})
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"'transformer\.h\.1\.attn\.c_attn\.weight' has shape \[64, 100\], "
                                           r"expected \[64, 192\]"):
        load_weights(model_dir, config)


def test_missing_tensor_is_named(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_tensors(model_dir, lambda t: {k: v for k, v in t.items() if k != "transformer.h.0.ln_2.bias"})
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"missing from the checkpoint: h\.0\.ln_2\.bias"):
        load_weights(model_dir, config)


def test_unknown_tensor_is_named(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_tensors(model_dir, lambda t: {**t, "transformer.h.7.mystery": np.zeros(3, np.float32)})
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"unexpected tensor 'transformer\.h\.7\.mystery'"):
        load_weights(model_dir, config)


def test_integer_weight_is_a_dtype_error(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_tensors(model_dir, lambda t: {**t, "transformer.ln_f.weight": np.ones(64, np.int32)})
    config = GPT2Config.from_file(model_dir / "config.json")
    with pytest.raises(WeightsError, match=r"'transformer\.ln_f\.weight' has dtype I32"):
        load_weights(model_dir, config)


def test_no_safetensors_file(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_weights(tmp_path, GPT2Config())




def test_index_naming_a_missing_shard_names_the_index_and_the_shard(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    shard_checkpoint(model_dir, {"transformer.wte.weight": "model-00001-of-00002.safetensors"})
    with pytest.raises(WeightsError, match=r"index\.json lists shard\(s\) missing from .*: "
                                           r"model-00001-of-00002\.safetensors"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


@pytest.mark.parametrize("weight_map, message", [
    (["model.safetensors"], r"weight_map must be an object mapping tensor name -> shard file name, got list"),
    ({"transformer.wte.weight": 5}, r"tensor 'transformer\.wte\.weight' maps to 5, which is not a file name"),
], ids=["list", "number"])
def test_malformed_index_weight_map_is_named(tiny_model_dir, tmp_path, weight_map, message):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    shard_checkpoint(model_dir, weight_map)
    with pytest.raises(WeightsError, match=r"model\.safetensors\.index\.json: " + message):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_index_shard_outside_the_model_directory_is_refused(tiny_model_dir, tmp_path, shard):
    """Even when the path leads to a real checkpoint: the index may name only files beside it."""
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    shutil.copy(model_dir / "model.safetensors", tmp_path / "model.safetensors")
    shard_checkpoint(model_dir, {"transformer.wte.weight": shard})
    with pytest.raises(WeightsError, match=r"index\.json: tensor 'transformer\.wte\.weight' maps to .*which is not "
                                           r"a file name in the model directory"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


def _shifted_offsets(offsets):
    begin, end = offsets
    return [begin - end, 0]  # before the data: the tensor's bytes would come from the header


@pytest.mark.parametrize("field, change", [
    ("data_offsets", _shifted_offsets),
    ("data_offsets", lambda offsets: [offsets[0] + 0.5, offsets[1] + 0.5]),
    ("data_offsets", lambda offsets: offsets[::-1]),
    ("data_offsets", lambda offsets: [offsets[0] > 0, offsets[1]]),
    ("shape", lambda shape: [float(shape[0])]),
    ("shape", lambda shape: [str(shape[0])]),
    ("shape", lambda shape: [-shape[0]]),
], ids=["negative-offsets", "float-offsets", "begin-after-end", "bool-offset", "float-dim", "string-dim",
        "negative-dim"])
def test_malformed_offsets_and_shapes_are_refused(tiny_model_dir, tmp_path, field, change):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")

    def edit(header):
        entry = header["transformer.ln_f.weight"]
        entry[field] = change(entry[field])

    edit_header(model_dir, edit)
    expected = (r"expected \[begin, end\] integers with 0 <= begin <= end" if field == "data_offsets"
                else r"expected a list of integers >= 0")
    with pytest.raises(WeightsError, match=rf"model\.safetensors: tensor 'transformer\.ln_f\.weight' has {field} "
                                           rf".*{expected}"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


def test_tensors_sharing_bytes_are_refused(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")

    def alias(header):
        bias = header["transformer.ln_f.bias"]["data_offsets"]
        header["transformer.ln_f.weight"]["data_offsets"] = [bias[0] + 128, bias[1] + 128]  # half in the bias

    edit_header(model_dir, alias)
    with pytest.raises(WeightsError, match=r"model\.safetensors: tensors 'transformer\.ln_f\.bias' "
                                           r"\(bytes \d+\.\.\d+\) and 'transformer\.ln_f\.weight' "
                                           r"\(bytes \d+\.\.\d+\) overlap"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name, index, value", [
    ("ln_f.weight", (5,), np.nan),
    ("h.1.mlp.c_fc.weight", (3, 7), np.inf),
    ("wte.weight", (700, 3), -np.inf),
    ("wpe.weight", (100, 1), np.nan),
])
def test_nan_or_inf_weight_names_file_tensor_and_index(tiny_model_dir, tmp_path, monkeypatch, dtype, name, index,
                                                       value):
    """int8 loads read the embeddings in slabs: small ones here, so that the index counts across slabs."""
    monkeypatch.setattr(weights_module, "ROWS_PER_READ", 256)
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")

    def poison(tensors):
        tensors["transformer." + name][index] = value
        return tensors

    rewrite_tensors(model_dir, poison)
    with pytest.raises(WeightsError, match=rf"model\.safetensors: tensor 'transformer\.{name}' has a non-finite "
                                           rf"value -?(nan|inf) at index \[{', '.join(map(str, index))}\]"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"), dtype=dtype)


def test_nan_in_the_embedding_of_an_untied_int8_model_is_named(tiny_model_dir, tmp_path):
    """The quantized head does not read wte when the file has its own: wte is checked on its own."""
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    head = np.ones((1000, 64), np.float32)

    def untie_and_poison(tensors):
        tensors["transformer.wte.weight"][999, 63] = np.nan
        return {**tensors, "lm_head.weight": head}

    rewrite_tensors(model_dir, untie_and_poison)
    with pytest.raises(WeightsError, match=r"tensor 'transformer\.wte\.weight' has a non-finite value nan at index "
                                           r"\[999, 63\]"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"), dtype="int8")


def test_a_tensor_stored_with_and_without_the_prefix_is_refused_naming_both(tiny_model_dir, tmp_path):
    """Fuzzing found both names loading, the later one silently kept (transformers keeps the other)."""
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_tensors(model_dir, lambda t: {**t, "ln_f.bias": np.zeros(64, np.float32)})
    with pytest.raises(WeightsError, match=r"model\.safetensors: tensors '(transformer\.)?ln_f\.bias' and "
                                           r"'(transformer\.)?ln_f\.bias' are both 'ln_f\.bias' \(the 'transformer\.' "
                                           r"prefix is optional\): a checkpoint must hold each tensor once"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


def test_a_tensor_in_two_shards_is_refused_naming_both_files(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    tensors = load_file(model_dir / "model.safetensors")
    save_file(tensors, model_dir / "model-00001-of-00002.safetensors")
    second_shard = {"h.0.ln_1.weight": tensors["transformer.h.0.ln_1.weight"]}
    save_file(second_shard, model_dir / "model-00002-of-00002.safetensors")
    shard_checkpoint(model_dir, {"transformer.wte.weight": "model-00001-of-00002.safetensors",
                                 "h.0.ln_1.weight": "model-00002-of-00002.safetensors"})
    with pytest.raises(WeightsError, match=r"model-00001-of-00002\.safetensors and .*model-00002-of-00002"
                                           r"\.safetensors: tensors 'transformer\.h\.0\.ln_1\.weight' and "
                                           r"'h\.0\.ln_1\.weight' are both 'h\.0\.ln_1\.weight'"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


def test_index_without_weight_map_is_named(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    shard_checkpoint(model_dir, {})
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(WeightsError, match=r"index\.json: not a valid safetensors index \(no 'weight_map'\)"):
        load_weights(model_dir, GPT2Config.from_file(model_dir / "config.json"))


def test_a_header_listing_more_tensors_than_the_config_allows_is_refused(tiny_model_dir, tmp_path):
    """Checked before the entries: a 100 MB header can list a million of them."""
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    config = GPT2Config.from_file(model_dir / "config.json")
    extra = {f"h.{i}.extra": np.zeros(0, np.float32) for i in range(len(expected_shapes(config)) + 8)}
    rewrite_tensors(model_dir, lambda t: {**t, **extra})
    # 28 tensors for 2 layers, the LM head, and the 2 mask buffers of each layer
    with pytest.raises(WeightsError, match=r"model\.safetensors: lists \d+ tensors, more than the 33 a GPT-2 "
                                           r"checkpoint of this config\.json can hold"):
        load_weights(model_dir, config)


def test_float32_files_found_finite_are_not_read_again_until_they_change(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    config = GPT2Config.from_file(model_dir / "config.json")
    load_weights(model_dir, config)
    assert [path.name.startswith("finite-") for path in (tmp_path / "cache").iterdir()] == [True]
    checked = []
    real_finite = weights_module._finite
    monkeypatch.setattr(weights_module, "_finite", lambda *args: checked.append(1) or real_finite(*args))
    loaded = load_weights(model_dir, config)
    assert checked == []
    np.testing.assert_array_equal(loaded["h.0.mlp.c_fc.weight"], load_file(model_dir / "model.safetensors")[
        "transformer.h.0.mlp.c_fc.weight"])

    def poison(tensors):
        tensors["transformer.h.1.attn.c_proj.weight"][2, 5] = np.nan
        return tensors

    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    rewrite_tensors(model_dir, poison)  # same size: only the modification time tells
    after = (model_dir / "model.safetensors").stat()
    if after.st_mtime_ns == before:  # file times tick every few ms: an edit that quick would share the time
        os.utime(model_dir / "model.safetensors", ns=(after.st_atime_ns, before + 1_000_000))
    with pytest.raises(WeightsError, match=r"tensor 'transformer\.h\.1\.attn\.c_proj\.weight' has a non-finite "
                                           r"value nan at index \[2, 5\]"):
        load_weights(model_dir, config)


def test_without_a_writable_cache_float32_files_are_checked_at_every_load(tiny_model_dir, tmp_path, monkeypatch,
                                                                          recwarn):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TINYGPT_CACHE", str(blocker / "cache"))
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    config = GPT2Config.from_file(model_dir / "config.json")
    checked = []
    real_finite = weights_module._finite
    monkeypatch.setattr(weights_module, "_finite", lambda *args: checked.append(1) or real_finite(*args))
    load_weights(model_dir, config)
    first = len(checked)
    load_weights(model_dir, config)
    assert first > 0 and len(checked) == 2 * first
    assert not recwarn.list


def test_an_embedding_that_is_not_the_head_is_read_by_row_from_the_file(tiny_model_dir, tmp_path):
    """int8: the head is quantized, so wte is only looked up: its rows are read, not mapped (a mapping keeps
    every faulted page and its neighbours resident)."""
    import pickle

    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    config = GPT2Config.from_file(model_dir / "config.json")
    table = load_weights(model_dir, config, dtype="int8")["wte.weight"]
    stored = load_file(model_dir / "model.safetensors")["transformer.wte.weight"]
    assert isinstance(table, weights_module.LookupTable)
    assert (table.shape, table.dtype) == (stored.shape, np.float32)
    ids = np.array([[5, 0, 999], [999, 3, 5]])
    np.testing.assert_array_equal(table[ids], stored[ids], strict=True)
    np.testing.assert_array_equal(np.asarray(table), stored, strict=True)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(table))[ids[0]], stored[ids[0]], strict=True)

    with open(model_dir / "model.safetensors", "r+b") as file:  # cut short under the loaded model
        file.truncate(table.tensor.offset + 100 * table.shape[1] * 4)
    with pytest.raises(WeightsError, match=r"tensor 'transformer\.wte\.weight' ends before its row 999: the file "
                                           r"was cut short after the model was loaded"):
        table[ids]


def test_an_untied_float32_embedding_is_read_by_row_and_a_tied_one_mapped(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path / "m")
    config = GPT2Config.from_file(model_dir / "config.json")
    assert isinstance(load_weights(model_dir, config)["wte.weight"], np.ndarray)
    head = np.ones((1000, 64), np.float32)
    rewrite_tensors(model_dir, lambda tensors: {**tensors, "lm_head.weight": head})
    weights = load_weights(model_dir, config)
    assert isinstance(weights["wte.weight"], weights_module.LookupTable)
    np.testing.assert_array_equal(weights["lm_head.weight"], head)
