"""The engine against transformers and against the NumPy reference, on checkpoints in the published format."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from tinygpt import reference
from tinygpt.errors import InputError, NonFiniteError
from tinygpt.model import Model
from tinygpt.weights import QuantizedWeight

# Tolerances. Each engine sums in float32, in its own order, through every layer; float32 keeps ~7
# significant digits, so two correct engines differ by roughly 1e-6 relative to the largest activations
# they pass through, amplified a little by each layer. Random models here have logits up to ~15 in size.
# Measured here: max |diff| ~2e-6 on the tiny model (logits up to ~4) and ~8e-5 at the full published shapes
# (logits up to ~15). The bounds leave about 10x / 6x above that and stay far below any real bug (a wrong
# bias, scale or mask moves logits by more than 0.1).
TINY_ATOL = 2e-5
FULL_ATOL = 5e-4


def hf_logits_and_hidden(hf_model, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """transformers' logits [B, T, V] and last hidden states [B, T, C] for ids [B, T]."""
    with torch.no_grad():
        out = hf_model(torch.tensor(ids), output_hidden_states=True)
    return out.logits.numpy(), out.hidden_states[-1].numpy()


def random_ids(vocab_size: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, shape)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from checkpoints import load_hf_model

    return Model.from_pretrained(tiny_model_dir), load_hf_model(tiny_model_dir)


@pytest.mark.parametrize("length", [1, 7, 128])
def test_tiny_logits_and_hidden_states_match_transformers(tiny, length):
    model, hf = tiny
    ids = random_ids(model.config.vocab_size, length, seed=length)
    hf_logits, hf_hidden = hf_logits_and_hidden(hf, ids[None])
    logits = model.logits(ids)
    assert logits.dtype == np.float32 and logits.shape == (length, 1000)
    np.testing.assert_allclose(logits, hf_logits[0], rtol=0, atol=TINY_ATOL)
    np.testing.assert_allclose(model.hidden_states(ids), hf_hidden[0], rtol=0, atol=TINY_ATOL)


def test_tiny_matches_the_numpy_reference(tiny):
    model, _ = tiny
    ids = random_ids(model.config.vocab_size, 40, seed=5)
    expected = reference.logits(ids, model.weights, model.config)
    np.testing.assert_allclose(model.logits(ids), expected, rtol=0, atol=TINY_ATOL)
    expected_hidden = reference.hidden_states(ids, model.weights, model.config)
    np.testing.assert_allclose(model.hidden_states(ids), expected_hidden, rtol=0, atol=TINY_ATOL)


@pytest.mark.parametrize("scaling", [{"scale_attn_by_inverse_layer_idx": True}, {"scale_attn_weights": False}])
def test_attention_scaling_options_match_transformers(tmp_path, scaling):
    """GPT-2 configs may also divide the scores by layer index + 1, or not scale them at all."""
    from checkpoints import TINY, build_gpt2_dir, load_hf_model

    model_dir = build_gpt2_dir(tmp_path / "m", **TINY, **scaling)
    model = Model.from_pretrained(model_dir)
    ids = random_ids(model.config.vocab_size, 30, seed=3)
    hf_logits, _ = hf_logits_and_hidden(load_hf_model(model_dir), ids[None])
    np.testing.assert_allclose(model.logits(ids), hf_logits[0], rtol=0, atol=TINY_ATOL)
    np.testing.assert_allclose(reference.logits(ids, model.weights, model.config), hf_logits[0], rtol=0,
                               atol=TINY_ATOL)


@pytest.mark.parametrize("shape_fixture", ["distilgpt2_shape_dir", "uer_shape_dir"])
def test_published_shapes_match_transformers(request, shape_fixture):
    from checkpoints import load_hf_model

    model_dir = request.getfixturevalue(shape_fixture)
    model, hf = Model.from_pretrained(model_dir), load_hf_model(model_dir)
    ids = random_ids(model.config.vocab_size, 2, 33, seed=7)
    hf_logits, hf_hidden = hf_logits_and_hidden(hf, ids)
    logits = model.logits(ids)
    assert logits.shape == (2, 33, model.config.vocab_size)
    print(f"{shape_fixture}: max |logits diff| = {np.abs(logits - hf_logits).max():.2e}, "
          f"max |logit| = {np.abs(hf_logits).max():.1f}")
    np.testing.assert_allclose(logits, hf_logits, rtol=0, atol=FULL_ATOL)
    np.testing.assert_allclose(model.hidden_states(ids), hf_hidden, rtol=0, atol=FULL_ATOL)


