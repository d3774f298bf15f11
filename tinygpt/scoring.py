"""Scoring text with a model: per-token log-probabilities, per-document perplexity, mean-pooled embeddings.

Documents are cut into the windows of transformers' perplexity guide (one window when a document fits the
context), and windows of many documents are packed into one forward pass: their tokens are concatenated and
each attends only to its own window's earlier tokens, so no row computes padding. The LM head then runs on the
rows that predict a token, a chunk of rows at a time, and ``cross_entropy`` reduces each chunk's logits to one
negative log-likelihood per row: the [tokens, vocab] logits never exist whole, in any precision.

A document's numbers do not depend on the documents packed with it. Every product runs on tinygpt's own GEMM,
which sums each output in the same order for any number of rows above SMALL_M and any thread count (BLAS
does not: its order changes with the rows of the call); smaller packs and chunks are padded up to that size.
So in-process scoring and a Ray actor give the same bits for a document, however their batches were cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import checks
from .errors import InputError, NonFiniteError
from .kernels.matmul import SMALL_M
from .kernels.softmax import cross_entropy

# Tokens per forward pass of packed windows: enough rows that the products run at the GEMM's speed; small
# enough that the activations ([tokens, 4 * n_embd] floats for the MLP) stay a few tens of MB.
PACK_TOKENS = 2048
# Rows of logits computed at once: [rows, vocab] float32 is the largest buffer scoring holds (~51 MB here).
LOGIT_ROWS = 256
# Products of more rows than this give each row the same bits whatever the other rows (see the docstring).
_MIN_ROWS = SMALL_M + 1


@dataclass
class DocumentScore:
    """How likely a model finds one document.

    tokens: the document's token count. token_logprobs: float64 [tokens - 1], log p(token t | the tokens
    before it in its window) for t = 1, 2, ... (the first token has no prediction). nll: mean negative
    log-likelihood in nats per token, by the perplexity guide's weighting of windows (for a document within one
    window, exactly ``-token_logprobs.mean()``); perplexity: exp(nll), equal to ``Model.perplexity`` of the
    same ids. embedding: float32 [n_embd], the mean of every token's final hidden state (each token as its
    first window saw it), when asked for; else None.
    """

    tokens: int
    nll: float
    perplexity: float
    token_logprobs: np.ndarray
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class _Window:
    document: int
    begin: int  # the window is tokens begin .. end-1 of its document
    end: int
    new: int  # its last ``new`` tokens are scored here for the first time (all of them in a first window)


def windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The perplexity guide's windows over n_tokens tokens: (begin, end, new) for each, where the window is
    tokens begin..end-1 and its last ``new`` tokens were in no earlier window."""
    spans, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        spans.append((begin, end, end - previous_end))
        previous_end = end
        if end == n_tokens:
            break
    return spans


def window_options(model, stride, max_length) -> tuple[int, int]:
    """Checked (max_length, stride): windows of up to max_length tokens (default n_positions) every stride
    tokens (default half a window). Python ints: NumPy unsigned ones would wrap in the window arithmetic."""
    n_positions = model.config.n_positions
    max_length = n_positions if max_length is None else checks.count(
        max_length, "max_length", minimum=2, maximum=n_positions, maximum_name="n_positions")
    stride = max(max_length // 2, 1) if stride is None else checks.count(
        stride, "stride", minimum=1, maximum=max_length, maximum_name="max_length")
    return max_length, stride


def document_ids(document, vocab_size: int, index: int) -> np.ndarray:
    """One document's token ids, checked: int64 [T] with T >= 2 (a prediction needs a token before it)."""
    try:
        ids = checks.token_ids(document, vocab_size)
    except InputError as error:
        raise InputError(f"document {index}: {error}") from None
    if ids.ndim != 1:
        raise InputError(f"document {index}: token ids of shape [T], got {list(ids.shape)}")
    if len(ids) < 2:
        raise InputError(f"document {index} has {len(ids)} token; scoring needs at least 2")
    return ids


