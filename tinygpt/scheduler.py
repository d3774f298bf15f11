"""The scheduler: it owns the compute, and every step is one forward pass over many sequences.

A step feeds the next token of every running sequence (decode) and fills the rest of its token budget with
chunks of admitted prompts (chunked prefill), so a long prompt arriving delays the others by one step's worth
of tokens, not by its whole prefill. Sequences keep their keys and values in a shared :class:`BlockPool`, each
at its own positions: one joins or leaves between any two steps without touching the others.

Requests are plain data (:class:`Request`, :class:`Row`); the scheduler is single-threaded and synchronous:
``tinygpt.generation`` runs one to the end for a ``generate`` call, ``tinygpt.engine`` runs one on a thread for
callers arriving at any time.

A request's output never depends on what runs beside it: the kernels compute each row of a product, and each
query of attention, with the same arithmetic whatever the other rows are (see ``tinygpt.kernels``), and each
output row draws its random numbers from its own stream. So a token's keys and values are the same whichever
step computed them, and a prompt's blocks can be shared between requests (n continuations, prefix reuse).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, NonFiniteError
from .paged_cache import BlockPool, block_keys
from .sampling import logprobs_of, process_logits, sample_token


@dataclass
class Row:
    """One output sequence: its prompt and the tokens generated so far, and where their keys and values are."""

    index: int  # its place in the request's output
    ids: list[int]  # prompt + generated
    budget: int  # how many more tokens it may generate
    rng: np.random.Generator | None
    text: object | None  # decodes its new tokens and watches for stop strings (generation.ContinuationText)
    done: bool = False
    finish_reason: str | None = None  # "stop" (EOS or a stop string), "length" (budget), "cancelled"
    blocks: list[int] = field(default_factory=list)  # the pool blocks of its positions, in order
    computed: int = 0  # the keys and values of ids[:computed] are in its blocks


@dataclass(frozen=True)
class NewToken:
    """A token a step gave one row. ``piece``: the text it completed ("" until a character is whole, never half
    of one). ``logprob`` and ``top_logprobs``: under the model's raw logits, when the request asks for them."""

    row: Row
    token_id: int
    piece: str
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None


# A prompt's log-probabilities are reduced from the logits this many positions at a time (float64 [n, vocab]).
SCORED_POSITIONS_AT_ONCE = 64


@dataclass
class Request:
    """One prompt and its output rows (num_return_sequences of them), with validated options.

    ``on_step(request, new)`` is called after every step that gave it tokens, with a list of :class:`NewToken`.
    top_logprobs: N for the log-probability of every generated token and its N likeliest alternatives (None: no
    log-probabilities). prompt_top_logprobs: the same for every prompt token but the first, into
    ``prompt_logprobs`` (such a request computes its whole prompt: it reuses no cached prefix).
    """

    prompt: list[int]
    rows: list[Row]
    options: object  # generation.GenerationOptions
    eos_ids: frozenset[int]
    on_step: Callable[[Request, list[NewToken]], None] | None = None
    error: BaseException | None = None
    top_logprobs: int | None = None
    prompt_top_logprobs: int | None = None
    # Set by the scheduler when prompt_top_logprobs is set: entry i is (logprob of prompt[i] given prompt[:i],
    # ((id, logprob), ...) of the N likeliest there); entry 0 is None. Complete once the prompt is computed.
    prompt_logprobs: list | None = None
    # Set by the scheduler:
    reserved: int = 0  # blocks of its reservation not yet taken
    prompt_keys: list[bytes] = field(default_factory=list)  # prefix keys of its full prompt blocks
    indexed: int = 0  # how many of them are recorded in the pool's prefix index
    reused_tokens: int = 0  # prompt positions whose keys and values came from the prefix index

    @property
    def finished(self) -> bool:
        return all(row.done for row in self.rows)

    @property
    def prefilled(self) -> bool:
        return self.rows[0].computed >= len(self.prompt)