@pytest.mark.parametrize("all_positions", [True, False])
def test_cached_steps_equal_the_uncached_forward(distilgpt2_shape_dir, all_positions):
    """all_positions=False is the generation path: the last block runs its attention output and MLP for the
    prompt's last position only, so this also checks that the last layer's cache got every position."""
    model = Model.from_pretrained(distilgpt2_shape_dir)
    ids = random_ids(model.config.vocab_size, 24, seed=11)
    full = model.logits(ids)
    cache = model.new_cache(capacity=24)
    prompt_logits = model.step(cache, ids[None, :16], all_positions=all_positions)[0]
    step_logits = [model.step(cache, ids[None, t:t + 1])[0] for t in range(16, 24)]
    np.testing.assert_allclose(prompt_logits, full[:16] if all_positions else full[15], rtol=0, atol=FULL_ATOL)
    np.testing.assert_allclose(np.stack(step_logits), full[16:], rtol=0, atol=FULL_ATOL)
    assert cache.n_past == 24


def test_batch_rows_equal_each_sequence_alone(tiny):
    model, _ = tiny
    ids = random_ids(model.config.vocab_size, 2, 20, seed=3)
    batch = model.logits(ids)
    for row in range(2):
        np.testing.assert_allclose(batch[row], model.logits(ids[row]), rtol=0, atol=TINY_ATOL)


def test_left_padded_row_equals_the_sequence_alone(tiny):
    model, hf = tiny
    short = random_ids(model.config.vocab_size, 6, seed=4)
    long = random_ids(model.config.vocab_size, 10, seed=5)
    padded = np.stack([np.concatenate([np.zeros(4, np.int64), short]), long])
    nxt = np.array([[7], [8]])
    alone = model.logits(np.concatenate([short, [7]]))
    cache = model.new_cache(2, capacity=13, start=[4, 0])
    prompt = model.step(cache, padded, all_positions=True)
    step = model.step(cache, nxt)
    np.testing.assert_allclose(prompt[0, 4:], alone[:6], rtol=0, atol=TINY_ATOL)
    np.testing.assert_allclose(step[0], alone[6], rtol=0, atol=TINY_ATOL)
    np.testing.assert_allclose(step[1], model.logits(np.concatenate([long, [8]]))[-1], rtol=0, atol=TINY_ATOL)
    cache = model.new_cache(2, capacity=13, start=[4, 0])  # last positions only, as generation asks
    np.testing.assert_allclose(model.step(cache, padded)[0], alone[5], rtol=0, atol=TINY_ATOL)
    np.testing.assert_allclose(model.step(cache, nxt)[0], step[0], rtol=0, atol=TINY_ATOL)


