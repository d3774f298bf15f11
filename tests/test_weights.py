"""Loading safetensors checkpoints: both published layouts, other float types, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinygpt.config import GPT2Config
from tinygpt.weights import WeightsError, expected_shapes, load_weights


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def rewrite_tensors(model_dir, edit):
    """Apply ``edit`` to the checkpoint's name -> array dict and write it back."""
    path = model_dir / "model.safetensors"
    tensors = edit(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


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