def positions_fed(prompt_length: int, budget: int) -> int:
    """Positions one row fills in the cache: its prompt, then every generated token but the last (never fed).
    A budget of 0 (a prompt scored, nothing generated) still computes the whole prompt."""
    return prompt_length + max(budget - 1, 0)


def blocks_needed(prompt_length: int, budget: int, n_rows: int, block_size: int, reused_blocks: int = 0) -> int:
    """Blocks a request takes at most, past the ``reused_blocks`` it finds in the prefix index: row 0's
    blocks, and for each other row every block past the prompt's full ones (which the rows share)."""
    per_row = math.ceil(positions_fed(prompt_length, budget) / block_size)
    return per_row - reused_blocks + (n_rows - 1) * (per_row - prompt_length // block_size)


class Scheduler:
    """Admits requests as the pool and ``max_batch`` allow, then steps them all forward together.

    step_tokens: the tokens fed per step (running sequences first, then prompt chunks); it bounds how long a
    running sequence waits for its next token while prompts arrive.
    """

    def __init__(self, model, pool: BlockPool, *, max_batch: int, step_tokens: int):
        self.model = model
        self.pool = pool
        self.max_batch = max_batch
        self.step_tokens = step_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        # Totals since the start, for the engine's statistics.
        self.prompt_tokens_computed = 0  # prompt tokens fed to the model
        self.prompt_tokens_reused = 0  # prompt positions taken from the prefix index instead
        self.generated_tokens = 0

    # ---- requests in and out ---------------------------------------------------------------------
    def check_fits(self, request: Request) -> None:
        """Refuse a request that could never run here, even alone: it would wait forever."""
        n_rows = len(request.rows)
        if n_rows > self.max_batch:
            raise InputError(f"num_return_sequences={n_rows} is more than the {self.max_batch} sequences this "
                             "engine runs at once (max_batch)")
        size = self.pool.block_size
        need = blocks_needed(len(request.prompt), request.rows[0].budget, n_rows, size)
        if need > self.pool.n_blocks:
            raise InputError(
                f"the request needs up to {need * size} positions of KV cache ({n_rows} x "
                f"{positions_fed(len(request.prompt), request.rows[0].budget)}, sharing the prompt) and the "
                f"pool has {self.pool.n_blocks * size} (kv_cache_tokens): shorten it or raise kv_cache_tokens")

    def add(self, request: Request) -> None:
        if request.prompt_top_logprobs is not None:
            request.prompt_logprobs = [None]  # the first token has no context to be scored in
        self.waiting.append(request)

    def cancel(self, request: Request) -> None:
        """End a request now: its rows stop (finish_reason "cancelled") and give their blocks back."""
        if request in self.waiting:
            self.waiting.remove(request)
        for row in request.rows:
            if not row.done:
                row.done, row.finish_reason = True, "cancelled"
        self._retire(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _rows_running(self) -> int:
        return sum(len(request.rows) for request in self.running)

    def _admit(self) -> None:
        """Admit waiting requests in arrival order while their rows and reservations fit (none skips ahead:
        a large request is never starved by small ones arriving after it)."""
        pool, size = self.pool, self.pool.block_size
        while self.waiting:
            request = self.waiting[0]
            if self._rows_running() + len(request.rows) > self.max_batch:
                return
            prompt = request.prompt
            if not request.prompt_keys:
                request.prompt_keys = block_keys(prompt, size, len(prompt) // size)
            # Reuse whole cached blocks only, and leave at least the last prompt token to compute: its logits
            # give the first new token. A request scoring its prompt needs the logits of every position.
            reusable = request.prompt_keys[:(len(prompt) - 1) // size]
            reused = pool.cached_prefix(reusable) if request.prompt_top_logprobs is None else []
            need = blocks_needed(len(prompt), request.rows[0].budget, len(request.rows), size, len(reused))
            if pool.unreserved() < need + pool.idle(reused):
                return
            for block in reused:
                pool.hold(block)
            pool.reserve(need)
            request.reserved = need
            lead = request.rows[0]
            lead.blocks = reused
            lead.computed = request.reused_tokens = len(reused) * size
            request.indexed = len(reused)
            self.prompt_tokens_reused += request.reused_tokens
            self.waiting.popleft()
            self.running.append(request)

    def _retire(self, request: Request) -> None:
        """Give back a finished request's blocks and what is left of its reservation."""
        for row in request.rows:
            for block in row.blocks:
                self.pool.release(block)
            row.blocks = []
        self.pool.unreserve(request.reserved)
        request.reserved = 0
        if request in self.running:
            self.running.remove(request)

    # ---- one step ----------------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Admit what fits, run one forward pass, choose the next tokens; returns the requests that ended."""
        self._admit()
        feeds: list[tuple[Request, Row, int, int]] = []  # (request, row, token id, position)
        for request in self.running:
            if request.prefilled:
                feeds.extend((request, row, row.ids[-1], len(row.ids) - 1) for row in request.rows if not row.done)
        room = self.step_tokens - len(feeds)
        for request in self.running:
            lead = request.rows[0]
            if request.prefilled or room <= 0:
                continue
            chunk = min(len(request.prompt) - lead.computed, room)
            feeds.extend((request, lead, request.prompt[p], p) for p in range(lead.computed, lead.computed + chunk))
            room -= chunk
            self.prompt_tokens_computed += chunk
        if not feeds:
            return []
        logits, logit_row_of = self._forward(feeds)
        # The logits after each row's last known token (keyed by id(row)), and those of the prompt positions
        # of requests scoring their prompt (by id(request): [(position, logit row)]).
        logits_at, scored = {}, {}
        for t, i in logit_row_of.items():
            request, row, _, position = feeds[t]
            if position == len(row.ids) - 1:
                logits_at[id(row)] = logits[i]
            else:
                scored.setdefault(id(request), []).append((position, i))
        ended = []
        for request in self.running:
            new = []
            try:
                if id(request) in scored:
                    score_prompt(request, scored[id(request)], logits)
                self._advance(request, logits_at, new)
            except NonFiniteError as error:
                request.error = error
                for row in request.rows:
                    row.done, row.finish_reason = True, "error"
            if new and request.on_step is not None:
                request.on_step(request, new)
            if request.finished:
                ended.append(request)
        for request in ended:
            self._retire(request)
        return ended

    def _forward(self, feeds: list[tuple[Request, Row, int, int]]) -> tuple[np.ndarray, dict[int, int]]:
        """Write the fed tokens' keys and values into their rows' blocks; return the logits needed and, for
        each feed they follow, its row in them: after each row's last fed token when that token is the last
        one the row has, and after every prompt token of a request scoring its prompt."""
        pool, size = self.pool, self.pool.block_size
        rows: dict[int, int] = {}  # id(row) -> its row in the block table
        table_rows: list[Row] = []
        for request, row, _, position in feeds:
            while position // size >= len(row.blocks):
                row.blocks.append(pool.take())
                request.reserved -= 1
            if id(row) not in rows:
                rows[id(row)] = len(table_rows)
                table_rows.append(row)
        width = max(len(row.blocks) for row in table_rows)
        tables = np.zeros((len(table_rows), width), np.int32)
        for i, row in enumerate(table_rows):
            tables[i, :len(row.blocks)] = row.blocks
        ids = np.array([token for _, _, token, _ in feeds], np.int64)
        token_seq = np.array([rows[id(row)] for _, row, _, _ in feeds], np.int32)
        token_pos = np.array([position for _, _, _, position in feeds], np.int32)
        # The logits a row needs: after its last token, once the row has no more known tokens to feed.
        wanted = [t for t, (request, row, _, position) in enumerate(feeds)
                  if position == len(row.ids) - 1 or request.prompt_top_logprobs is not None]
        logit_rows = np.array(wanted, np.int64)
        logits = self.model._forward_tokens(pool, ids, token_seq, token_pos, tables, logit_rows)
        for _, row, _, position in feeds:
            row.computed = max(row.computed, position + 1)
        return logits, {t: i for i, t in enumerate(wanted)}

    def _advance(self, request: Request, logits_at: dict[int, np.ndarray], new: list) -> None:
        """After a step: index the request's newly filled prompt blocks; when its prompt has just been
        computed, give every row the prompt's blocks; choose each row's next token."""
        lead = request.rows[0]
        full = min(lead.computed, len(request.prompt)) // self.pool.block_size
        for i in range(request.indexed, full):
            self.pool.index(lead.blocks[i], request.prompt_keys[i])
        request.indexed = max(request.indexed, full)
        if id(lead) not in logits_at:
            return
        if lead.budget == 0:  # the prompt was only to be scored: it is computed now
            for row in request.rows:
                row.done, row.finish_reason = True, "length"
            return
        if len(lead.ids) == len(request.prompt) and len(request.rows) > 1:
            self._share_prompt(request)
            for row in request.rows:
                logits_at[id(row)] = logits_at[id(lead)]
        for row in request.rows:
            logits = logits_at.get(id(row))
            if logits is not None and not row.done:
                new.append(advance(row, logits, request))
                self.generated_tokens += 1

    def _share_prompt(self, request: Request) -> None:
        """Rows 1.. take row 0's prompt: its full blocks shared, its partial last block copied (each row will
        write its own tokens there)."""
        lead, pool = request.rows[0], self.pool
        full, partial = divmod(len(request.prompt), pool.block_size)
        for row in request.rows[1:]:
            for block in lead.blocks[:full]:
                pool.hold(block)
            row.blocks = lead.blocks[:full]
            if partial:
                block = pool.take()
                request.reserved -= 1
                pool.copy(lead.blocks[full], block, partial)
                row.blocks = [*row.blocks, block]
            row.computed = len(request.prompt)


def score_prompt(request: Request, scored: list[tuple[int, int]], logits: np.ndarray) -> None:
    """Add the log-probabilities of the prompt tokens after the ``scored`` (position, logit row) pairs (one
    prefill chunk, in order) to request.prompt_logprobs."""
    for first in range(0, len(scored), SCORED_POSITIONS_AT_ONCE):
        part = scored[first:first + SCORED_POSITIONS_AT_ONCE]
        targets = np.array([request.prompt[position + 1] for position, _ in part], np.int64)
        chosen, tops = logprobs_of(logits[[i for _, i in part]], targets, request.prompt_top_logprobs)
        request.prompt_logprobs.extend(zip(chosen.tolist(), tops))


def advance(row: Row, logits: np.ndarray, request: Request) -> NewToken:
    """Append the row's next token (with its log-probabilities, if the request asks)."""
    token = next_token(logits, row, request)
    row.ids.append(token)
    row.budget -= 1
    piece, stopped = row.text.push(token) if row.text is not None else ("", False)
    if stopped or token in request.eos_ids:
        row.done, row.finish_reason = True, "stop"
    elif row.budget == 0:
        row.done, row.finish_reason = True, "length"
    if row.done and row.text is not None:
        piece += row.text.flush()
    if request.top_logprobs is None:
        return NewToken(row, token, piece)
    chosen, tops = logprobs_of(logits[None], np.array([token]), request.top_logprobs)
    return NewToken(row, token, piece, float(chosen[0]), tops[0])


def next_token(logits: np.ndarray, row: Row, request: Request) -> int:
    """logits: float32 [V] from the model -> the chosen token id."""
    if not np.isfinite(logits).all():
        raise NonFiniteError(f"NaN or infinity in the model's logits after {len(row.ids)} tokens of output "
                             f"sequence {row.index}: the computation overflowed float32 (extreme weights or "
                             "activations)")
    options = request.options
    scores = process_logits(logits, row.ids, options, prompt_length=len(request.prompt))
    return sample_token(scores, row.rng) if options.do_sample else int(np.argmax(scores))