def score(model, documents: Sequence[Sequence[int]], *, embed: bool = False, stride: int | None = None,
          max_length: int | None = None, progress: Callable[[int, int], None] | None = None
          ) -> list[DocumentScore]:
    """Score documents given as token ids (each [T], T >= 2): one :class:`DocumentScore` each, in order.

    Windows of up to ``max_length`` tokens (default n_positions) every ``stride`` tokens (default half a
    window), as :func:`perplexity`. ``progress(done, total)`` is called after each forward pass with token
    counts (a token counts once, in its first window).
    """
    docs = [document_ids(document, model.config.vocab_size, i) for i, document in enumerate(documents)]
    max_length, stride = window_options(model, stride, max_length)
    embed = checks.flag(embed, "embed")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable as progress(done, total), got {type(progress).__name__}")
    return _score(model, docs, embed, max_length, stride, progress)


def _score(model, docs: list[np.ndarray], embed: bool, max_length: int, stride: int, progress) -> list[DocumentScore]:
    """:func:`score` on checked arguments."""
    plan = [_Window(d, *span) for d, ids in enumerate(docs) for span in windows(len(ids), max_length, stride)]
    token_nll = [np.empty(len(ids) - 1) for ids in docs]  # float64, filled window by window
    window_sums = np.zeros((len(docs), 2))  # per document: sum over windows of mean loss x weight, and weights
    pooled = np.zeros((len(docs), model.config.n_embd)) if embed else None  # float64 sums of hidden states
    total, done = sum(len(ids) for ids in docs), 0
    for pack in _packs(plan):
        _score_pack(model, docs, pack, token_nll, window_sums, pooled)
        done += sum(w.new for w in pack)
        if progress is not None:
            progress(done, total)
    results = []
    for d, ids in enumerate(docs):
        nll = window_sums[d, 0] / window_sums[d, 1]
        if nll > math.log(np.finfo(np.float64).max):
            # Finite logits, but so extreme that a token's probability is below any float's.
            raise NonFiniteError(f"document {d}: its perplexity overflows a float (mean loss {nll:.4g} nats)")
        embedding = (pooled[d] / len(ids)).astype(np.float32) if embed else None
        results.append(DocumentScore(len(ids), float(nll), float(np.exp(nll)), -token_nll[d], embedding))
    return results


def _packs(plan: list[_Window]) -> list[list[_Window]]:
    """Consecutive windows in groups of at most PACK_TOKENS tokens (a longer window goes alone)."""
    packs, current, size = [], [], 0
    for window in plan:
        length = window.end - window.begin
        if current and size + length > PACK_TOKENS:
            packs.append(current)
            current, size = [], 0
        current.append(window)
        size += length
    if current:
        packs.append(current)
    return packs


def _score_pack(model, docs, pack: list[_Window], token_nll, window_sums, pooled) -> None:
    """One forward pass over the packed windows of ``pack``; writes their tokens' losses into token_nll,
    their weighted mean losses into window_sums and (if pooled is not None) their hidden-state sums."""
    lengths = [w.end - w.begin for w in pack]
    ids = np.concatenate([docs[w.document][w.begin:w.end] for w in pack])
    positions = np.concatenate([np.arange(n) for n in lengths])
    padding = max(_MIN_ROWS - len(ids), 0)  # a one-window segment of token 0s, never read back
    if padding:
        ids = np.concatenate([ids, np.zeros(padding, np.int64)])
        positions = np.concatenate([positions, np.arange(padding)])
        lengths = [*lengths, padding]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    hidden = model._packed_hidden(ids, positions, offsets)  # [N, C] after ln_f
    n_real = int(offsets[len(pack)])  # the padding's rows are never read
    _check_finite(hidden[:n_real], np.arange(n_real), pack, offsets, len(docs), "the hidden states")
    # Row p of a window predicts its token p + 1. The guide scores the window's new tokens: its last ``new``
    # tokens, predicted by the rows before them, except a first window's token 0, which has no row before it.
    scored = [min(w.new, w.end - w.begin - 1) for w in pack]  # tokens each window scores
    rows = np.concatenate([np.arange(first + length - 1 - n, first + length - 1)
                           for first, length, n in zip(offsets, lengths, scored)])
    targets = np.concatenate([docs[w.document][w.end - n:w.end] for w, n in zip(pack, scored)])
    nll = _token_nll(model, hidden, rows, targets)
    # A NaN or +inf logit makes its row's loss NaN or inf: checking the losses covers the logits, in one pass
    # over the rows instead of rows x vocab. (A -inf logit is a probability of 0, as it should be.)
    _check_finite(nll, rows, pack, offsets, len(docs), "the logits")
    at = 0
    for w, first, length, n_scored in zip(pack, offsets, lengths, scored):
        window_nll = nll[at:at + n_scored]
        at += n_scored
        # token t of the document was predicted from row t - 1 - begin; scored tokens are the window's last
        token_nll[w.document][w.end - 1 - n_scored:w.end - 1] = window_nll
        weight = w.new - 1  # the guide weights each window's mean by its new tokens minus the label shift
        window_sums[w.document] += (window_nll.mean() * weight, weight)
        if pooled is not None:
            pooled[w.document] += hidden[first + length - w.new:first + length].sum(axis=0, dtype=np.float64)


