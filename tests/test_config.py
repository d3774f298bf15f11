"""config.json -> GPT2Config: the published fields, and a clear error for every field tinygpt cannot use."""

import json
import shutil

import numpy as np
import pytest

from tinygpt.config import MAX_SIZES, ConfigError, GPT2Config
from tinygpt.errors import TinyGPTError


def test_unsupported_activation_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "activation_function": "relu"}))
    with pytest.raises(ConfigError, match=r"config\.json: activation_function 'relu' is not supported"):
        GPT2Config.from_file(tmp_path / "config.json")


def test_config_reads_published_fields(tmp_path):
    raw = {"model_type": "gpt2", "n_layer": 6, "n_head": 12, "n_embd": 768, "n_ctx": 1024, "vocab_size": 21128,
           "activation_function": "gelu_pytorch_tanh", "n_inner": None, "layer_norm_epsilon": 1e-5,
           "scale_attn_by_inverse_layer_idx": True, "bos_token_id": 50256, "eos_token_id": 50256}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = GPT2Config.from_file(tmp_path / "config.json")
    assert (config.n_positions, config.inner_dim, config.head_dim) == (1024, 3072, 64)
    assert config.scale_attn_by_inverse_layer_idx and config.vocab_size == 21128


def test_missing_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.json: not found"):
        GPT2Config.from_file(tmp_path / "config.json")


@pytest.mark.parametrize("field, value, message", [
    ("layer_norm_epsilon", None, "layer_norm_epsilon must be a positive number, got None"),
    ("layer_norm_epsilon", "1e-5", "layer_norm_epsilon must be a positive number, got '1e-5'"),
    ("layer_norm_epsilon", 0, "layer_norm_epsilon must be a positive number, got 0"),
    ("n_inner", 0, r"n_inner \(null for 4 \* n_embd\) must be an integer between 1 and 262144, got 0"),
    ("n_inner", "3072", r"n_inner \(null for 4 \* n_embd\) must be an integer between 1 and 262144, got '3072'"),
    ("n_layer", True, "n_layer must be an integer between 1 and 1024, got True"),
    ("n_head", 5, r"n_embd \(768\) is not divisible by n_head \(5\)"),
    ("n_positions", None, "n_positions must be an integer between 1 and 1048576, got None"),
    ("scale_attn_by_inverse_layer_idx", "yes", "scale_attn_by_inverse_layer_idx must be true or false"),
    ("eos_token_id", [50256], r"eos_token_id must be an integer or null, got \[50256\]"),
    ("model_type", "llama", "model_type 'llama' is not a GPT-2 model"),
])
def test_unusable_field_is_a_config_error_naming_it(tmp_path, field, value, message):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", field: value}))
    with pytest.raises(ConfigError, match=r"config\.json: " + message):
        GPT2Config.from_file(tmp_path / "config.json")


def test_integer_epsilon_and_null_token_ids_are_accepted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"layer_norm_epsilon": 1, "bos_token_id": None,
                                                      "eos_token_id": None}))
    config = GPT2Config.from_file(tmp_path / "config.json")
    assert config.layer_norm_epsilon == 1.0 and config.eos_token_id is None and config.bos_token_id is None


@pytest.mark.parametrize("field", sorted(MAX_SIZES))
def test_every_size_has_an_upper_bound(tmp_path, field):
    (tmp_path / "config.json").write_text(json.dumps({field: MAX_SIZES[field] + 1}))
    with pytest.raises(ConfigError, match=rf"config\.json: {field}.* must be an integer between 1 and "
                                          rf"{MAX_SIZES[field]}, got {MAX_SIZES[field] + 1}"):
        GPT2Config.from_file(tmp_path / "config.json")


def test_a_huge_layer_count_is_refused_before_the_weights_are_read(tiny_model_dir, tmp_path):
    """Fuzzing found n_layer 10000000 hanging the load: 12 tensor names per layer were listed first (7 GB)."""
    from tinygpt import Model

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "m")
    raw = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**raw, "n_layer": 10_000_000}))
    with pytest.raises(ConfigError, match=r"config\.json: n_layer must be an integer between 1 and 1024, "
                                          r"got 10000000"):
        Model.from_pretrained(model_dir)


def test_an_epsilon_too_large_for_a_float_is_a_config_error(tmp_path):
    """A 401-digit integer: float() of it raised a bare OverflowError."""
    (tmp_path / "config.json").write_text('{"layer_norm_epsilon": 1' + "0" * 400 + "}")
    with pytest.raises(ConfigError, match=r"config\.json: layer_norm_epsilon must be a positive number, got a "
                                          r"number too large for a float"):
        GPT2Config.from_file(tmp_path / "config.json")


@pytest.mark.parametrize("epsilon", [float("inf"), float("nan")])
def test_an_infinite_or_nan_epsilon_is_refused(epsilon):
    with pytest.raises(ConfigError, match="layer_norm_epsilon must be a positive number"):
        GPT2Config(layer_norm_epsilon=epsilon)


def test_numpy_values_are_stored_as_the_python_numbers_they_hold():
    config = GPT2Config(n_layer=np.uint64(2), n_head=np.int8(4), n_embd=np.int32(64), n_positions=np.int64(128),
                        vocab_size=np.uint16(1000), n_inner=np.int64(256), layer_norm_epsilon=np.float32(0.5),
                        eos_token_id=np.int64(7))
    fields = (config.n_layer, config.n_head, config.n_embd, config.n_positions, config.vocab_size, config.n_inner,
              config.eos_token_id)
    assert fields == (2, 4, 64, 128, 1000, 256, 7) and all(type(value) is int for value in fields)
    assert type(config.layer_norm_epsilon) is float and config.layer_norm_epsilon == 0.5


def test_config_errors_are_tinygpt_errors_and_value_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 0}))
    with pytest.raises(TinyGPTError) as error:
        GPT2Config.from_file(tmp_path / "config.json")
    assert isinstance(error.value, ConfigError) and isinstance(error.value, ValueError)
