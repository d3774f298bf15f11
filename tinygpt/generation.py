"""Text generation on tinygpt's KV cache, with the semantics of transformers' ``generate``.

One call = one request: ``generate`` allocates its own KV cache and random streams and keeps no state on the
model, so several threads may generate on one shared model at once.

How a batch runs: prompts of different lengths are left-padded to the longest, the padding is masked through
the cache's ``start``, and the whole batch goes through the model in one pass; then every step feeds each
unfinished row its last token (finished rows are fed a pad token and their output no longer changes). Each
output row draws its random numbers from its own stream, child ``i`` of ``SeedSequence(seed)`` for output row
``i``, so a row's tokens depend on its prompt, the seed and its row index, never on the other rows.

Next-token choice is :mod:`tinygpt.sampling` (transformers' logits processors). Everything a call is given is
checked once, in :func:`_prepare`; the decode loop then feeds the model ids it chose itself, through the
model's internal step, which checks nothing again.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass

import numpy as np

from . import checks
from .errors import ConfigError, InputError, NonFiniteError
from .sampling import process_logits, sample_token

__all__ = ["GenerationOptions", "generate", "stream", "set_seed"]

# transformers generates this many new tokens when neither max_new_tokens nor max_length is given.
DEFAULT_NEW_TOKENS = 20
# The options that only steer sampling: greedy decoding ignores them.
SAMPLING_ONLY_OPTIONS = ("temperature", "top_k", "top_p", "seed")

_default_seed: int | None = None
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def set_seed(seed: int | None) -> None:
    """Make ``seed`` the seed of every later call that passes ``seed=None`` (None: fresh entropy again).

    Each such call starts from this seed afresh, so the same call gives the same output every time and in
    every process.
    """
    global _default_seed
    _default_seed = None if seed is None else checks.count(seed, "seed")


# ------------------------------------------------------------------------------------------------ options
class _FromModel(enum.Enum):
    EOS = "the model's eos_token_id"

    def __repr__(self) -> str:
        return f"<{self.value}>"


@dataclass(frozen=True)
class GenerationOptions:
    """Everything ``generate`` and ``stream`` accept besides the model, the prompt(s) and the streamer.

    Lengths follow transformers: ``max_new_tokens`` counts generated tokens only, ``max_length`` counts the
    prompt too (per prompt: a batch does not change a row's budget); max_new_tokens wins when both are given
    (with a warning); with neither, 20 new tokens, cut at the model's context. ``top_k`` 0 or None and
    ``top_p`` 1.0 turn those filters off; temperature, top_k, top_p and seed only matter when ``do_sample``
    (set to other values without it, they bring a warning, as in transformers).
    ``eos_token_id``: an id, a list of ids, or None for none; by default ``model.eos_token_id``. ``stop``: strings
    that end a row once its decoded continuation contains one. ``pad_token_id``: the id fed to padding and to
    finished rows (never returned); by default the lowest EOS id, else 0.
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    num_return_sequences: int = 1
    seed: int | None = None
    eos_token_id: int | Sequence[int] | None | _FromModel = _FromModel.EOS
    stop: str | Sequence[str] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        # Numbers are stored as the Python numbers they hold (np.uint8(9) becomes 9, Fraction(1, 3) a float),
        # so no later arithmetic wraps around or meets a type NumPy cannot take.
        def store(name: str, value) -> None:
            object.__setattr__(self, name, value)

        for name in ("max_new_tokens", "max_length"):
            if getattr(self, name) is not None:
                store(name, checks.count(getattr(self, name), name, minimum=1))
        # Its bound is the memory the outputs need, checked against the model in _prepare.
        store("num_return_sequences", checks.count(self.num_return_sequences, "num_return_sequences", minimum=1))
        store("do_sample", checks.flag(self.do_sample, "do_sample"))
        if self.num_return_sequences > 1 and not self.do_sample:
            raise InputError(
                f"num_return_sequences={self.num_return_sequences} needs do_sample=True: greedy decoding "
                "would return the same sequence every time"
            )
        if self.do_sample:
            if self.top_k is not None:
                store("top_k", checks.count(self.top_k, "top_k"))
            store("temperature", checks.real(self.temperature, "temperature", _positive_finite,
                                             "a positive finite number (for greedy decoding use do_sample=False)"))
            store("top_p", checks.real(self.top_p, "top_p", lambda p: 0 <= p <= 1, "a number between 0 and 1"))
        store("repetition_penalty", checks.real(self.repetition_penalty, "repetition_penalty", _positive_finite,
                                                "a positive finite number (1.0: no penalty)"))
        if self.seed is not None:
            store("seed", checks.count(self.seed, "seed"))
        if self.eos_token_id is not _FromModel.EOS:
            _listed_eos_ids(self.eos_token_id)
        _stop_strings(self.stop)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple of strings (empty when None)."""
        return _stop_strings(self.stop)

    def unused_sampling_options(self) -> list[str]:
        """``name=value`` of each sampling-only option set away from its default while not sampling."""
        if self.do_sample:
            return []
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        # array_equal: a plain yes or no whatever the value is (== on an array gives an array).
        return [f"{name}={getattr(self, name)!r}" for name in SAMPLING_ONLY_OPTIONS
                if not np.array_equal(getattr(self, name), defaults[name])]


def _positive_finite(number: float) -> bool:
    return 0 < number < math.inf


def _is_collection(value) -> bool:
    """A list, tuple or set, say; not a string or bytes (collections of characters) nor a one-pass iterator."""
    return isinstance(value, (Sequence, Set)) and not isinstance(value, (str, bytes, bytearray))


def _stop_strings(stop) -> tuple[str, ...]:
    if stop is not None and not isinstance(stop, str) and not _is_collection(stop):
        raise InputError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    strings = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    bad = [s for s in strings if not isinstance(s, str) or not s]
    if bad:
        raise InputError(f"stop must be a non-empty string or a list of them, got {bad[0]!r} in it")
    return strings


# ---------------------------------------------------------------------------------------------- the request
class _ContinuationText:
    """Decodes one row's new tokens as they come and watches for stop strings in the text."""

    def __init__(self, tokenizer, stop_strings: tuple[str, ...]):
        self._decoder = tokenizer.incremental_decoder(skip_special_tokens=True)
        self._stop_strings = stop_strings
        # A stop string completed by a new piece starts at most this many characters before the piece.
        self._overlap = max(map(len, stop_strings), default=1) - 1
        self._tail = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token: (the text it completed, whether a stop string has now appeared)."""
        piece = self._decoder.push(token_id)
        window = self._tail + piece
        self._tail = window[-self._overlap:] if self._overlap else ""
        return piece, any(stop in window for stop in self._stop_strings)

    def flush(self) -> str:
        return self._decoder.flush()


@dataclass
class _Row:
    """One output sequence: its prompt and the tokens generated so far."""

    index: int  # its place in the output
    ids: list[int]
    budget: int  # how many more tokens it may generate
    rng: np.random.Generator | None
    text: _ContinuationText | None
    done: bool = False


@dataclass(frozen=True)
class _Request:
    """Validated options resolved against one model."""

    options: GenerationOptions
    eos_ids: frozenset[int]
    pad_id: int
    n_positions: int


def generate(model, input_ids, *, streamer: Callable[[str], object] | None = None, **options) -> list[list[int]]:
    """Continue one prompt or a batch of prompts.

    input_ids: one prompt (list or 1-D array of ints) or a batch (list of such lists, lengths may differ,
    or a 2-D array). options: the fields of :class:`GenerationOptions` (max_new_tokens, max_length,
    do_sample, temperature, top_k, top_p, repetition_penalty, num_return_sequences, seed, eos_token_id, stop,
    pad_token_id). streamer: called with each piece of decoded text as tokens are produced (one output
    sequence only; needs ``model.tokenizer``); the pieces join to the decoded continuation.

    Returns one list of ids per output sequence, prompt included, prompt-major (each prompt's
    num_return_sequences outputs together), unpadded, ending at the first EOS or stop-string token if any.
    Bad arguments raise :class:`~tinygpt.errors.InputError`; NaN or infinite logits (extreme weights)
    :class:`~tinygpt.errors.NonFiniteError`.
    """
    if streamer is not None and not callable(streamer):
        raise InputError(f"streamer must be callable with a str, got {type(streamer).__name__}")
    rows, request = _prepare(model, input_ids, GenerationOptions(**options),
                             text_for=None if streamer is None else "a streamer")
    for batch in _batches_that_fit(rows, request.n_positions):
        for pieces in _decode(model, batch, request):
            if streamer is not None and pieces[0]:
                streamer(pieces[0])
    return [row.ids for row in rows]


def stream(model, input_ids, **options) -> Iterator[str]:
    """Generate for one prompt and yield the decoded text piece by piece as it is produced.

    Takes the options of :func:`generate` (except streamer); needs ``model.tokenizer``. The pieces join to
    ``tokenizer.decode(continuation, skip_special_tokens=True)``. Options are checked now, the model runs
    as the iterator is consumed.
    """
    rows, request = _prepare(model, input_ids, GenerationOptions(**options), text_for="stream()")
    return _text_of_first_row(model, rows, request)


def _text_of_first_row(model, rows: list[_Row], request: _Request) -> Iterator[str]:
    for pieces in _decode(model, rows, request):
        if pieces[0]:
            yield pieces[0]


def _prepare(model, input_ids, options: GenerationOptions, text_for: str | None) -> tuple[list[_Row], _Request]:
    """Check everything against the model and lay out the output rows (with their random streams).

    text_for: what follows the decoded text as it comes ("stream()", "a streamer"), if anything: it follows
    one output sequence.
    """
    config = model.config
    _warn_of_unused_sampling_options(options)
    prompts = _as_prompts(input_ids, config.vocab_size)
    eos_ids = _eos_ids(options.eos_token_id, model)
    pad_id = (checks.token_id(options.pad_token_id, config.vocab_size, "pad_token_id")
              if options.pad_token_id is not None else min(eos_ids, default=0))
    budgets = _new_token_budgets([len(p) for p in prompts], options, config.n_positions)
    stop_strings = options.stop_strings
    decode_text = text_for is not None
    if (stop_strings or decode_text) and getattr(model, "tokenizer", None) is None:
        need = "stop strings need" if stop_strings else "streaming needs"
        raise InputError(f"{need} the model's tokenizer to decode tokens, and model.tokenizer is None")

    n = options.num_return_sequences
    n_rows = len(prompts) * n
    if decode_text and n_rows != 1:
        raise InputError(f"{text_for} follows one output sequence, but this request makes {n_rows} "
                         "(one prompt and num_return_sequences=1 only)")
    _check_memory(config, prompts, budgets, n)
    rngs = _row_generators(options.seed, n_rows) if options.do_sample else [None] * n_rows
    rows = [
        _Row(
            index=index * n + copy,
            ids=list(prompt),
            budget=budget,
            rng=rngs[index * n + copy],
            text=_ContinuationText(model.tokenizer, stop_strings) if stop_strings or decode_text else None,
        )
        for index, (prompt, budget) in enumerate(zip(prompts, budgets))
        for copy in range(n)
    ]
    return rows, _Request(options, eos_ids, pad_id, config.n_positions)


def _warn_at_caller(message: str) -> None:
    """A UserWarning attributed to the first line outside tinygpt: the user's call, however it got here
    (Model.generate, the pipeline, stream)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_of_unused_sampling_options(options: GenerationOptions) -> None:
    unused = options.unused_sampling_options()
    if unused:
        # transformers warns too, and decodes greedily all the same.
        _warn_at_caller(f"sampling options have no effect without do_sample=True: {', '.join(unused)} (greedy "
                        "decoding ignores them; set do_sample=True to sample)")


def _as_prompts(input_ids, vocab_size: int) -> list[list[int]]:
    """One prompt or a batch -> a list of prompts (lists of Python ints), each checked against the vocabulary."""
    if isinstance(input_ids, np.ndarray):
        if input_ids.ndim not in (1, 2):
            raise InputError(f"input_ids must be 1-D (one prompt) or 2-D (a batch), got shape {input_ids.shape}")
        prompts = list(input_ids) if input_ids.ndim == 2 else [input_ids]
    elif isinstance(input_ids, Sequence) and not isinstance(input_ids, (str, bytes)):
        is_batch = len(input_ids) > 0 and _is_id_sequence(input_ids[0])
        prompts = list(input_ids) if is_batch else [input_ids]
    else:
        raise InputError(f"input_ids must be a list or array of token ids, got {type(input_ids).__name__}")
    if not prompts:
        raise InputError("input_ids is an empty batch")
    return [_prompt_ids(prompt, index, vocab_size) for index, prompt in enumerate(prompts)]


def _is_id_sequence(value) -> bool:
    return isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes))


