"""OpenAI's request and response shapes for the endpoints ``tinygpt serve`` answers.

Requests are checked here, once, field by field: anything wrong is an :class:`APIError` whose message and
``param`` name the field, answered with OpenAI's error object and a 4xx status. Unknown fields are refused
(a misspelt ``max_token`` would otherwise be ignored silently). Fields OpenAI defines that these models cannot
honour (``suffix``, ``best_of`` above ``n``) are refused when set, and say why.

Responses are plain dicts in OpenAI's shapes, built by the functions at the end.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

# OpenAI's limits where they have one; LOGPROBS_MAX as vLLM's (OpenAI's legacy endpoint stopped at 5).
MAX_STOP_STRINGS = 4
LOGPROBS_MAX = 20
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class APIError(Exception):
    """An error answered with OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str, message: str) -> APIError:
    """A 400 for one field: the message names it."""
    return APIError(400, f"{param}: {message}", param=param, code="invalid_value")


# ------------------------------------------------------------------------------------------ field checks
def _integer(body: dict, name: str, default, *, minimum: int, maximum: int | None = None):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():  # JSON has one number type: 16.0 means 16
            value = int(value)
        else:
            raise invalid(name, f"must be an integer, got {_shown(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        span = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise invalid(name, f"must be {span}, got {value}")
    return int(value)


def _number(body: dict, name: str, default: float, *, minimum: float, maximum: float,
            minimum_open: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise invalid(name, f"must be a number, got {_shown(value)}")
    if value < minimum or (minimum_open and value == minimum) or value > maximum:
        low = f"above {minimum:g}" if minimum_open else f"at least {minimum:g}"
        raise invalid(name, f"must be {low} and at most {maximum:g}, got {value:g}")
    return float(value)


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"must be true or false, got {_shown(value)}")
    return value


def _shown(value) -> str:
    """A value for a message: its JSON-ish text, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_fields(body, allowed: frozenset[str], endpoint: str) -> None:
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}",
                       code="invalid_json")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(400, f"unknown field {unknown[0]!r} for {endpoint} (accepted: {', '.join(sorted(allowed))})",
                       param=unknown[0], code="unknown_field")


def _model(body: dict, served: str) -> str:
    name = body.get("model")
    if name is None:
        raise invalid("model", f"is required (this server serves {served!r})")
    if not isinstance(name, str):
        raise invalid("model", f"must be a string, got {_shown(name)}")
    if name != served:
        raise APIError(404, f"model {name!r} does not exist here: this server serves {served!r} (GET /v1/models)",
                       param="model", code="model_not_found")
    return name


# ------------------------------------------------------------------------------------------ /v1/completions
COMPLETION_FIELDS = frozenset({
    # OpenAI's
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
    "echo", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "user", "best_of", "suffix",
    # extensions, as vLLM and llama.cpp's server take them
    "top_k", "repetition_penalty", "ignore_eos",
})


@dataclass(frozen=True)
class CompletionParams:
    """A checked /v1/completions request. ``prompts``: each prompt as given, a str or a list of token ids."""

    model: str
    prompts: list[str | list[int]]
    max_tokens: int | None  # None: the default, cut to the room each prompt leaves
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    logit_bias: dict[int, float]
    ignore_eos: bool

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def parse_completion(body, served: str, *, max_n: int, vocab_size: int) -> CompletionParams:
    """Check a /v1/completions body. ``max_n``: the most sequences one request may run at once."""
    _check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    model = _model(body, served)
    n = _integer(body, "n", 1, minimum=1, maximum=max_n)
    best_of = _integer(body, "best_of", None, minimum=1)
    if best_of is not None and best_of != n:
        raise invalid("best_of", f"is not supported beyond n (got best_of={best_of}, n={n}): every sequence "
                      "generated is returned")
    suffix = body.get("suffix")
    if suffix not in (None, ""):
        raise invalid("suffix", "is not supported: GPT-2 models only continue text, they cannot fill in before a "
                      "suffix")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", f"must be a string, got {_shown(user)}")
    stream = _flag(body, "stream", False)
    include_usage = _stream_options(body.get("stream_options"), stream)
    return CompletionParams(
        model=model,
        prompts=_prompts(body.get("prompt"), vocab_size),
        max_tokens=_integer(body, "max_tokens", None, minimum=0),
        temperature=_number(body, "temperature", 1.0, minimum=0.0, maximum=2.0),
        top_p=_number(body, "top_p", 1.0, minimum=0.0, maximum=1.0),
        top_k=_integer(body, "top_k", 0, minimum=0) or 0,
        n=n,
        stop=_stop(body.get("stop")),
        seed=_integer(body, "seed", None, minimum=0, maximum=2**63 - 1),
        stream=stream,
        include_usage=include_usage,
        echo=_flag(body, "echo", False),
        logprobs=_integer(body, "logprobs", None, minimum=0, maximum=LOGPROBS_MAX),
        presence_penalty=_number(body, "presence_penalty", 0.0, minimum=-2.0, maximum=2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, minimum=-2.0, maximum=2.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, minimum=0.0, maximum=math.inf,
                                   minimum_open=True),
        logit_bias=_logit_bias(body.get("logit_bias"), vocab_size),
        ignore_eos=_flag(body, "ignore_eos", False),
    )


def _stream_options(options, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise invalid("stream_options", "is only allowed when stream is true")
    if not isinstance(options, dict):
        raise invalid("stream_options", f"must be an object, got {_shown(options)}")
    unknown = sorted(set(options) - {"include_usage"})
    if unknown:
        raise invalid("stream_options", f"unknown field {unknown[0]!r} (accepted: include_usage)")
    return _flag(options, "include_usage", False)


def _prompts(prompt, vocab_size: int) -> list[str | list[int]]:
    """OpenAI's four prompt forms: a string, a list of strings, a list of token ids, a list of such lists."""
    if prompt is None:
        raise invalid("prompt", "is required")
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise invalid("prompt", f"must be a string, a list of strings, a list of token ids or a list of such "
                      f"lists, got {_shown(prompt)}")
    if all(isinstance(item, str) for item in prompt):
        return list(prompt)
    if all(_is_token(item) for item in prompt):
        return [_token_ids(prompt, "prompt", vocab_size)]
    if all(isinstance(item, list) for item in prompt):
        return [_token_ids(ids, f"prompt[{index}]", vocab_size) for index, ids in enumerate(prompt)]
    raise invalid("prompt", "mixes kinds of entries: give a list of strings, a list of token ids, or a list of "
                  "token-id lists")


def _is_token(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _token_ids(ids: list, name: str, vocab_size: int) -> list[int]:
    if not ids:
        raise invalid(name, "is an empty list of token ids")
    for position, token in enumerate(ids):
        if not _is_token(token):
            raise invalid(name, f"entry {position} must be a token id (an integer), got {_shown(token)}")
        if not 0 <= token < vocab_size:
            raise invalid(name, f"token id {token} at position {position} is outside the vocabulary (valid ids: "
                          f"0..{vocab_size - 1})")
    return [int(token) for token in ids]


def _stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    strings = [stop] if isinstance(stop, str) else stop
    if not isinstance(strings, list) or not all(isinstance(s, str) and s for s in strings):
        raise invalid("stop", f"must be a non-empty string or a list of them, got {_shown(stop)}")
    if len(strings) > MAX_STOP_STRINGS:
        raise invalid("stop", f"takes at most {MAX_STOP_STRINGS} strings, got {len(strings)}")
    return tuple(strings)


def _logit_bias(bias, vocab_size: int) -> dict[int, float]:
    """OpenAI's logit_bias: token ids (as JSON object keys, so strings) -> a bias in [-100, 100]."""
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise invalid("logit_bias", f"must be an object of token id -> bias, got {_shown(bias)}")
    checked = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.isdigit() else None
        if token is None or token >= vocab_size:
            raise invalid("logit_bias", f"key {key!r} is not a token id (0..{vocab_size - 1})")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not -100 <= value <= 100:
            raise invalid("logit_bias", f"the bias of token {token} must be a number between -100 and 100, "
                          f"got {_shown(value)}")
        checked[token] = float(value)
    return checked


# ------------------------------------------------------------------------------------------ /v1/embeddings
EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True)
class EmbeddingParams:
    model: str
    inputs: list[str | list[int]]
    base64: bool


def parse_embedding(body, served: str, *, n_embd: int, vocab_size: int) -> EmbeddingParams:
    _check_fields(body, EMBEDDING_FIELDS, "/v1/embeddings")
    model = _model(body, served)
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", f"must be 'float' or 'base64', got {_shown(encoding)}")
    dimensions = _integer(body, "dimensions", None, minimum=1)
    if dimensions is not None and dimensions != n_embd:
        raise invalid("dimensions", f"this model's embeddings have {n_embd} dimensions and cannot be shortened, "
                      f"got {dimensions}")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", f"must be a string, got {_shown(user)}")
    inputs = body.get("input")
    if inputs is None:
        raise invalid("input", "is required")
    try:
        inputs = _prompts(inputs, vocab_size)
    except APIError as error:  # the same four forms as a prompt, under the field's own name
        raise invalid("input", error.message.split(": ", 1)[1].replace("prompt", "input")) from None
    return EmbeddingParams(model=model, inputs=inputs, base64=encoding == "base64")


# ------------------------------------------------------------------------------------------ responses
def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict:
    counts = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        counts["completion_tokens"] = completion_tokens
    counts["total_tokens"] = prompt_tokens + (completion_tokens or 0)
    return counts


def completion(request_id: str, model: str, created: int, choices: list[dict], usage_counts: dict | None) -> dict:
    """A text completion (the whole response, or one streamed chunk: the same object)."""
    body = {"id": request_id, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def choice(index: int, text: str, logprobs: dict | None, finish_reason: str | None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def models_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "tinygpt"}]}


def embeddings(model: str, vectors: list, prompt_tokens: int) -> dict:
    return {"object": "list", "model": model, "usage": usage(prompt_tokens),
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)]}


def now() -> int:
    return int(time.time())
