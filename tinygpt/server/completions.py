"""One /v1/completions request on the engine: its prompts in, OpenAI's choices out, streamed or whole.

Each prompt is one engine request; its ``n`` output rows are choices ``prompt_index * n + row``. Greedy
decoding (temperature 0) gives the same sequence every time, so for ``n > 1`` it runs once and every choice
gets its tokens. Text reaches the client as whole characters; with stop strings, the tail that could still
become one is held back until it cannot, and a stop string ends the text where it starts (OpenAI leaves it
out). Logprobs are the model's own distribution (log-softmax of the raw logits, before penalties,
temperature or filters), as the engine reports them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from . import openai_schemas as schemas
from .openai_schemas import APIError, CompletionParams


class TokenStrings:
    """A token's text as OpenAI shows it in logprobs: its decoded text, or ``bytes:\\xNN...`` for a token that
    is part of a character (GPT-2's byte-level tokens can split one)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._known: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._known.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id])
            if "\ufffd" in text and hasattr(self._tokenizer, "token_bytes"):
                text = "bytes:" + "".join(f"\\x{byte:02x}" for byte in self._tokenizer.token_bytes(token_id))
            self._known[token_id] = text
        return text


@dataclass
class Prompt:
    text: str  # what echo returns: the prompt as given, or its ids decoded
    ids: list[int]
    budget: int  # max_tokens for it


def tokenize(model, params: CompletionParams) -> list[Prompt]:
    """Each prompt's ids and token budget, checked against the context (APIErrors name the field)."""
    context = model.config.n_positions
    prompts = []
    for index, given in enumerate(params.prompts):
        name = "prompt" if len(params.prompts) == 1 else f"prompt[{index}]"
        if isinstance(given, str):
            text, ids = given, model.encode_prompt(given)
        else:
            text, ids = model.decode(given), given
        if not ids:  # an empty text: start from the beginning-of-text token, as OpenAI does
            ids = [model.config.bos_token_id]
        if len(ids) >= context:
            raise schemas.invalid(name, f"has {len(ids)} tokens, and the model's context is {context}: there is no "
                                  "room for a new token")
        room = context - len(ids)
        if params.max_tokens is None:
            budget = min(schemas.DEFAULT_MAX_TOKENS, room)
        elif params.max_tokens > room:
            raise schemas.invalid("max_tokens", f"{params.max_tokens} new tokens after the {len(ids)} tokens of "
                                  f"{name} would run past the model's context of {context}: at most {room}")
        else:
            budget = params.max_tokens
        prompts.append(Prompt(text, ids, budget))
    return prompts


def engine_options(params: CompletionParams, budget: int) -> dict:
    """The engine's options for one prompt of this request."""
    options = dict(max_new_tokens=budget, repetition_penalty=params.repetition_penalty,
                   presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                   logit_bias=params.logit_bias or None, stop=list(params.stop) or None)
    if params.ignore_eos:
        options["eos_token_id"] = None
    if not params.greedy:
        options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                       top_k=params.top_k or None, seed=params.seed, num_return_sequences=params.n)
    if params.logprobs is not None:
        options["logprobs"] = params.logprobs
        if params.echo:
            options["prompt_logprobs"] = params.logprobs
    return options