def _prompt_ids(prompt, index: int, vocab_size: int) -> list[int]:
    """Prompt ``index`` of a request as a list of ids, checked in one vectorised pass."""
    if not _is_id_sequence(prompt):
        raise InputError(f"prompt {index} must be a list of token ids, got {type(prompt).__name__}")
    if len(prompt) == 0:
        raise InputError(f"prompt {index} is empty: generation needs at least one token to start from")
    try:
        ids = checks.token_ids(prompt, vocab_size)
    except InputError as error:
        raise InputError(f"prompt {index}: {error}") from None
    if ids.ndim != 1:
        raise InputError(f"prompt {index} must be a flat list of token ids, got shape {list(ids.shape)}")
    return ids.tolist()


def _eos_ids(eos_token_id, model) -> frozenset[int]:
    if eos_token_id is _FromModel.EOS:
        eos_token_id = model.eos_token_id
    vocab_size = model.config.vocab_size
    return frozenset(checks.token_id(token, vocab_size, "eos_token_id") for token in _listed_eos_ids(eos_token_id))


def _listed_eos_ids(eos_token_id) -> tuple:
    """An eos_token_id option as a tuple of (still unchecked) ids."""
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, numbers.Integral):
        return (eos_token_id,)
    if isinstance(eos_token_id, np.ndarray) and eos_token_id.ndim == 1:  # ids as NumPy gives them
        return tuple(eos_token_id)
    if not _is_collection(eos_token_id):
        raise InputError(f"eos_token_id must be a token id, a list of token ids or None, got {eos_token_id!r}")
    return tuple(eos_token_id)


