"""Next-token choice as transformers' logits processors make it: pure functions of logits, in their order.

Repetition penalty, then OpenAI's presence and frequency penalties and logit bias, then (only when sampling)
temperature, top-k and top-p; greedy decoding is the argmax after the penalties and bias, sampling draws from the
softmax of the result (:func:`sample_token`). Each transformers-like function follows its transformers
counterpart (tests/test_sampling.py compares them), and where float32 would overflow (a tiny temperature or
penalty) returns the limit of exact arithmetic instead of inf or NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .generation import GenerationOptions

__all__ = [
    "apply_repetition_penalty",
    "apply_openai_adjustments",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_token",
    "process_logits",
    "logprobs_of",
]


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


def apply_openai_adjustments(logits: np.ndarray, generated_ids, presence: float, frequency: float,
                             bias: dict[int, float] | None) -> np.ndarray:
    """OpenAI's presence and frequency penalties and logit bias:
    logits[j] + bias[j] - (count[j] * frequency + (count[j] > 0) * presence), count[j] being how often token j
    occurs in ``generated_ids`` (the row's generated tokens, not its prompt).

    logits: float [V]. Returns a new array of the same dtype; each changed entry is computed in float64 and
    rounded once.
    """
    ids, counts = np.unique(np.asarray(generated_ids, np.int64), return_counts=True)
    amounts = -(counts * frequency + presence)  # every listed id occurs at least once
    if bias:
        ids = np.concatenate([ids, np.fromiter(bias.keys(), np.int64, len(bias))])
        amounts = np.concatenate([amounts, np.fromiter(bias.values(), np.float64, len(bias))])
    touched, where = np.unique(ids, return_inverse=True)
    totals = np.zeros(touched.size)
    np.add.at(totals, where, amounts)
    out = np.array(logits)
    out[touched] = out[touched].astype(np.float64) + totals
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
        raise InputError("cannot sample: every logit is -inf")
    scores = logits[candidates].astype(np.float64)
    cdf = np.cumsum(np.exp(scores - scores.max()))
    index = np.searchsorted(cdf, rng.random() * cdf[-1], side="right")
    return int(candidates[min(index, candidates.size - 1)])


def process_logits(logits: np.ndarray, previous_ids, options: GenerationOptions, prompt_length: int = 0
                   ) -> np.ndarray:
    """The scores the next token is picked from, for these options.

    logits: float [V] after ``previous_ids`` (ints [T], prompt included; its first ``prompt_length`` are the
    prompt) -> float [V]. Repetition penalty (over all of previous_ids, as transformers); presence and frequency
    penalties (over the generated ids only, as OpenAI) and logit bias; then, when sampling, temperature, top-k and
    top-p (filtered tokens at -inf). Greedy decoding takes the argmax of the result, sampling draws from its
    softmax.
    """
    if options.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous_ids, options.repetition_penalty)
    if options.presence_penalty != 0.0 or options.frequency_penalty != 0.0 or options.logit_bias:
        logits = apply_openai_adjustments(logits, previous_ids[prompt_length:], options.presence_penalty,
                                          options.frequency_penalty, options.logit_bias)
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


def logprobs_of(logits: np.ndarray, token_ids: np.ndarray, top_n: int
                ) -> tuple[np.ndarray, list[tuple[tuple[int, float], ...]]]:
    """Log-probabilities under log_softmax(logits), in float64: for each row, that of its ``token_ids`` entry,
    and its ``top_n`` likeliest tokens as ((id, logprob), ...) in descending order (ties: lower id first).

    logits: float [N, V] (raw model logits); token_ids: ints [N]. Returns (float64 [N], a tuple per row).
    """
    values = np.asarray(logits, np.float64)
    peak = values.max(axis=-1, keepdims=True)
    log_total = peak + np.log(np.exp(values - peak).sum(axis=-1, keepdims=True))
    rows = np.arange(values.shape[0])
    chosen = values[rows, token_ids] - log_total[:, 0]
    if top_n == 0:
        return chosen, [()] * values.shape[0]
    vocab = values.shape[-1]
    n = min(top_n, vocab)
    nth_largest = np.partition(values, vocab - n, axis=-1)[:, vocab - n]
    tops = []
    for row in rows:
        # Every id tied with the n-th largest is a candidate, so that ties keep the lower ids whatever the
        # partition did.
        ids = np.flatnonzero(values[row] >= nth_largest[row])
        ids = ids[np.lexsort((ids, -values[row, ids]))][:n]  # by logit descending, then by id
        tops.append(tuple(zip(ids.tolist(), (values[row, ids] - log_total[row, 0]).tolist())))
    return chosen, tops