# ------------------------------------------------------------------------------------------ one choice
@dataclass
class Logprobs:
    """OpenAI's logprobs object of one choice, built token by token."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, token: str, logprob: float | None, top: dict[str, float] | None, offset: int) -> None:
        self.tokens.append(token)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.text_offset.append(offset)

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
                "text_offset": self.text_offset}


def top_dict(strings: TokenStrings, top, chosen: int, chosen_logprob: float) -> dict[str, float]:
    """The N likeliest tokens, and the chosen one (OpenAI always includes it: up to N + 1 entries)."""
    entries = {strings(token): logprob for token, logprob in top}
    entries.setdefault(strings(chosen), chosen_logprob)
    return entries


class Choice:
    """One output sequence as the client receives it: text released as it becomes final, with its logprobs."""

    def __init__(self, index: int, stop: tuple[str, ...], offset: int, strings: TokenStrings | None):
        self.index = index
        self.stop = stop
        self._base = offset  # text offset of the first new character (OpenAI counts from the prompt's start)
        self._strings = strings  # None: no logprobs asked for
        self._text = ""  # everything decoded so far
        self._released = 0  # characters of it sent
        self._pending: list[tuple[int, int, float, tuple]] = []  # tokens not yet sent: (id, offset, lp, top)
        self.generated = 0
        self.finish_reason: str | None = None

    def push(self, token_id: int, piece: str, logprob, top, finish_reason: str | None) -> tuple[str, Logprobs | None]:
        """Add a token; returns the text (and the logprobs of the tokens) that can be sent now."""
        self.generated += 1
        self._pending.append((token_id, len(self._text), logprob, top))
        self._text += piece
        if finish_reason is not None:
            return self._finish(finish_reason)
        return self._release(len(self._text) - self._held_back())

    def end(self, finish_reason: str) -> tuple[str, Logprobs | None]:
        """The sequence ended without a last token (max_tokens 0, or cancelled)."""
        return self._finish(finish_reason)

    def _finish(self, finish_reason: str) -> tuple[str, Logprobs | None]:
        end = len(self._text)
        cuts = [at for at in (self._text.find(stop) for stop in self.stop) if at >= 0]
        if cuts:
            end, finish_reason = min(cuts), "stop"
        self.finish_reason = finish_reason
        return self._release(end, final=True)

    def _held_back(self) -> int:
        """Characters at the end that could be the start of a stop string."""
        for length in range(min(len(self._text), max(map(len, self.stop), default=1) - 1), 0, -1):
            tail = self._text[-length:]
            if any(stop.startswith(tail) for stop in self.stop):
                return length
        return 0

    def _release(self, end: int, final: bool = False) -> tuple[str, Logprobs | None]:
        text = self._text[self._released:end]
        self._released = max(self._released, end)
        logprobs = Logprobs() if self._strings is not None else None
        keep = []
        for token_id, offset, logprob, top in self._pending:
            # A token goes out with the text it starts in; once final, tokens past a stop string never do.
            if offset < end or (final and offset == end and end == len(self._text)):
                if logprobs is not None:
                    logprobs.add(self._strings(token_id), logprob, top_dict(self._strings, top, token_id, logprob),
                                 self._base + offset)
            elif not final:
                keep.append((token_id, offset, logprob, top))
        self._pending = keep
        return text, logprobs


def prompt_logprobs(prompt: Prompt, entries, strings: TokenStrings, tokenizer) -> Logprobs:
    """The echoed prompt's logprobs: the first token has none (nothing comes before it)."""
    logprobs = Logprobs()
    decoder = tokenizer.incremental_decoder(skip_special_tokens=True)
    offset = 0
    for token_id, entry in zip(prompt.ids, entries):
        if entry is None:
            logprobs.add(strings(token_id), None, None, offset)
        else:
            logprob, top = entry
            logprobs.add(strings(token_id), logprob, top_dict(strings, top, token_id, logprob), offset)
        offset += len(decoder.push(token_id))
    return logprobs