def _new_token_budgets(lengths: list[int], options: GenerationOptions, n_positions: int) -> list[int]:
    """How many tokens each prompt may add, with transformers' rules; never past the model's context."""
    if options.max_new_tokens is not None:
        if options.max_length is not None:
            _warn_at_caller(f"both max_new_tokens ({options.max_new_tokens}) and max_length "
                            f"({options.max_length}) are set; max_new_tokens takes precedence")
        budgets = [options.max_new_tokens] * len(lengths)
    elif options.max_length is not None:
        budgets = [options.max_length - length for length in lengths]
    else:
        budgets = [min(DEFAULT_NEW_TOKENS, n_positions - length) for length in lengths]
    context = f"the model's context of {n_positions} positions (config.n_positions)"
    for index, (length, budget) in enumerate(zip(lengths, budgets)):
        has = f"prompt {index} has {plural(length, 'token')}"
        if length >= n_positions:
            raise InputError(f"{has} and fills {context}: there is no room for a new token")
        if budget < 1:
            raise InputError(f"{has} but max_length is {options.max_length}: raise max_length or set max_new_tokens")
        if length + budget > n_positions:
            # Only a length option can ask for this (the default stops at the context): name the one in force.
            if options.max_new_tokens is None:
                raise InputError(f"max_length={options.max_length} is past {context}")
            raise InputError(f"{has}; with max_new_tokens={options.max_new_tokens} the sequence would run past "
                             f"{context}: there is room for at most {plural(n_positions - length, 'new token')}")
    return budgets


