"""Scoring text with a model: perplexity, and mean-pooled feature vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .config import is_integer


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
    ids = np.asarray(ids, dtype=np.int64)
    n_positions = model.config.n_positions
    max_length = n_positions if max_length is None else max_length
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    # A window must hold a token and its successor; windows longer than the context cannot run.
    if not is_integer(max_length) or not 2 <= max_length <= n_positions:
        raise ValueError(f"max_length must be an integer between 2 and n_positions ({n_positions}), "
                         f"got {max_length!r}")
    stride = max(max_length // 2, 1) if stride is None else stride
    if not is_integer(stride) or not 1 <= stride <= max_length:
        raise ValueError(f"stride must be an integer between 1 and max_length ({max_length}), got {stride!r}")
    nll_sum, n_scored, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end]
        n_new = end - previous_end  # tokens this window scores
        log_probs = log_softmax(model.logits(window)[:-1].astype(np.float64))  # [W-1, V]
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
    return float(np.exp(nll_sum / n_scored))


def mean_pooled(model, ids: Sequence[int]) -> np.ndarray:  # [T] ids -> [C]
    """The average of a sequence's final hidden states: one feature vector for the whole text."""
    return model.hidden_states(ids).mean(axis=0)