# ------------------------------------------------------------------------------------------ the request
@dataclass
class Outcome:
    """What the request log line reports."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    finish_reasons: list[str | None] = field(default_factory=list)


class Completion:
    """A /v1/completions request running on the engine. Submit with :meth:`start`; then either iterate
    :meth:`chunks` (streaming) or await :meth:`whole`; :meth:`cancel` ends its sequences."""

    def __init__(self, engine, model, params: CompletionParams, prompts: list[Prompt], strings: TokenStrings,
                 request_id: str):
        self.engine, self.model, self.params, self.prompts = engine, model, params, prompts
        self.strings, self.id = strings, request_id
        self.created = schemas.now()
        self.started = time.monotonic()
        self.outcome = Outcome(prompt_tokens=sum(len(p.ids) for p in prompts))
        self.handles = []
        want = strings if params.logprobs is not None else None
        n = params.n
        self.choices = [Choice(i * n + j, params.stop, len(prompt.text), want)
                        for i, prompt in enumerate(prompts) for j in range(n)]

    def start(self) -> None:
        try:
            for prompt in self.prompts:
                self.handles.append(self.engine.submit(prompt.ids, **engine_options(self.params, prompt.budget)))
        except Exception:
            self.cancel()
            raise

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    def _choices_of(self, prompt_index: int, row: int) -> list[Choice]:
        n = self.params.n
        first = prompt_index * n
        if self.params.greedy:  # one row computed, n identical choices
            return self.choices[first:first + n]
        return [self.choices[first + row]]

    async def _events(self) -> AsyncIterator[tuple[int, object]]:
        """(prompt index, engine event) in arrival order across the prompts; (index, None) when one ends."""
        queue: asyncio.Queue = asyncio.Queue()

        async def follow(index: int, handle) -> None:
            try:
                async for event in handle:
                    queue.put_nowait((index, event))
                queue.put_nowait((index, None))
            except Exception as error:  # the engine failed this request: report it, in order
                queue.put_nowait((index, error))

        tasks = [asyncio.ensure_future(follow(i, handle)) for i, handle in enumerate(self.handles)]
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if isinstance(item, Exception):
                    raise APIError(500, f"generation failed: {item}", code="generation_failed")
                if item is None:
                    running -= 1
                yield index, item
        finally:
            for task in tasks:
                task.cancel()

    def _echo(self, prompt_index: int) -> tuple[str, Logprobs | None]:
        prompt = self.prompts[prompt_index]
        if self.params.logprobs is None:
            return prompt.text, None
        entries = self.handles[prompt_index].prompt_logprobs
        return prompt.text, prompt_logprobs(prompt, entries, self.strings, self.model.tokenizer)

    def _choices_of_prompt(self, prompt_index: int) -> list[Choice]:
        n = self.params.n
        return self.choices[prompt_index * n:(prompt_index + 1) * n]

    async def chunks(self) -> AsyncIterator[dict]:
        """The streamed chunks: each prompt's echo (if asked) once its prompt is computed, then text as it
        comes, then the usage chunk (if asked)."""
        echoed = set()
        async for index, event in self._events():
            pieces = []
            if self.params.echo and index not in echoed:
                echoed.add(index)
                text, logprobs = self._echo(index)
                pieces += [schemas.choice(choice.index, text, logprobs and logprobs.as_dict(), None)
                           for choice in self._choices_of_prompt(index)]
            for choice, (text, logprobs) in self._advance(index, event):
                if text or (logprobs and logprobs.tokens) or choice.finish_reason:
                    pieces.append(schemas.choice(choice.index, text, logprobs and logprobs.as_dict(),
                                                 choice.finish_reason))
            for piece in pieces:
                yield schemas.completion(self.id, self.params.model, self.created, [piece], None)
        if self.params.include_usage:
            yield schemas.completion(self.id, self.params.model, self.created, [], self.usage())

    async def whole(self) -> dict:
        """The whole response, once every choice has ended."""
        texts = {choice.index: [] for choice in self.choices}
        logprobs = {choice.index: Logprobs() for choice in self.choices}
        async for index, event in self._events():
            for choice, (text, piece_logprobs) in self._advance(index, event):
                texts[choice.index].append(text)
                _extend(logprobs[choice.index], piece_logprobs)
        choices = []
        for index in range(len(self.prompts)):
            echo, echo_logprobs = self._echo(index) if self.params.echo else ("", None)
            for choice in self._choices_of_prompt(index):
                full = Logprobs()
                _extend(full, echo_logprobs)
                _extend(full, logprobs[choice.index])
                choices.append(schemas.choice(choice.index, echo + "".join(texts[choice.index]),
                                              full.as_dict() if self.params.logprobs is not None else None,
                                              choice.finish_reason))
        return schemas.completion(self.id, self.params.model, self.created, choices, self.usage())

    def _advance(self, index: int, event) -> list[tuple[Choice, tuple[str, Logprobs | None]]]:
        """Hand an engine event to the choices it belongs to (None: the prompt's request ended)."""
        if event is None:  # rows that ended without a last token: max_tokens 0, or cancelled
            reasons = self.handles[index].finish_reasons()
            ended = []
            for row, reason in enumerate(reasons):
                for choice in self._choices_of(index, row):
                    if choice.finish_reason is None:
                        ended.append((choice, choice.end(_openai_reason(reason))))
            self.record_finish()
            return ended
        if self.outcome.first_token_at is None:
            self.outcome.first_token_at = time.monotonic()
        reason = _openai_reason(event.finish_reason) if event.finish_reason is not None else None
        return [(choice, choice.push(event.token_id, event.text or "", event.logprob, event.top_logprobs or (),
                                     reason))
                for choice in self._choices_of(index, event.row)]

    def record_finish(self) -> None:
        self.outcome.completion_tokens = sum(choice.generated for choice in self.choices)
        self.outcome.finish_reasons = [choice.finish_reason for choice in self.choices]

    def usage(self) -> dict:
        self.record_finish()
        return schemas.usage(self.outcome.prompt_tokens, self.outcome.completion_tokens)


def _extend(logprobs: Logprobs, more: Logprobs | None) -> None:
    if more is not None:
        for values in zip(more.tokens, more.token_logprobs, more.top_logprobs, more.text_offset):
            logprobs.add(*values)


def _openai_reason(reason: str | None) -> str | None:
    """The engine's finish reasons in OpenAI's words: "stop", "length"; a cancelled row was aborted."""
    return {"stop": "stop", "length": "length"}.get(reason, "abort" if reason is not None else None)
