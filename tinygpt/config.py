"""The model's hyper-parameters, read from a Hugging Face ``config.json``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .checks import as_integer, count, real
from .errors import ConfigError
from .jsonfile import read_json_object

# Both names are the tanh approximation of GELU; transformers uses the second for newer checkpoints.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")

# Upper bounds of the sizes config.json gives, checked before anything is built or allocated for them (a
# config with n_layer 10000000 would otherwise have the load list 120 million tensor names before reading
# the weights). Each is far above every published GPT-2-family checkpoint (GPT-2 XL: 48 layers, 25 heads,
# n_embd 1600, 1024 positions, 50257 tokens; the largest GPT-2-architecture models have n_embd 5120, 2048
# positions and 100k-250k-token vocabularies), so no real model is refused; the weights file must then
# hold tensors of these sizes, which bounds everything sized from them.
MAX_SIZES = {
    "n_layer": 1024,
    "n_head": 1024,
    "n_embd": 65536,
    "n_positions": 1 << 20,
    "vocab_size": 1 << 22,
    "n_inner": 4 * 65536,
}


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_positions: int = 1024
    vocab_size: int = 50257
    layer_norm_epsilon: float = 1e-5
    n_inner: int | None = None  # None means 4 * n_embd
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True  # attention scores divided by sqrt(head_dim)
    scale_attn_by_inverse_layer_idx: bool = False  # ... and by layer index + 1
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    # task_specific_params["text-generation"] as (name, value) pairs, as written: the generate options the
    # pipeline and the command line use when a call does not set them (distilgpt2: do_sample, max_length 50).
    # tinygpt.generation.task_defaults picks and checks the options among them.
    text_generation_params: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.activation_function not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not supported; "
                f"tinygpt runs {' / '.join(SUPPORTED_ACTIVATIONS)} (GPT-2's tanh GELU)"
            )
        # Each field is stored as the plain Python value it holds (an np.int64 n_layer as an int, a JSON 1 as
        # the epsilon 1.0), so nothing computed from the config can overflow or wrap.
        for name in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
            self._store(name, count(getattr(self, name), name, minimum=1, maximum=MAX_SIZES[name], error=ConfigError))
        if self.n_inner is not None:
            self._store("n_inner", count(self.n_inner, "n_inner (null for 4 * n_embd)", minimum=1,
                                         maximum=MAX_SIZES["n_inner"], error=ConfigError))
        self._store("layer_norm_epsilon", real(self.layer_norm_epsilon, "layer_norm_epsilon",
                                               lambda epsilon: 0.0 < epsilon < math.inf, "a positive number",
                                               error=ConfigError))
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(self, name) is not None:
                token_id = as_integer(getattr(self, name))
                if token_id is None:
                    raise ConfigError(f"{name} must be an integer or null, got {getattr(self, name)!r}")
                self._store(name, token_id)
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) is not divisible by n_head ({self.n_head})")

    def _store(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # the dataclass is frozen: its checked values are set once, here

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def attention_scale(self, layer: int) -> float:
        """What layer ``layer``'s attention scores q.k are multiplied by before the softmax."""
        scale = 1.0 / math.sqrt(self.head_dim) if self.scale_attn_weights else 1.0
        return scale / (layer + 1) if self.scale_attn_by_inverse_layer_idx else scale

    @classmethod
    def from_dict(cls, raw: dict) -> "GPT2Config":
        model_type = raw.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"model_type {model_type!r} is not a GPT-2 model")
        # Old GPT-2 configs call the context length n_ctx.
        n_positions = raw.get("n_positions", raw.get("n_ctx", cls.n_positions))
        return cls(
            n_layer=raw.get("n_layer", cls.n_layer),
            n_head=raw.get("n_head", cls.n_head),
            n_embd=raw.get("n_embd", cls.n_embd),
            n_positions=n_positions,
            vocab_size=raw.get("vocab_size", cls.vocab_size),
            layer_norm_epsilon=raw.get("layer_norm_epsilon", cls.layer_norm_epsilon),
            n_inner=raw.get("n_inner"),
            activation_function=raw.get("activation_function", cls.activation_function),
            scale_attn_weights=raw.get("scale_attn_weights", True),
            scale_attn_by_inverse_layer_idx=raw.get("scale_attn_by_inverse_layer_idx", False),
            bos_token_id=raw.get("bos_token_id", cls.bos_token_id),
            eos_token_id=raw.get("eos_token_id", cls.eos_token_id),
            text_generation_params=_text_generation_params(raw.get("task_specific_params")),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "GPT2Config":
        path = Path(path)
        try:
            raw = read_json_object(path, ConfigError)
        except FileNotFoundError:
            raise ConfigError(f"{path}: not found (a model directory needs config.json)") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err}") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None


def _text_generation_params(tasks) -> tuple[tuple[str, object], ...]:
    """``task_specific_params["text-generation"]`` as (name, value) pairs (transformers 4.x pipelines read it;
    transformers 5 no longer does), once both are checked to be JSON objects."""
    if not tasks:
        return ()
    if not isinstance(tasks, dict):
        raise ConfigError(f"task_specific_params must be a JSON object (task name -> options), "
                          f"not a {type(tasks).__name__}")
    params = tasks.get("text-generation") or {}
    if not isinstance(params, dict):
        raise ConfigError("task_specific_params['text-generation'] must be a JSON object (option name -> value)")
    return tuple(params.items())
