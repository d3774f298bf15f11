"""The GPT-2 forward pass on tinygpt's Numba kernels, with a preallocated KV cache.

A sequence is processed like ggml's gpt-2 example: the prompt goes through in one pass (every kernel sees
all its tokens at once), then each new token is one more pass of a single row. Keys and values of every
layer are written into a cache allocated up front, at position ``n_past``, so a step only computes the new
tokens. ``tinygpt.reference`` is the same computation without any of this machinery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import generation, scoring
from .config import GPT2Config, is_integer
# The kernels check no arguments, and the forward pass skips their checks (kernels.checks): every array it
# hands them is valid by construction (weights checked against the config at load, activations and cache
# allocated here).
from .kernels.attention import attention
from .kernels.matmul import linear, linear_nt
from .kernels.norm import layer_norm
from .kernels.quantized import linear_nt_int8
from .tokenizers import Tokenizer
from .weights import QuantizedWeight, load_weights

# Any of these in a model directory means it ships a tokenizer (Tokenizer.from_pretrained picks which).
TOKENIZER_FILES = ("vocab.json", "tokenizer.json", "vocab.txt")


def prompt_rules(config: GPT2Config, tokenizer) -> tuple[list[int], int | None]:
    """(ids every prompt starts with, default end-of-text id) for a model and its tokenizer.

    A BERT-vocabulary model (WordPiece with [CLS]/[SEP], like uer's Chinese GPT-2) was trained on lines
    laid out as ``[CLS] text [SEP]``: a prompt starts with [CLS], and [SEP] ends the text. Such configs
    inherit GPT-2's eos id 50256, which is not even in their vocabulary. A GPT-2 BPE model takes bare text
    and ends at its config's eos (<|endoftext|>).
    """
    cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls_id is not None and sep_id is not None:
        return [cls_id], sep_id
    eos = config.eos_token_id
    if eos is not None and 0 <= eos < config.vocab_size:
        return [], eos
    return [], getattr(tokenizer, "eos_token_id", None)


def project(x: np.ndarray, weight, bias: np.ndarray, **options) -> np.ndarray:
    """A linear layer, x [M, in] -> [M, out], on float32 or int8 weights (options: out, accumulate, gelu)."""
    if isinstance(weight, QuantizedWeight):
        return linear_nt_int8(x, weight.q, weight.scale, bias, **options)
    return linear(x, weight, bias, **options)


def lm_head(x: np.ndarray, weight) -> np.ndarray:
    """Logits x [M, n_embd] -> [M, vocab] from a [vocab, n_embd] head, float32 or int8."""
    if isinstance(weight, QuantizedWeight):
        return linear_nt_int8(x, weight.q, weight.scale)
    return linear_nt(x, weight)


class InputError(ValueError):
    """Token ids the model cannot take: wrong shape, outside the vocabulary, or past the context length."""


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to ``capacity`` positions.

    keys, values: [n_layer, B, H, capacity, D] float32. ``n_past`` positions are filled. ``start[b]`` is
    the first real position of row b; earlier positions are left padding, masked out of attention.
    """

    keys: np.ndarray
    values: np.ndarray
    start: np.ndarray
    n_past: int = 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class Model:
    """A GPT-2-family language model ready to run.

    Build one with :meth:`from_pretrained`. ``logits`` and ``hidden_states`` run whole sequences;
    ``new_cache`` + ``step`` are the incremental interface generation uses.
    """

    def __init__(self, config: GPT2Config, weights: dict[str, np.ndarray], tokenizer=None):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        # How text becomes a prompt and where generation stops by default; both derived from the files and
        # both plain attributes, so a user can override them.
        self.prompt_prefix_ids, self.eos_token_id = prompt_rules(config, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        dtype: str = "float32") -> "Model":
        """Load a model from a local directory or a Hugging Face Hub repo id (e.g. "distilgpt2").

        Reads ``config.json``, ``model.safetensors`` and, when its files are there, the tokenizer
        (``model.tokenizer``; None otherwise). Hub repos are downloaded into the Hugging Face cache, only
        the files tinygpt reads; ``revision`` picks a branch, tag or commit. ``dtype="int8"`` quantizes the
        linear weights and the LM head at load (one scale per output channel): a quarter of the bytes to
        read per token. Activations stay float32 between layers; decode products round them to int16 steps
        inside the kernel (see ``tinygpt.kernels.quantized``).
        """
        from .hub import resolve_model_dir

        path = resolve_model_dir(name_or_path, revision)
        config = GPT2Config.from_file(path / "config.json")
        weights = load_weights(path, config, dtype)
        tokenizer = None
        if any((path / name).is_file() for name in TOKENIZER_FILES):
            tokenizer = Tokenizer.from_pretrained(path)
            if tokenizer.vocab_size > config.vocab_size:
                raise InputError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but config.json's "
                                 f"vocab_size is {config.vocab_size}: they do not belong to the same model")
        return cls(config, weights, tokenizer)

    # ---- whole sequences -------------------------------------------------------------------------

    def logits(self, input_ids) -> np.ndarray:
        """Next-token logits at every position.

        input_ids: [T] (list or array) -> float32 [T, vocab]; or [B, T] -> [B, T, vocab].
        """
        return self._run_whole(input_ids, output="logits")

    def hidden_states(self, input_ids) -> np.ndarray:
        """Final hidden states after ``ln_f`` (like transformers' ``last_hidden_state``).

        input_ids: [T] -> float32 [T, n_embd]; or [B, T] -> [B, T, n_embd].
        """
        return self._run_whole(input_ids, output="hidden")

    def _run_whole(self, input_ids, output: str) -> np.ndarray:
        ids = self._check_ids(input_ids)
        batched = ids.ndim == 2
        ids2d = ids if batched else ids[None, :]
        cache = self.new_cache(ids2d.shape[0], capacity=ids2d.shape[1])
        result = self._forward(cache, ids2d, all_positions=True, output=output)
        return result if batched else result[0]

    # ---- incremental interface ---------------------------------------------------------------------

    def new_cache(self, batch_size: int = 1, *, capacity: int | None = None, start=None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``capacity`` tokens (default n_positions).

        start: [batch_size] ints, the number of left-padding positions of each row (default 0).
        """
        cfg = self.config
        capacity = cfg.n_positions if capacity is None else capacity
        if not is_integer(batch_size) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not is_integer(capacity) or not 1 <= capacity <= cfg.n_positions:
            raise InputError(f"cache capacity must be an integer between 1 and n_positions ({cfg.n_positions}), "
                             f"got {capacity!r}")
        shape = (cfg.n_layer, batch_size, cfg.n_head, capacity, cfg.head_dim)
        start = np.zeros(batch_size, np.int64) if start is None else _padding_per_row(start, batch_size)
        if start.min() < 0 or start.max() >= capacity:
            raise InputError(f"start (left padding per row) must be >= 0 and below the capacity ({capacity}), "
                             f"got {start.tolist()}")
        return KVCache(np.zeros(shape, np.float32), np.zeros(shape, np.float32), start)

    def step(self, cache: KVCache, input_ids, *, all_positions: bool = False) -> np.ndarray:
        """Feed new tokens to every row of ``cache`` and return next-token logits.

        input_ids: [B, T] ints, appended at position ``cache.n_past``.
        Returns float32 [B, vocab] for the last new token (or [B, T, vocab] with all_positions).
        """
        self._check_cache(cache)
        ids = self._check_ids(input_ids)
        if ids.ndim != 2 or ids.shape[0] != cache.batch_size:
            raise InputError(f"step expects ids of shape [{cache.batch_size}, T], got {list(ids.shape)}")
        return self._forward(cache, ids, all_positions=all_positions, output="logits")

    def _check_cache(self, cache) -> None:
        """A cache this model's ``new_cache`` could have made: the forward pass writes into it unchecked."""
        if not isinstance(cache, KVCache):
            raise InputError(f"step expects a KVCache from new_cache, got {type(cache).__name__}")
        cfg = self.config
        layout = (cfg.n_layer, cache.batch_size, cfg.n_head, cache.capacity, cfg.head_dim)
        for name in ("keys", "values"):
            array = getattr(cache, name)
            if not (isinstance(array, np.ndarray) and array.shape == layout and array.dtype == np.float32
                    and array.flags.c_contiguous):
                raise InputError(f"cache.{name} does not fit this model: expected float32 {list(layout)} "
                                 f"[n_layer, batch, n_head, capacity, head_dim]; was it made by another model?")
        start = cache.start
        if not (isinstance(start, np.ndarray) and start.dtype == np.int64 and start.shape == (cache.batch_size,)
                and 0 <= start.min() and start.max() < cache.capacity):
            raise InputError(f"cache.start must be int64 [{cache.batch_size}] in 0..{cache.capacity - 1}, "
                             f"got {start!r}")
        if not is_integer(cache.n_past) or not 0 <= cache.n_past <= cache.capacity:
            raise InputError(f"cache.n_past must be an integer in 0..{cache.capacity}, got {cache.n_past!r}")

    # ---- text ------------------------------------------------------------------------------------------

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of ``text`` as a generation prompt: ``prompt_prefix_ids`` (e.g. [CLS]) + the text's ids."""
        return [*self.prompt_prefix_ids, *self._require_tokenizer().encode(text)]

    def decode(self, ids) -> str:
        """Text of generated ids, without special tokens ([CLS], [PAD], <|endoftext|>, ...)."""
        return self._require_tokenizer().decode(ids, skip_special_tokens=True)

    # ---- generation and scoring (tinygpt.generation / tinygpt.scoring do the work) -----------------

    def generate(self, input_ids, **options) -> list[list[int]]:
        """Continue one prompt or a batch; see :func:`tinygpt.generation.generate` for the options."""
        return generation.generate(self, input_ids, **options)

    def stream(self, input_ids, **options) -> Iterator[str]:
        """Yield the continuation's text as it is produced; see :func:`tinygpt.generation.stream`."""
        return generation.stream(self, input_ids, **options)

    def perplexity(self, text: str, *, stride: int | None = None, max_length: int | None = None,
                   progress=None) -> float:
        """Perplexity of ``text`` by transformers' sliding-window method (windows of ``max_length``, default
        n_positions, every ``stride`` tokens, default half a window); see :func:`tinygpt.scoring.perplexity`."""
        return scoring.perplexity(self, self._require_tokenizer().encode(text), stride=stride,
                                  max_length=max_length, progress=progress)

    def embed(self, texts: str | list[str]) -> np.ndarray:
        """Mean-pooled final hidden states: float32 [n_embd] for one text, [N, n_embd] for a list."""
        if isinstance(texts, str):
            return scoring.mean_pooled(self, self._text_ids(texts, 0))
        if isinstance(texts, (bytes, bytearray)):
            raise TypeError(f"embed takes a str or a list of str, got {type(texts).__name__}")
        texts = list(texts)
        if not texts:
            raise ValueError("embed needs at least one text, got an empty list")
        return np.stack([scoring.mean_pooled(self, self._text_ids(text, i)) for i, text in enumerate(texts)])

    def _text_ids(self, text: str, index: int) -> list[int]:
        ids = self._require_tokenizer().encode(text)
        if not ids:
            raise ValueError(f"text {index} ({text!r}) has no tokens to embed")
        if len(ids) > self.config.n_positions:
            raise ValueError(f"text {index} has {len(ids)} tokens, more than the model's context of "
                             f"{self.config.n_positions} positions")
        return ids

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer (its directory had no tokenizer files); pass token ids")
        return self.tokenizer

    # ---- the forward pass ---------------------------------------------------------------------------

    def _forward(self, cache: KVCache, ids: np.ndarray, all_positions: bool, output: str) -> np.ndarray:
        cfg, w = self.config, self.weights
        B, T = ids.shape
        n_past = cache.n_past
        if n_past + T > cfg.n_positions:
            raise InputError(
                f"token position {n_past + T - 1} is past the model's context of {cfg.n_positions} positions"
            )
        if n_past + T > cache.capacity:
            raise InputError(f"token position {n_past + T - 1} is past the cache's {cache.capacity} positions")
        H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
        filled = n_past + T  # cache positions filled once every layer has run (T may shrink below)
        # Left-padded rows count their positions from their first real token, as transformers does.
        positions = np.maximum(n_past + np.arange(T)[None, :] - cache.start[:, None], 0)  # [B, T]
        x = (w["wte.weight"][ids] + w["wpe.weight"][positions]).reshape(B * T, C)  # residual stream [BT, C]
        for layer in range(cfg.n_layer):
            p = f"h.{layer}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], cfg.layer_norm_epsilon)
            qkv = project(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).reshape(B, T, 3, H, D)
            cache.keys[layer, :, :, n_past:n_past + T] = qkv[:, :, 1].transpose(0, 2, 1, 3)  # [B, H, T, D]
            cache.values[layer, :, :, n_past:n_past + T] = qkv[:, :, 2].transpose(0, 2, 1, 3)
            q_past, q = n_past, qkv[:, :, 0]  # queries [B, T, H, D] at positions n_past..
            if layer == cfg.n_layer - 1 and not all_positions and T > 1:
                # Every layer's keys and values went to the cache, but past this point only the last
                # position reaches the output: run the rest of the last block for that row alone.
                q_past, q, T = n_past + T - 1, q[:, -1:], 1
                x = np.ascontiguousarray(x.reshape(B, -1, C)[:, -1])
            heads = attention(np.ascontiguousarray(q), cache.keys[layer], cache.values[layer], q_past,
                              cache.start, cfg.attention_scale(layer))  # [B, T, C]
            project(heads.reshape(B * T, C), w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"],
                    out=x, accumulate=True)  # x += attention output
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], cfg.layer_norm_epsilon)
            inner = project(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], gelu=True)  # [BT, I]
            project(inner, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], out=x, accumulate=True)
        cache.n_past = filled
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], cfg.layer_norm_epsilon)
        out = x if output == "hidden" else lm_head(x, w["lm_head.weight"])
        return out.reshape(B, T, -1) if all_positions else out

    def _check_ids(self, input_ids) -> np.ndarray:
        try:
            ids = np.asarray(input_ids)
        except ValueError:  # NumPy: "inhomogeneous shape"
            raise InputError("token ids must be a [T] or [B, T] sequence whose rows all have the same length "
                             "(generate takes prompts of different lengths)") from None
        if ids.ndim not in (1, 2) or 0 in ids.shape:
            raise InputError(f"token ids must be a non-empty [T] or [B, T] sequence, got shape {list(ids.shape)}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:  # two reductions: this runs every step
            where = tuple(int(i) for i in np.argwhere((ids < 0) | (ids >= self.config.vocab_size))[0])
            raise InputError(
                f"token id {int(ids[where])} at position {where if ids.ndim == 2 else where[0]} is outside "
                f"the vocabulary (size {self.config.vocab_size})"
            )
        if ids.shape[-1] > self.config.n_positions:
            raise InputError(
                f"{ids.shape[-1]} tokens exceed the model's context of {self.config.n_positions} positions"
            )
        return ids.astype(np.int64, copy=False)


def _padding_per_row(start, batch_size: int) -> np.ndarray:
    """``start`` as int64 [batch_size]: whole numbers only (0.7 rows of padding is a mistake, not 0)."""
    try:
        values = np.asarray(start)
    except ValueError:
        values = None
    if values is None or values.shape != (batch_size,) or not (
            np.issubdtype(values.dtype, np.integer) and values.dtype != np.bool_):
        shape = "ragged" if values is None else values.shape
        raise InputError(f"start must hold one integer per row ({batch_size}), got {start!r} (shape {shape})")
    return values.astype(np.int64)
