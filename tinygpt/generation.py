"""Text generation on tinygpt's KV cache, with the semantics of transformers' ``generate``.

One call = one request: ``generate`` allocates its own KV cache and random streams and keeps no state on the
model, so several threads may generate on one shared model at once.

How a batch runs: prompts of different lengths are left-padded to the longest, the padding is masked through
the cache's ``start``, and the whole batch goes through the model in one pass; then every step feeds each
unfinished row its last token (finished rows are fed a pad token and their output no longer changes). Each
output row draws its random numbers from its own stream, child ``i`` of ``SeedSequence(seed)`` for output row
``i``, so a row's tokens depend on its prompt, the seed and its row index, never on the other rows.

Next-token choice follows transformers' logits processors, in their order: repetition penalty, then (only when
sampling) temperature, top-k and top-p; greedy decoding is the argmax after the repetition penalty.
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

__all__ = [
    "GenerationOptions",
    "generate",
    "stream",
    "set_seed",
    "apply_repetition_penalty",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_token",
    "process_logits",
]

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
    _default_seed = None if seed is None else _check_seed(seed)


# ---------------------------------------------------------------------------------------- logits processing
def apply_repetition_penalty(logits: np.ndarray, previous_ids, penalty: float) -> np.ndarray:
    """Discourage tokens already in the sequence, like transformers' RepetitionPenaltyLogitsProcessor.

    logits: float [V] or [B, V]; previous_ids: ints [T] or [B, T] (repeats allowed). Each token that occurs
    has its logit divided by ``penalty`` if positive, multiplied by it if negative. Returns a new array of
    the same shape and dtype. Where a tiny penalty overflows the dtype, each row comes back shifted by a constant
    (its maximum at 0) instead: the softmax and argmax of exact arithmetic, not inf or NaN.
    """
    logits = np.asarray(logits)
    ids = np.asarray(previous_ids, dtype=np.int64)
    scores = np.take_along_axis(logits, ids, axis=-1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        penalised = np.where(scores < 0, scores * penalty, scores / penalty)
    # A penalty above 1 can only send negative scores to -inf, which is their limit anyway.
    if penalty < 1 and _overflowed(scores, penalised):
        return _penalty_in_float64(logits, ids, penalty)
    out = logits.copy()
    np.put_along_axis(out, ids, penalised, axis=-1)
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits [..., V] / temperature, in the logits' dtype (TemperatureLogitsWarper).

    Where a tiny (or huge) temperature overflows the dtype, each row comes back shifted by a constant (its
    maximum at 0) instead: the softmax and argmax of exact arithmetic, not inf or NaN.
    """
    logits = np.asarray(logits)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled = logits / temperature
    return _shifted_quotient(logits, temperature, logits.dtype) if _overflowed(logits, scaled) else scaled