def _token_nll(model, hidden: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(targets[i] | hidden[rows[i]]) as float64, LOGIT_ROWS rows of logits at a time."""
    from .model import lm_head

    head = model.weights["lm_head.weight"]
    out = np.empty(len(rows))
    logits = np.empty((LOGIT_ROWS, model.config.vocab_size), np.float32)
    for first in range(0, len(rows), LOGIT_ROWS):
        chunk = rows[first:first + LOGIT_ROWS]
        x = hidden[chunk]
        if len(chunk) < _MIN_ROWS:  # pad: the same GEMM, so the same bits, as a full chunk
            x = np.concatenate([x, np.zeros((_MIN_ROWS - len(chunk), x.shape[1]), np.float32)])
        block = logits[:len(x)]  # _MIN_ROWS < LOGIT_ROWS: a padded chunk fits too
        lm_head(x, head, out=block, gemm="numba")
        cross_entropy(block[:len(chunk)], targets[first:first + len(chunk)], out=out[first:first + len(chunk)])
    return out


def _check_finite(values: np.ndarray, rows: np.ndarray, pack: list[_Window], offsets: np.ndarray, n_docs: int,
                  what: str) -> None:
    """A NonFiniteError naming the window and position of the first of ``values`` (one per pack row ``rows``)
    that holds a NaN or infinity, if any."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not bad.any():
        return
    row = int(rows[np.argmax(bad)])
    w = int(np.searchsorted(offsets, row, side="right")) - 1
    window = pack[w]
    of = f" of document {window.document}" if n_docs > 1 else ""
    raise NonFiniteError(f"the window of tokens {window.begin}..{window.end - 1}{of}: NaN or infinity in {what} at "
                         f"position {row - int(offsets[w])}: the computation overflowed float32 (extreme weights or "
                         "activations)")


def perplexity(model, ids: Sequence[int], *, stride: int | None = None, max_length: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> float:
    """Perplexity of a token sequence by the sliding-window method of transformers' perplexity guide.

    Windows of up to ``max_length`` tokens (default n_positions) start every ``stride`` tokens (default half
    a window); each window scores only the tokens no earlier window scored, with the rest of the window as
    context. Each window's mean loss is weighted by its scored-token count minus one, exactly as the guide
    does (it subtracts the label shift per window), so the result equals that computation.
    ``progress(done, total)`` is called after each forward pass with token counts.
    """
    ids = checks.token_ids(ids, model.config.vocab_size)
    if ids.ndim != 1:
        raise InputError(f"perplexity scores one sequence: token ids of shape [T], got {list(ids.shape)}")
    if len(ids) < 2:
        raise InputError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    max_length, stride = window_options(model, stride, max_length)
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable as progress(done, total), got {type(progress).__name__}")
    (result,) = _score(model, [ids], False, max_length, stride, progress)
    return result.perplexity


def mean_pooled(model, ids: Sequence[int]) -> np.ndarray:  # [T] ids -> [C]
    """The average of a sequence's final hidden states: one feature vector for the whole text."""
    return model.hidden_states(ids).mean(axis=0)
