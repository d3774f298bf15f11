"""Text generation with the semantics of transformers' ``generate``, on the scheduler's paged KV cache.

One call = one request: ``generate`` runs its prompts on a scheduler and a block pool of its own and keeps no
state on the model, so several threads may generate on one shared model at once (``tinygpt.Engine`` is the
way to have their requests share forward passes).

How a batch runs: each prompt is a :class:`~tinygpt.scheduler.Request` and each of its num_return_sequences
outputs a row; all are admitted at once and stepped together, each at its own positions (no padding). A
prompt's rows share its computed prompt. Each output row draws its random numbers from its own stream, child
``i`` of ``SeedSequence(seed)`` for output row ``i`` (prompt-major), so a row's tokens depend on its prompt,
the seed and its row index, never on the other rows; and the scheduler computes each row as it would alone.

Next-token choice is :mod:`tinygpt.sampling` (transformers' logits processors), applied by the scheduler.
Everything a call is given is checked once, in :func:`prepare_requests`; the steps then feed the model ids it
chose itself, through the model's internal forward pass, which checks nothing again.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np

from . import checks
from .errors import ConfigError, InputError
from .paged_cache import BLOCK_SIZE, BlockPool
from .scheduler import Request, Row, Scheduler, blocks_needed, positions_fed

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
    ``presence_penalty`` and ``frequency_penalty`` (OpenAI's, each in [-2, 2]): token j's logit goes down by
    ``count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``, count[j] being how often the row has
    generated j (its prompt does not count); ``logit_bias`` (OpenAI's): {token id: value in [-100, 100]} added to
    those logits. They apply after the repetition penalty, to greedy decoding and sampling alike.
    ``eos_token_id``: an id, a list of ids, or None for none; by default ``model.eos_token_id``. ``stop``: strings
    that end a row once its decoded continuation contains one. ``pad_token_id``: accepted (and checked against
    the vocabulary) as transformers takes it; no id is ever padded here, since every row sits at its own
    positions, so it changes nothing.
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
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

        # max_new_tokens=0 scores a prompt without generating: only Engine.submit takes it (prepare_requests).
        if self.max_new_tokens is not None:
            store("max_new_tokens", checks.count(self.max_new_tokens, "max_new_tokens", minimum=0))
        if self.max_length is not None:
            store("max_length", checks.count(self.max_length, "max_length", minimum=1))
        # Its bound is the memory the outputs need, checked against the model in prepare_requests.
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
        for name in ("presence_penalty", "frequency_penalty"):
            store(name, checks.real(getattr(self, name), name, lambda p: -2 <= p <= 2,
                                    "a number between -2 and 2 (0: no penalty)"))
        if self.logit_bias is not None:
            store("logit_bias", _logit_bias(self.logit_bias))
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


def _logit_bias(bias) -> dict[int, float]:
    """A logit_bias option as {id: float}, each value in [-100, 100]; ids are checked against the vocabulary
    in prepare_requests. Keys may be ints or strings of digits (JSON object keys are strings)."""
    if not isinstance(bias, Mapping):
        raise InputError(f"logit_bias must be a mapping of token ids to numbers, got {type(bias).__name__}")
    checked = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else checks.as_integer(key)
        if token is None or token < 0:
            raise InputError(f"logit_bias key {key!r} is not a token id (a non-negative integer)")
        checked[token] = checks.real(value, f"logit_bias[{key!r}]", lambda b: -100 <= b <= 100,
                                     "a number between -100 and 100")
    return checked


def _stop_strings(stop) -> tuple[str, ...]:
    if stop is not None and not isinstance(stop, str) and not _is_collection(stop):
        raise InputError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    strings = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    bad = [s for s in strings if not isinstance(s, str) or not s]
    if bad:
        raise InputError(f"stop must be a non-empty string or a list of them, got {bad[0]!r} in it")
    return strings


# ---------------------------------------------------------------------------------------------- the request
class ContinuationText:
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


# A generate call admits all its rows at once; its steps feed up to this many prompt tokens (past the running
# rows' next tokens). Outputs do not depend on it (see tinygpt.scheduler): it only sets how many Python steps a
# long prompt takes and the size of the step's activations.
GENERATE_STEP_TOKENS = 512


def generate(model, input_ids, *, streamer: Callable[[str], object] | None = None, **options) -> list[list[int]]:
    """Continue one prompt or a batch of prompts.

    input_ids: one prompt (list or 1-D array of ints) or a batch (list of such lists, lengths may differ,
    or a 2-D array). options: the fields of :class:`GenerationOptions` (max_new_tokens, max_length,
    do_sample, temperature, top_k, top_p, repetition_penalty, presence_penalty, frequency_penalty, logit_bias,
    num_return_sequences, seed, eos_token_id, stop, pad_token_id). streamer: called with each piece of decoded text as tokens are produced (one output
    sequence only; needs ``model.tokenizer``); the pieces join to the decoded continuation.

    Returns one list of ids per output sequence, prompt included, prompt-major (each prompt's
    num_return_sequences outputs together), unpadded, ending at the first EOS or stop-string token if any.
    Bad arguments raise :class:`~tinygpt.errors.InputError`; NaN or infinite logits (extreme weights)
    :class:`~tinygpt.errors.NonFiniteError`.
    """
    if streamer is not None and not callable(streamer):
        raise InputError(f"streamer must be callable with a str, got {type(streamer).__name__}")
    requests = prepare_requests(model, input_ids, GenerationOptions(**options),
                        text_for=None if streamer is None else "a streamer")
    for piece in _run(model, requests):
        if streamer is not None and piece:
            streamer(piece)
    return [row.ids for request in requests for row in request.rows]


def stream(model, input_ids, **options) -> Iterator[str]:
    """Generate for one prompt and yield the decoded text piece by piece as it is produced.

    Takes the options of :func:`generate` (except streamer); needs ``model.tokenizer``. The pieces join to
    ``tokenizer.decode(continuation, skip_special_tokens=True)``. Options are checked now, the model runs
    as the iterator is consumed.
    """
    requests = prepare_requests(model, input_ids, GenerationOptions(**options), text_for="stream()")
    return (piece for piece in _run(model, requests) if piece)


def _run(model, requests: list[Request]) -> Iterator[str]:
    """Run ``requests`` to the end on a scheduler of their own; after each step yield the text the first
    output row produced ("" if none)."""
    size = BLOCK_SIZE
    n_blocks = sum(blocks_needed(len(r.prompt), r.rows[0].budget, len(r.rows), size) for r in requests)
    cfg = model.config
    pool = BlockPool(cfg.n_layer, cfg.n_head, cfg.head_dim, n_blocks, size)
    scheduler = Scheduler(model, pool, max_batch=sum(len(r.rows) for r in requests),
                          step_tokens=GENERATE_STEP_TOKENS)
    first = requests[0].rows[0]
    pieces = []

    def collect(request: Request, new: list) -> None:
        pieces.extend(step.piece for step in new if step.row is first)

    for request in requests:
        request.on_step = collect
        scheduler.add(request)
    while scheduler.has_work():
        scheduler.step()
        for request in requests:
            if request.error is not None:
                raise request.error
        yield "".join(pieces)
        pieces.clear()


def prepare_requests(model, input_ids, options: GenerationOptions, text_for: str | None,
                     text_of_every_row: bool = False, scoring: bool = False) -> list[Request]:
    """Check everything against the model and lay out one request per prompt, each with its output rows
    (and their random streams).

    text_for: what follows the decoded text as it comes ("stream()", "a streamer"), if anything: it follows
    one output sequence. text_of_every_row: decode every row's text as it comes (needs the tokenizer).
    scoring: accept max_new_tokens=0, a prompt computed for its log-probabilities only (the engine's requests;
    ``generate`` refuses it, as transformers does).
    """
    config = model.config
    if options.max_new_tokens == 0 and not scoring:
        raise InputError("max_new_tokens must be an integer >= 1, got 0: generate makes at least one new token "
                         "(Engine.submit takes 0 to score a prompt)")
    _warn_of_unused_sampling_options(options)
    prompts = _as_prompts(input_ids, config.vocab_size)
    eos_ids = _eos_ids(options.eos_token_id, model)
    if options.pad_token_id is not None:
        checks.token_id(options.pad_token_id, config.vocab_size, "pad_token_id")
    for token in options.logit_bias or ():
        checks.token_id(token, config.vocab_size, "logit_bias key")
    budgets = _new_token_budgets([len(p) for p in prompts], options, config.n_positions)
    stop_strings = options.stop_strings
    decode_text = text_for is not None or text_of_every_row
    if (stop_strings or decode_text) and getattr(model, "tokenizer", None) is None:
        need = "stop strings need" if stop_strings else "streaming needs"
        raise InputError(f"{need} the model's tokenizer to decode tokens, and model.tokenizer is None")

    n = options.num_return_sequences
    n_rows = len(prompts) * n
    if text_for is not None and n_rows != 1:
        raise InputError(f"{text_for} follows one output sequence, but this request makes {n_rows} "
                         "(one prompt and num_return_sequences=1 only)")
    _check_memory(config, prompts, budgets, n)
    rngs = _row_generators(options.seed, n_rows) if options.do_sample else [None] * n_rows
    return [
        Request(prompt=prompt, options=options, eos_ids=eos_ids, rows=[
            Row(index=copy, ids=list(prompt), budget=budget, rng=rngs[index * n + copy],
                text=ContinuationText(model.tokenizer, stop_strings) if stop_strings or decode_text else None)
            for copy in range(n)
        ])
        for index, (prompt, budget) in enumerate(zip(prompts, budgets))
    ]


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
        if length > n_positions and budget == 0:
            raise InputError(f"{has}, more than {context}")
        if length >= n_positions and budget != 0:
            raise InputError(f"{has} and fills {context}: there is no room for a new token")
        if budget < 1 and options.max_new_tokens != 0:
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
    positions = positions_fed(longest, largest_budget)
    # Each row: keys and values of every layer in float32 (the paged cache), and its float32 logits.
    per_row = 2 * config.n_layer * config.n_embd * positions * 4 + config.vocab_size * 4
    per_output_row = _BYTES_PER_OUTPUT_ROW + 8 * (longest + largest_budget)  # a list slot per id
    checks.fits_in_memory(
        n_rows * (per_row + per_output_row),
        f"{plural(n_rows, 'output sequence')} ({plural(len(prompts), 'prompt')} x num_return_sequences="
        f"{n_per_prompt}) of up to {longest + largest_budget} tokens",
        "lower num_return_sequences, the number of prompts or max_new_tokens")


def _row_generators(seed: int | None, count: int) -> list[np.random.Generator]:
    """Independent streams: output row i gets child i of SeedSequence(seed), whatever ``count`` is."""
    root = np.random.SeedSequence(seed if seed is not None else _default_seed)
    return [np.random.Generator(np.random.PCG64(child)) for child in root.spawn(count)]


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