def plural(count: int, noun: str) -> str:
    """A count with its noun, for messages: "1 token", "2 tokens"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# A generous estimate of what each output sequence keeps besides its ids: its random stream and bookkeeping.
_BYTES_PER_OUTPUT_ROW = 2048


def _check_memory(config, prompts: list[list[int]], budgets: list[int], n_per_prompt: int) -> None:
    """Refuse a request whose memory the machine does not have, before building any of it (a huge
    num_return_sequences would otherwise spend minutes making random streams, then fail in NumPy)."""
    n_rows = len(prompts) * n_per_prompt
    longest, largest_budget = max(map(len, prompts)), max(budgets)
    positions = _cache_positions(longest, largest_budget)
    running_at_once = n_rows if positions <= config.n_positions else 1  # as _batches_that_fit runs them
    # Each running row: keys and values of every layer in float32 (Model.new_cache), and its float32 logits.
    per_running_row = 2 * config.n_layer * config.n_embd * positions * 4 + config.vocab_size * 4
    per_output_row = _BYTES_PER_OUTPUT_ROW + 8 * (longest + largest_budget)  # a list slot per id
    checks.fits_in_memory(
        running_at_once * per_running_row + n_rows * per_output_row,
        f"{plural(n_rows, 'output sequence')} ({plural(len(prompts), 'prompt')} x num_return_sequences="
        f"{n_per_prompt}) of up to {longest + largest_budget} tokens",
        "lower num_return_sequences, the number of prompts or max_new_tokens")


def _row_generators(seed: int | None, count: int) -> list[np.random.Generator]:
    """Independent streams: output row i gets child i of SeedSequence(seed), whatever ``count`` is."""
    root = np.random.SeedSequence(seed if seed is not None else _default_seed)
    return [np.random.Generator(np.random.PCG64(child)) for child in root.spawn(count)]


def _batches_that_fit(rows: list[_Row], n_positions: int) -> list[list[_Row]]:
    """The rows in one batch, or one row at a time when padding would push the batch past the context.

    In a batch every row occupies the longest prompt's positions plus the largest budget in the cache. Rows
    do not depend on each other, so running them separately gives the same outputs.
    """
    if _cache_positions(max(len(row.ids) for row in rows), max(row.budget for row in rows)) <= n_positions:
        return [rows]
    return [[row] for row in rows]


def _cache_positions(longest_prompt: int, largest_budget: int) -> int:
    """Positions a batch fills: the padded prompts, then one per step but the last (its token is not fed)."""
    return longest_prompt + largest_budget - 1


def _decode(model, rows: list[_Row], request: _Request) -> Iterator[list[str]]:
    """Run ``rows`` to the end together; after each step yield the text each row produced ("" if none).

    Every id fed is a checked prompt id or one chosen here, so the model's internal step runs (no checks).
    """
    longest = max(len(row.ids) for row in rows)
    padding = [longest - len(row.ids) for row in rows]
    prompt_batch = np.array([[request.pad_id] * pad + row.ids for row, pad in zip(rows, padding)], np.int64)
    capacity = _cache_positions(longest, max(row.budget for row in rows))
    cache = model.new_cache(len(rows), capacity=capacity, start=padding)
    logits = model._step(cache, prompt_batch)  # [B, V]
    while True:
        yield [_advance(row, logits[index], request) if not row.done else "" for index, row in enumerate(rows)]
        if all(row.done for row in rows):
            return
        last = [[request.pad_id if row.done else row.ids[-1]] for row in rows]
        logits = model._step(cache, np.array(last, np.int64))


def _advance(row: _Row, logits: np.ndarray, request: _Request) -> str:
    """Append the row's next token; return the text it completed."""
    token = _next_token(logits, row, request.options)
    row.ids.append(token)
    row.budget -= 1
    piece, stopped = row.text.push(token) if row.text is not None else ("", False)
    row.done = stopped or token in request.eos_ids or row.budget == 0
    if row.done and row.text is not None:
        piece += row.text.flush()
    return piece