def other_layout(tiny_model_dir, tmp_path, convert):
    """The tiny checkpoint re-saved the way the original gpt2 repo stores it: no ``transformer.`` prefix,
    with the causal-mask buffers, tensors passed through ``convert``."""
    import shutil

    model_dir = tmp_path / "other"
    shutil.copytree(tiny_model_dir, model_dir)
    stored = load_file(model_dir / "model.safetensors")
    P = 128
    tensors = {name.removeprefix("transformer."): convert(array) for name, array in stored.items()}
    for layer in range(2):
        tensors[f"h.{layer}.attn.bias"] = np.tril(np.ones((P, P), np.uint8))[None, None]
        tensors[f"h.{layer}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})
    return model_dir


def test_unprefixed_float16_file_with_mask_buffers(tiny_model_dir, tmp_path):
    model_dir = other_layout(tiny_model_dir, tmp_path, lambda a: a.astype(np.float16))
    model = Model.from_pretrained(model_dir)
    assert model.weights["h.0.attn.c_attn.weight"].dtype == np.float32
    rounded = {name: a.astype(np.float16).astype(np.float32)
               for name, a in Model.from_pretrained(tiny_model_dir).weights.items()}
    ids = random_ids(model.config.vocab_size, 30, seed=9)
    np.testing.assert_allclose(model.logits(ids), reference.logits(ids, rounded, model.config),
                               rtol=0, atol=TINY_ATOL)


def test_bfloat16_file(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file as save_torch

    model_dir = tmp_path / "bf16"
    model_dir.mkdir()
    (model_dir / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    stored = load_file(tiny_model_dir / "model.safetensors")
    save_torch({n: torch.from_numpy(a).to(torch.bfloat16) for n, a in stored.items()}, model_dir / "model.safetensors")
    model = Model.from_pretrained(model_dir)
    name = "transformer.h.1.mlp.c_fc.weight"
    expected = torch.from_numpy(stored[name]).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(model.weights["h.1.mlp.c_fc.weight"], expected)


def test_a_prompt_runs_every_product_on_tinygpts_kernels(tiny, monkeypatch):
    """A prefill calls no BLAS: its speed then does not depend on whether numpy or torch was imported before
    tinygpt (their thread pools spin by default and would share the cores with ours)."""
    model, _ = tiny

    def no_blas(*args, **kwargs):
        raise AssertionError("np.matmul called during a prefill")

    ids = random_ids(model.config.vocab_size, 2, 100, seed=3)  # 200 rows: every product on the GEMM path
    expected = model.step(model.new_cache(2, capacity=100), ids)
    monkeypatch.setattr("tinygpt.kernels.matmul.np.matmul", no_blas)
    np.testing.assert_array_equal(model.step(model.new_cache(2, capacity=100), ids), expected)


def test_prompts_do_not_depend_on_what_was_imported_first(tiny_model_dir):
    """The same prompt in a process that imported numpy, torch and transformers before tinygpt, and in one
    that imported tinygpt first: the same bits."""
    code = ("import sys\n"
            "if sys.argv[1] == 'torch-first':\n"
            "    import numpy, torch, transformers\n"
            "import numpy as np\n"
            "from tinygpt import Model\n"
            "m = Model.from_pretrained(sys.argv[2])\n"
            "ids = np.random.default_rng(3).integers(0, m.config.vocab_size, (1, 120))\n"
            "sys.stdout.write(m.step(m.new_cache(1, capacity=120), ids).tobytes().hex())\n")
    outputs = [subprocess.run([sys.executable, "-c", code, order, str(tiny_model_dir)], capture_output=True,
                              text=True, check=True, timeout=600).stdout for order in ("tinygpt-first", "torch-first")]
    assert outputs[0] and outputs[0] == outputs[1]


def test_going_past_the_context_is_an_error(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match="exceed the model's context of 128 positions"):
        model.logits(np.zeros(129, np.int64))
    cache = model.new_cache()
    model.step(cache, np.zeros((1, 128), np.int64))
    with pytest.raises(InputError, match="token position 128 is past the model's context of 128 positions"):
        model.step(cache, np.zeros((1, 1), np.int64))


def test_bad_cache_padding_is_an_error(tiny):
    """The forward pass hands ``start`` to attention unchecked, so new_cache must refuse what attention would."""
    model, _ = tiny
    for start in ([2, -1], [0, 8], np.array([0, 2**64 - 1], np.uint64)):
        with pytest.raises(InputError, match=r"start \(left padding per row\) must be 2 integers between 0 and "
                                             rf"capacity - 1 \(7\), got \{np.asarray(start).tolist()}"):
            model.new_cache(2, capacity=8, start=start)
    for start, shape in (([0, 0, 0], r"\[3\]"), ([0.7, 0], r"\[2\]"), ([[0], [0, 1]], "ragged")):
        with pytest.raises(InputError, match=r"start \(left padding per row\) must be 2 integers between 0 and "
                                             rf"capacity - 1 \(127\), got .* \(shape {shape}\)"):
            model.new_cache(2, start=start)


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": 2.0}, "batch_size must be an integer >= 1, got 2.0"),
    ({"capacity": 1.9}, r"cache capacity must be an integer between 1 and n_positions \(128\), got 1.9"),
    ({"capacity": 129}, r"cache capacity must be an integer between 1 and n_positions \(128\), got 129"),
])
def test_bad_cache_arguments_are_errors(tiny, options, message):
    model, _ = tiny
    with pytest.raises(InputError, match=message):
        model.new_cache(**options)


def test_a_cache_that_does_not_fit_the_model_is_an_error(tiny, tmp_path):
    """step writes into the cache without further checks, so a foreign or tampered cache must not get in."""
    from checkpoints import TINY, build_gpt2_dir

    model, _ = tiny
    other = Model.from_pretrained(build_gpt2_dir(tmp_path / "other", **{**TINY, "n_head": 2}))
    with pytest.raises(InputError, match=r"cache.keys does not fit this model: expected float32 \[2, 1, 4, 128, 16\]"):
        model.step(other.new_cache(), [[1]])
    with pytest.raises(InputError, match="step expects a KVCache from new_cache, got NoneType"):
        model.step(None, [[1]])
    cache = model.new_cache()
    cache.n_past = -1
    with pytest.raises(InputError, match=r"cache.n_past must be an integer between 0 and capacity \(128\), got -1"):
        model.step(cache, [[1]])
    cache = model.new_cache()
    cache.start = [0]
    with pytest.raises(InputError, match=r"cache.start must be int64 \[1\] in 0..127, got \[0\]"):
        model.step(cache, [[1]])


def test_ragged_or_empty_batches_are_errors(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match="rows all have the same length"):
        model.logits([[1, 2], [3]])
    with pytest.raises(InputError, match=r"non-empty \[T\] or \[B, T\] sequence, got shape \[0, 3\]"):
        model.hidden_states(np.zeros((0, 3), np.int64))


def test_out_of_vocabulary_id_names_its_position(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match=r"token id 1000 at position 3 is outside the vocabulary \(0\.\.999\)"):
        model.logits([1, 2, 3, 1000])
    with pytest.raises(InputError, match="must be integers"):
        model.logits([0.5, 1.0])
    with pytest.raises(InputError, match="non-empty"):
        model.logits([])


def dequantized(weights: dict) -> dict:
    """float32 weights equal to what an int8 model computes with: q * scale along the output axis."""
    out = {}
    for name, weight in weights.items():
        if isinstance(weight, QuantizedWeight):
            dequantized_rows = weight.q.astype(np.float32) * weight.scale[:, None]  # [out, in]
            out[name] = dequantized_rows if name == "lm_head.weight" else dequantized_rows.T  # Conv1D: [in, out]
        else:
            out[name] = weight
    return out


def test_int8_model_holds_its_linear_weights_as_int8(distilgpt2_shape_dir):
    model = Model.from_pretrained(distilgpt2_shape_dir, dtype="int8")
    quantized = [name for name, w in model.weights.items() if isinstance(w, QuantizedWeight)]
    assert len(quantized) == 4 * model.config.n_layer + 1  # every linear weight and the LM head
    assert all(model.weights[name].q.dtype == np.int8 for name in quantized)


def test_unknown_dtype_is_an_error(tiny_model_dir):
    with pytest.raises(ValueError, match="dtype must be one of float32, int8, got 'int4'"):
        Model.from_pretrained(tiny_model_dir, dtype="int4")



@pytest.mark.parametrize("batch", [1, 2])
def test_int8_rounds_activations_far_below_the_weights(distilgpt2_shape_dir, batch):
    """An int8 model computes with its quantized weights: against the float32 oracle on those weights
    (reference.py on q * scale), the only other difference is that every int8 product rounds its input rows to
    int16 steps (max|row| / 32767) and multiplies integers (kernels.intdot and kernels.gemm; their error bounds
    are tested there), in a prompt's many rows (50 here: the GEMM) as in decode (one row per sequence).

    Rounding is discontinuous, so no float32-level tolerance holds end to end: a row differing in its last
    bit from the oracle's can land on the neighbouring step. Measured on this model: the activations'
    rounding moves logits by 5.8e-3 to 7.4e-3 at most (rms 7.9e-4 to 1.1e-3); the weights' rounding moves
    them by 1.47 to 1.91 (rms 0.19 to 0.26), over 200 times more. The test allows 1 % of the weights' effect,
    at most and in rms."""
    int8 = Model.from_pretrained(distilgpt2_shape_dir, dtype="int8")
    ids = random_ids(int8.config.vocab_size, batch, 50 // batch, seed=17)
    oracle = np.stack([reference.logits(row, dequantized(int8.weights), int8.config) for row in ids])
    weights_effect = Model.from_pretrained(distilgpt2_shape_dir).logits(ids) - oracle
    cache = int8.new_cache(batch, capacity=ids.shape[1])
    int8.step(cache, ids[:, :16])
    decoded = np.stack([int8.step(cache, ids[:, t:t + 1]) for t in range(16, ids.shape[1])], axis=1)
    for name, logits in [("prompt", int8.logits(ids)), ("decode", decoded)]:
        effect = logits - (oracle if name == "prompt" else oracle[:, 16:])
        weights = weights_effect if name == "prompt" else weights_effect[:, 16:]
        print(f"{name}: activations' effect max {np.abs(effect).max():.2e}, rms {rms(effect):.2e}; "
              f"weights' max {np.abs(weights).max():.2e}, rms {rms(weights):.2e}")
        assert np.abs(effect).max() <= 0.01 * np.abs(weights).max(), name
        assert rms(effect) <= 0.01 * rms(weights), name


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


@pytest.fixture(scope="module")
def overflowing(small_gpt2_dir, tmp_path_factory):
    """The small GPT-2 (with its tokenizer) but one finite, huge weight: 3e38 in the first MLP's input
    projection. It passes the load check (every weight is finite), then the MLP overflows float32."""
    model_dir = shutil.copytree(small_gpt2_dir, tmp_path_factory.mktemp("overflowing") / "m")
    tensors = load_file(model_dir / "model.safetensors")
    tensors["transformer.h.0.mlp.c_fc.weight"][0, 0] = 3e38
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})
    return Model.from_pretrained(model_dir)


