"""config.json -> GPT2Config: the published fields, and a clear error for every field tinygpt cannot use."""

import json

import pytest

from tinygpt.config import ConfigError, GPT2Config


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
    ("layer_norm_epsilon", 0, "layer_norm_epsilon must be a positive number, got 0.0"),
    ("n_inner", 0, "n_inner must be a positive integer or null, got 0"),
    ("n_inner", "3072", "n_inner must be a positive integer or null, got '3072'"),
    ("n_layer", True, "n_layer must be a positive integer, got True"),
    ("n_head", 5, r"n_embd \(768\) is not divisible by n_head \(5\)"),
    ("n_positions", None, "n_positions must be a positive integer, got None"),
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
