"""Scoring text with a model: perplexity, and mean-pooled feature vectors."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import checks
from .errors import InputError, NonFiniteError


def log_softmax(logits: np.ndarray) -> np.ndarray:  # [..., V] -> [..., V]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def perplexity(model, ids: Sequence[int], *, stride: int | None = None, max_length: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> float:
    """Perplexity of a token sequence by the sliding-window method of transformers' perplexity guide.

    Windows of up to ``max_length`` tokens (default n_positions) start every ``stride`` tokens (default half
    a window); each window scores only the tokens no earlier window scored, with the rest of the window as
    context. Each window's mean loss is weighted by its scored-token count minus one, exactly as the guide
    does (it subtracts the label shift per window), so the result equals that computation.
    ``progress(done, total)`` is called after each window with token counts.
    """
    ids = checks.token_ids(ids, model.config.vocab_size)
    if ids.ndim != 1:
        raise InputError(f"perplexity scores one sequence: token ids of shape [T], got {list(ids.shape)}")
    if len(ids) < 2:
        raise InputError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    n_positions = model.config.n_positions
    # A window must hold a token and its successor; windows longer than the context cannot run. Python ints:
    # NumPy unsigned ones would wrap in the window arithmetic below.
    max_length = n_positions if max_length is None else checks.count(
        max_length, "max_length", minimum=2, maximum=n_positions, maximum_name="n_positions")
    stride = max(max_length // 2, 1) if stride is None else checks.count(
        stride, "stride", minimum=1, maximum=max_length, maximum_name="max_length")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable as progress(done, total), got {type(progress).__name__}")
    nll_sum, n_scored, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end]
        n_new = end - previous_end  # tokens this window scores
        try:
            logits = model.logits(window)
        except NonFiniteError as error:
            raise NonFiniteError(f"the window of tokens {begin}..{end - 1}: {error}") from None
        log_probs = log_softmax(logits[:-1].astype(np.float64))  # [W-1, V]
        predicted = np.arange(len(window) - 1)
        token_nll = -log_probs[predicted, window[1:]]  # loss of predicting token i+1 from position i
        first = max(len(window) - 1 - n_new, 0)  # the first window has no prediction for its first token
        window_loss = token_nll[first:].mean()
        weight = n_new - 1
        nll_sum += window_loss * weight
        n_scored += weight
        previous_end = end
        if progress is not None:
            progress(end, len(ids))
        if end == len(ids):
            break
    mean_nll = nll_sum / n_scored
    if mean_nll > math.log(np.finfo(np.float64).max):
        # Finite logits, but so extreme that a token's probability is below any float's.
        raise NonFiniteError(f"perplexity overflows a float: the mean loss is {mean_nll:.4g} nats per token")
    return float(np.exp(mean_nll))


def mean_pooled(model, ids: Sequence[int]) -> np.ndarray:  # [T] ids -> [C]
    """The average of a sequence's final hidden states: one feature vector for the whole text."""
    return model.hidden_states(ids).mean(axis=0)