def test_nan_or_infinity_in_any_output_is_an_error_naming_where(overflowing):
    model = overflowing
    ids = model.tokenizer.encode("The tower is tall.")
    for output, call, place in [
        ("the logits", lambda: model.logits(ids), "position 0"),
        ("the hidden states", lambda: model.hidden_states(ids), "position 0"),
        ("the logits", lambda: model.logits([ids, ids]), "row 0, position 0"),
        ("the logits", lambda: model.step(model.new_cache(), [ids]), "row 0"),
    ]:
        with pytest.raises(NonFiniteError, match=f"NaN or infinity in {output} at {place}: the computation "
                                                 r"overflowed float32 \(extreme weights or activations\)"):
            call()
    with pytest.raises(NonFiniteError, match="^text 0: NaN or infinity in the hidden states at position 0"):
        model.embed(["The tower", "is tall"])
    with pytest.raises(NonFiniteError, match=rf"^the window of tokens 0..{len(ids) - 1}: NaN or infinity in the "
                                             "hidden states at position 0"):
        model.perplexity("The tower is tall.")
    with pytest.raises(NonFiniteError, match=rf"^the window of tokens 0..{len(ids) - 1} of document 0: NaN or "
                                             "infinity in the hidden states at position 0"):
        model.score([ids, ids[:2]])
    with pytest.raises(NonFiniteError, match=f"NaN or infinity in the model's logits after {len(ids)} tokens of "
                                             "output sequence 0"):
        model.generate(ids, max_new_tokens=3)
    assert issubclass(NonFiniteError, FloatingPointError)  # what generate raised before, still caught


def test_the_kv_cache_must_fit_in_memory(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match=r"a KV cache of 1000000000000 x 128 positions would need [\d,.]+ GiB of "
                                         r"memory, more than this machine's [\d,.]+ GiB: lower batch_size or capacity"):
        model.new_cache(10**12)


def test_numpy_integers_act_as_the_ints_they_hold(tiny):
    model, _ = tiny
    ids = random_ids(model.config.vocab_size, 2, 128, seed=3)
    caches = [model.new_cache(np.uint8(2), capacity=np.uint16(128), start=np.array([1, 0], np.uint8)),
              model.new_cache(2, capacity=128, start=[1, 0])]
    for cache in caches:
        model.step(cache, ids[:, :127])
    caches[0].n_past = np.int8(127)  # 127 + 1 wraps to -128 in int8 arithmetic
    np.testing.assert_array_equal(model.step(caches[0], ids[:, 127:]), model.step(caches[1], ids[:, 127:]))
    with pytest.raises(InputError, match="token position 128 is past the model's context of 128 positions"):
        model.step(caches[0], ids[:, :1])