def _overflowed(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether float arithmetic on ``before`` lost its range: a finite value became infinite, or NaN appeared."""
    if np.isfinite(after).all():  # the usual case, in one pass
        return False
    return bool(np.isnan(after).any() or (np.isinf(after) & np.isfinite(before)).any())


def _shifted_quotient(numerators: np.ndarray, divisor: float, dtype) -> np.ndarray:
    """(numerators - their row maximum) / divisor, computed in float64 and returned in ``dtype``.

    Softmax and argmax do not change when a row is shifted, and with its maximum at 0 a row can only overflow
    towards -inf, where the probability is 0 anyway: no inf - inf = NaN, whatever the divisor.
    """
    values = np.asarray(numerators, dtype=np.float64)
    peak = values.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        return ((values - np.where(np.isfinite(peak), peak, 0.0)) / divisor).astype(dtype)


def _penalty_in_float64(logits: np.ndarray, ids: np.ndarray, penalty: float) -> np.ndarray:
    """The repetition penalty's scores, shifted (see :func:`_shifted_quotient`), for a penalty below 1.

    Every penalised score times the penalty is the logit itself (positive), logit * penalty**2 (negative) or,
    for tokens not in the sequence, logit * penalty; none of these overflow, and dividing them by the penalty
    gives the penalised scores back.
    """
    times_penalty = logits.astype(np.float64) * penalty
    scores = np.take_along_axis(logits, ids, axis=-1).astype(np.float64)
    np.put_along_axis(times_penalty, ids, np.where(scores < 0, scores * penalty * penalty, scores), axis=-1)
    return _shifted_quotient(times_penalty, penalty, logits.dtype)


def top_k_filter(logits: np.ndarray, top_k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep the ``top_k`` largest logits of each row, set the rest to -inf (TopKLogitsWarper).

    logits: float [..., V] -> same shape and dtype. Every logit equal to the k-th largest is kept, so ties
    can keep more than k tokens.
    """
    logits = np.asarray(logits)
    vocab = logits.shape[-1]
    k = min(max(top_k, min_tokens_to_keep), vocab)
    kth_largest = np.partition(logits, vocab - k, axis=-1)[..., vocab - k, None]
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits: np.ndarray, top_p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Nucleus filtering: keep the most likely tokens whose probabilities add up to ``top_p`` (TopPLogitsWarper).

    logits: float [..., V] -> same shape and dtype, filtered tokens set to -inf. As in transformers, tokens are
    taken by ascending logit and dropped while the cumulative probability stays <= 1 - top_p; the
    ``min_tokens_to_keep`` largest always stay. Tied logits count in id order (as a stable sort orders them),
    so at the boundary the lower ids go first. Probabilities are computed in float64.
    """
    logits = np.asarray(logits)
    # Sorting the values is enough (no argsort): the dropped tokens are those below the smallest kept value,
    # plus the first few ids among the ties at that value.
    ascending = np.sort(logits, axis=-1).astype(np.float64)
    weights = np.exp(ascending - ascending[..., -1:])  # the last entry is each row's maximum
    cumulative = np.cumsum(weights, axis=-1) / weights.sum(axis=-1, keepdims=True)  # never decreases
    most_dropped = max(logits.shape[-1] - min_tokens_to_keep, 0)
    n_dropped = np.minimum((cumulative <= 1.0 - top_p).sum(axis=-1, keepdims=True), most_dropped)
    boundary = np.take_along_axis(ascending, n_dropped, axis=-1)  # the smallest logit kept
    below = logits < boundary
    tied = logits == boundary
    tied_dropped = n_dropped - below.sum(axis=-1, keepdims=True)
    drop = below | (tied & (np.cumsum(tied, axis=-1) <= tied_dropped))  # the first tied_dropped ties by id
    return np.where(drop, -np.inf, logits)


def sample_token(logits: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from softmax(logits); -inf logits are never drawn.

    logits: float [V] with at least one finite entry. Uses exactly one ``rng.random()`` draw (inverse CDF).
    """
    logits = np.asarray(logits)
    candidates = np.flatnonzero(logits > -np.inf)
    if candidates.size == 0:
        raise ValueError("cannot sample: every logit is -inf")
    scores = logits[candidates].astype(np.float64)
    cdf = np.cumsum(np.exp(scores - scores.max()))
    index = np.searchsorted(cdf, rng.random() * cdf[-1], side="right")
    return int(candidates[min(index, candidates.size - 1)])


def process_logits(logits: np.ndarray, previous_ids, options: GenerationOptions) -> np.ndarray:
    """The scores transformers' ``generate`` picks the next token from, for these options.

    logits: float [V] after ``previous_ids`` (ints [T], prompt included) -> float [V]. Repetition penalty;
    then, when sampling, temperature, top-k and top-p (filtered tokens at -inf). Greedy decoding takes the
    argmax of the result, sampling draws from its softmax.
    """
    if options.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous_ids, options.repetition_penalty)
    if not options.do_sample:
        return logits
    if options.temperature != 1.0:
        logits = apply_temperature(logits, options.temperature)
    if options.top_k:
        logits = top_k_filter(logits, options.top_k)
    if options.top_p < 1.0:
        # Tokens already at -inf have probability 0, which top-p drops anyway: sort only the survivors.
        survivors = np.flatnonzero(logits > -np.inf)
        filtered = np.full_like(logits, -np.inf)
        filtered[survivors] = top_p_filter(logits[survivors], options.top_p)
        logits = filtered
    return logits


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
        for name in ("max_new_tokens", "max_length"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_return_sequences", self.num_return_sequences, minimum=1)
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise ValueError(f"do_sample must be True or False, got {self.do_sample!r}")
        if self.num_return_sequences > 1 and not self.do_sample:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs do_sample=True: greedy decoding "
                "would return the same sequence every time"
            )
        if self.do_sample:
            if self.top_k is not None:
                _check_int("top_k", self.top_k, minimum=0)
            _check_real("temperature", self.temperature, lambda t: 0 < t < math.inf,
                        "a positive finite number (for greedy decoding use do_sample=False)")
            _check_real("top_p", self.top_p, lambda p: 0 <= p <= 1, "a number between 0 and 1")
        _check_real("repetition_penalty", self.repetition_penalty, lambda r: 0 < r < math.inf,
                    "a positive finite number (1.0: no penalty)")
        if self.seed is not None:
            _check_seed(self.seed)
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


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_real(name: str, value, valid: Callable[[float], bool], expected: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not valid(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_seed(seed) -> int:
    _check_int("seed", seed, minimum=0)
    return int(seed)


def _is_collection(value) -> bool:
    """A list, tuple or set, say; not a string or bytes (collections of characters) nor a one-pass iterator."""
    return isinstance(value, (Sequence, Set)) and not isinstance(value, (str, bytes, bytearray))


def _stop_strings(stop) -> tuple[str, ...]:
    if stop is not None and not isinstance(stop, str) and not _is_collection(stop):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    strings = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    bad = [s for s in strings if not isinstance(s, str) or not s]
    if bad:
        raise ValueError(f"stop must be a non-empty string or a list of them, got {bad[0]!r} in it")
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
    """
    if streamer is not None and not callable(streamer):
        raise TypeError(f"streamer must be callable with a str, got {type(streamer).__name__}")
    rows, request = _prepare(model, input_ids, GenerationOptions(**options), decode_text=streamer is not None)
    if streamer is not None:
        _require_one_row(rows, "a streamer")
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
    rows, request = _prepare(model, input_ids, GenerationOptions(**options), decode_text=True)
    _require_one_row(rows, "stream()")
    return _text_of_first_row(model, rows, request)


def _text_of_first_row(model, rows: list[_Row], request: _Request) -> Iterator[str]:
    for pieces in _decode(model, rows, request):
        if pieces[0]:
            yield pieces[0]


def _require_one_row(rows: list[_Row], what: str) -> None:
    if len(rows) != 1:
        raise ValueError(f"{what} follows one output sequence, but this request makes {len(rows)} "
                         "(one prompt and num_return_sequences=1 only)")


def _prepare(model, input_ids, options: GenerationOptions, decode_text: bool) -> tuple[list[_Row], _Request]:
    """Check everything against the model and lay out the output rows (with their random streams)."""
    config = model.config
    _warn_of_unused_sampling_options(options)
    prompts = _as_prompts(input_ids, config.vocab_size)
    eos_ids = _eos_ids(options.eos_token_id, model)
    pad_id = options.pad_token_id if options.pad_token_id is not None else min(eos_ids, default=0)
    _check_token_id("pad_token_id", pad_id, config.vocab_size)
    budgets = _new_token_budgets([len(p) for p in prompts], options, config.n_positions)
    stop_strings = options.stop_strings
    if (stop_strings or decode_text) and getattr(model, "tokenizer", None) is None:
        need = "stop strings need" if stop_strings else "streaming needs"
        raise ValueError(f"{need} the model's tokenizer to decode tokens, and model.tokenizer is None")

    n = options.num_return_sequences
    rngs = _row_generators(options.seed, len(prompts) * n) if options.do_sample else [None] * (len(prompts) * n)
    rows = [
        _Row(
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
    """One prompt or a batch -> a list of prompts (lists of ints), each checked against the vocabulary."""
    if isinstance(input_ids, np.ndarray):
        if input_ids.ndim not in (1, 2):
            raise ValueError(f"input_ids must be 1-D (one prompt) or 2-D (a batch), got shape {input_ids.shape}")
        if input_ids.size and not np.issubdtype(input_ids.dtype, np.integer):
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        prompts = input_ids.tolist() if input_ids.ndim == 2 else [input_ids.tolist()]
    elif isinstance(input_ids, Sequence) and not isinstance(input_ids, (str, bytes)):
        is_batch = len(input_ids) > 0 and _is_id_sequence(input_ids[0])
        prompts = [list(p) if _is_id_sequence(p) else p for p in input_ids] if is_batch else [list(input_ids)]
    else:
        raise ValueError(f"input_ids must be a list or array of token ids, got {type(input_ids).__name__}")
    if not prompts:
        raise ValueError("input_ids is an empty batch")
    for index, prompt in enumerate(prompts):
        _check_prompt(prompt, index, vocab_size)
    return [[int(t) for t in prompt] for prompt in prompts]


def _is_id_sequence(value) -> bool:
    return isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes))


def _check_prompt(prompt, index: int, vocab_size: int) -> None:
    if not isinstance(prompt, list):
        raise ValueError(f"prompt {index} must be a list of token ids, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError(f"prompt {index} is empty: generation needs at least one token to start from")
    for position, token in enumerate(prompt):
        if isinstance(token, bool) or not isinstance(token, numbers.Integral) or not 0 <= token < vocab_size:
            raise ValueError(f"prompt {index}, position {position}: token id {token!r} is not an id "
                             f"of the vocabulary (0..{vocab_size - 1})")


def _check_token_id(name: str, token, vocab_size: int) -> None:
    if isinstance(token, bool) or not isinstance(token, numbers.Integral) or not 0 <= token < vocab_size:
        raise ValueError(f"{name} {token!r} is not an id of the vocabulary (0..{vocab_size - 1})")


def _eos_ids(eos_token_id, model) -> frozenset[int]:
    if eos_token_id is _FromModel.EOS:
        eos_token_id = model.eos_token_id
    ids = _listed_eos_ids(eos_token_id)
    for token in ids:
        _check_token_id("eos_token_id", token, model.config.vocab_size)
    return frozenset(int(t) for t in ids)


def _listed_eos_ids(eos_token_id) -> tuple:
    """An eos_token_id option as a tuple of (still unchecked) ids."""
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, numbers.Integral):
        return (eos_token_id,)
    if isinstance(eos_token_id, np.ndarray) and eos_token_id.ndim == 1:  # ids as NumPy gives them
        return tuple(eos_token_id)
    if not _is_collection(eos_token_id):
        raise ValueError(f"eos_token_id must be a token id, a list of token ids or None, got {eos_token_id!r}")
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
    for index, (length, budget) in enumerate(zip(lengths, budgets)):
        if length >= n_positions:
            raise ValueError(f"prompt {index} has {length} tokens and fills the model's context of {n_positions} "
                             "positions (config.n_positions): there is no room for a new token")
        if budget < 1:
            raise ValueError(f"prompt {index} has {length} tokens but max_length is {options.max_length}: "
                             "raise max_length or set max_new_tokens")
        if length + budget > n_positions:
            raise ValueError(f"prompt {index} has {length} tokens; with {budget} new ones the sequence would run "
                             f"past the model's context of {n_positions} positions (config.n_positions)")
    return budgets


def _row_generators(seed: int | None, count: int) -> list[np.random.Generator]:
    """Independent streams: output row i gets child i of SeedSequence(seed), whatever ``count`` is."""
    root = np.random.SeedSequence(seed if seed is not None else _default_seed)
    return [np.random.Generator(np.random.PCG64(child)) for child in root.spawn(count)]


def _batches_that_fit(rows: list[_Row], n_positions: int) -> list[list[_Row]]:
    """The rows in one batch, or one row at a time when padding would push the batch past the context.

    In a batch every row occupies the longest prompt's positions plus the largest budget in the cache. Rows
    do not depend on each other, so running them separately gives the same outputs.
    """
    longest = max(len(row.ids) for row in rows)
    if _cache_positions(longest, rows) <= n_positions:
        return [rows]
    return [[row] for row in rows]


def _cache_positions(longest_prompt: int, rows: list[_Row]) -> int:
    """Positions a batch fills: the padded prompts, then one per step but the last (its token is not fed)."""
    return longest_prompt + max(row.budget for row in rows) - 1


def _decode(model, rows: list[_Row], request: _Request) -> Iterator[list[str]]:
    """Run ``rows`` to the end together; after each step yield the text each row produced ("" if none)."""
    longest = max(len(row.ids) for row in rows)
    padding = [longest - len(row.ids) for row in rows]
    prompt_batch = np.array([[request.pad_id] * pad + row.ids for row, pad in zip(rows, padding)], np.int64)
    cache = model.new_cache(len(rows), capacity=_cache_positions(longest, rows), start=padding)
    logits = model.step(cache, prompt_batch)  # [B, V]
    while True:
        yield [_advance(row, logits[index], request) if not row.done else "" for index, row in enumerate(rows)]
        if all(row.done for row in rows):
            return
        last = [[request.pad_id if row.done else row.ids[-1]] for row in rows]
        logits = model.step(cache, np.array(last, np.int64))


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
        raise FloatingPointError(f"the model produced non-finite logits after {len(row.ids)} tokens")
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