def _next_token(logits: np.ndarray, row: _Row, options: GenerationOptions) -> int:
    """logits: float32 [V] from the model -> the chosen token id."""
    if not np.isfinite(logits).all():
        raise NonFiniteError(f"NaN or infinity in the model's logits after {plural(len(row.ids), 'token')} of "
                             f"output sequence {row.index}: the computation overflowed float32 (extreme weights "
                             "or activations)")
    scores = process_logits(logits, row.ids, options)
    return sample_token(scores, row.rng) if options.do_sample else int(np.argmax(scores))


# ------------------------------------------------------------------------------------------------ defaults
def with_defaults(options: dict, defaults: dict) -> dict:
    """A call's ``options`` on top of a model's ``defaults`` (``model.generation_defaults``): the keyword
    arguments to pass to ``generate`` or ``stream``.

    Setting either length (max_length or max_new_tokens) replaces both default lengths, so a default max_length
    never competes with a max_new_tokens the caller chose. When the result decodes greedily, default sampling
    options are left out: they would have no effect, and only the caller's own should bring generate's warning
    about that.
    """
    lengths = ("max_length", "max_new_tokens")
    if any(options.get(name) is not None for name in lengths):
        defaults = {name: value for name, value in defaults.items() if name not in lengths}
    if not options.get("do_sample", defaults.get("do_sample", False)):
        defaults = {name: value for name, value in defaults.items() if name not in SAMPLING_ONLY_OPTIONS}
    return {**defaults, **options}


def task_defaults(params) -> dict:
    """The generate options among config.json's ``task_specific_params["text-generation"]`` pairs
    (``GPT2Config.text_generation_params``), checked now so that a bad value is reported as config.json's
    rather than at some later call. Keys that are not generate options (transformers' ``prefix``) are left out."""
    names = {field.name for field in dataclasses.fields(GenerationOptions)}
    defaults = {name: value for name, value in params if name in names}
    try:
        GenerationOptions(**defaults)
    except InputError as error:
        raise ConfigError(f"config.json: task_specific_params['text-generation']: {error}") from None
    return defaults
