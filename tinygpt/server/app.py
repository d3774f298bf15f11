"""The ASGI app of ``tinygpt serve``: OpenAI's endpoints and the editor page, on one :class:`~tinygpt.Engine`.

The app answers at once and loads the model in a thread: /health says 503 until the model is loaded and its
kernels are compiled, 200 after. Every generation runs on the engine's compute thread (embeddings too, via
``engine.run``), so requests share its batched steps; the event loop only parses, checks and streams.

Bounds: a body over ``MAX_BODY_BYTES`` is refused while it is read; past ``max_queue`` requests waiting for
the engine, a new one gets 503 with Retry-After (nothing is queued for it). A client that goes away has its
sequences cancelled at the engine's next step, streamed or not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import InputError
from . import metrics
from . import openai_schemas as schemas
from .completions import Completion, TokenStrings, tokenize
from .openai_schemas import APIError

log = logging.getLogger("tinygpt.server")

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 2 * 1024 * 1024  # some hundred prompts of a full context as token ids
RETRY_AFTER_SECONDS = 1


@dataclass
class ServerSettings:
    model: str  # the hub name or local path to load
    revision: str | None = None
    served_name: str | None = None  # the model id clients ask for (default: ``model`` as given)
    dtype: str = "float32"
    max_batch: int = 16
    max_queue: int = 64
    kv_cache_tokens: int | None = None  # None: the engine's default
    api_key: str | None = None

    @property
    def model_id(self) -> str:
        return self.served_name or self.model


@dataclass
class ServerState:
    """What the routes share: the model and engine once loaded, and the server's own counters."""

    settings: ServerSettings
    model: object = None
    engine: object = None
    strings: TokenStrings | None = None
    created: int = field(default_factory=schemas.now)
    load_error: BaseException | None = None
    rejected: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)

    @property
    def ready(self) -> bool:
        return self.engine is not None


def create_app(settings: ServerSettings, *, load: Callable[[ServerSettings], object] | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> Starlette:
    """The app. ``load(settings)`` returns the model (default: ``Model.from_pretrained``); it runs in a thread
    when the app starts. ``on_load_failure(error)`` is told if it fails (``serve`` then stops the server)."""
    state = ServerState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = threading.Thread(target=_load, args=(state, load or _from_pretrained, on_load_failure),
                                  name="tinygpt-load", daemon=True)
        loader.start()
        try:
            yield
        finally:
            if state.engine is not None:
                state.engine.close()

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/metrics", metrics_endpoint),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={APIError: _api_error, HTTPException: _http_error})
    app.state.tinygpt = state
    return app


# ------------------------------------------------------------------------------------------ loading
def _from_pretrained(settings: ServerSettings):
    from ..model import Model

    return Model.from_pretrained(settings.model, revision=settings.revision, dtype=settings.dtype)


def _load(state: ServerState, load, on_load_failure) -> None:
    try:
        started = time.monotonic()
        model = load(state.settings)
        if model.tokenizer is None:
            raise InputError(f"{state.settings.model} has no tokenizer files: the server needs them to read and "
                             "write text")
        from ..engine import Engine

        options = {} if state.settings.kv_cache_tokens is None else {"kv_cache_tokens": state.settings.kv_cache_tokens}
        engine = Engine(model, max_batch=state.settings.max_batch, **options)
        # Compile (or load from the cache) every kernel a request meets before saying ready, so the first
        # client does not wait for it.
        engine.submit(model.encode_prompt("Hello") or [model.config.bos_token_id], max_new_tokens=2,
                      logprobs=1, prompt_logprobs=1).result()
        engine.run(model.embed, "Hello").result()
        state.model, state.strings = model, TokenStrings(model.tokenizer)
        state.engine = engine
        log.info("model %s (%s) ready in %.1f s", state.settings.model, state.settings.dtype,
                 time.monotonic() - started)
    except BaseException as error:
        state.load_error = error
        log.error("could not load the model %s: %s", state.settings.model, " ".join(str(error).split()))
        if on_load_failure is not None:
            on_load_failure(error)


# ------------------------------------------------------------------------------------------ plumbing
def _state(request: Request) -> ServerState:
    return request.app.state.tinygpt


async def _api_error(request: Request, error: APIError) -> Response:
    _state(request).responses[error.status] += 1
    # A refused request gets its log line too: the client may not show the server's answer.
    log.info("%s %s refused: %d %s", request.method, request.url.path, error.status, error.message)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own 404 and 405 in OpenAI's error shape."""
    message = {404: f"no such endpoint: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
    body = APIError(error.status_code, message, code="not_found" if error.status_code == 404 else None).body()
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def _ready_state(request: Request) -> ServerState:
    """The state of a server that can take API requests: authorised, and with the model loaded."""
    state = _state(request)
    key = state.settings.api_key
    if key is not None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken does not tell how much of a guessed key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "a valid API key is required: send it as 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not state.ready:
        raise APIError(503, "the model is still loading; try again shortly", code="model_loading",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return state


async def _json_body(request: Request):
    """The request's JSON, read up to MAX_BODY_BYTES (a larger body is refused as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise APIError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None


def _too_large() -> APIError:
    return APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="body_too_large")


def _check_queue(state: ServerState, new_requests: int) -> None:
    waiting = state.engine.stats().requests_waiting
    if waiting + new_requests > state.settings.max_queue:
        state.rejected["queue_full"] += 1
        raise APIError(503, f"the server is busy: {waiting} requests are waiting (at most "
                       f"{state.settings.max_queue}); retry later", code="queue_full",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone (or the response is complete: then nobody waits for this any more)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


# ------------------------------------------------------------------------------------------ endpoints
async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def health(request: Request) -> Response:
    state = _state(request)
    if state.ready:
        return JSONResponse({"status": "ok"})
    status = "failed" if state.load_error is not None else "loading"
    return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def metrics_endpoint(request: Request) -> Response:
    state = _ready_state(request)
    return PlainTextResponse(metrics.render(state.engine.stats(), state.rejected, state.responses),
                             media_type=metrics.CONTENT_TYPE)


async def models(request: Request) -> Response:
    state = _ready_state(request)
    return JSONResponse(schemas.models_list(state.settings.model_id, state.created))


async def chat_completions(request: Request) -> Response:
    _ready_state(request)
    raise APIError(400, f"{_state(request).settings.model_id} has no chat template: GPT-2 models continue text, "
                   "they were not trained on conversations. Use POST /v1/completions with a prompt to continue.",
                   code="no_chat_template")


async def completions(request: Request) -> Response:
    state = _ready_state(request)
    body = await _json_body(request)
    model = state.model
    params = schemas.parse_completion(body, state.settings.model_id, max_n=state.settings.max_batch,
                                      vocab_size=model.config.vocab_size)
    prompts = tokenize(model, params)
    _check_queue(state, len(prompts))
    completion = Completion(state.engine, model, params, prompts, state.strings, f"cmpl-{uuid.uuid4().hex}")
    try:
        completion.start()
    except InputError as error:  # what only the engine can check (a request larger than its KV cache)
        raise APIError(400, str(error), code="invalid_value") from None
    state.responses[200] += 1
    if params.stream:
        return StreamingResponse(_stream(completion), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    watcher = asyncio.ensure_future(_until_disconnected(request))
    result = asyncio.ensure_future(completion.whole())
    try:
        await asyncio.wait({watcher, result}, return_when=asyncio.FIRST_COMPLETED)
        if not result.done():  # the client went away: free its sequences
            completion.cancel()
            result.cancel()
            _log(completion, "disconnected")
            return Response(status_code=499)
        body = result.result()
    except APIError as error:
        _log(completion, "error")
        raise error
    finally:
        watcher.cancel()
    _log(completion)
    return JSONResponse(body)


async def _stream(completion: Completion):
    """The SSE body. Starlette cancels this when the client disconnects; the sequences are cancelled then."""
    ending = "disconnected"
    try:
        async for chunk in completion.chunks():
            yield _sse(chunk)
        ending = None
    except APIError as error:
        yield _sse(error.body())
        ending = "error"
    finally:
        completion.cancel()  # nothing if every sequence ended
        _log(completion, ending)
    yield _sse("[DONE]")


def _log(completion: Completion, ending: str | None = None) -> None:
    completion.record_finish()  # the tokens generated so far, however it ended
    outcome = completion.outcome
    elapsed = time.monotonic() - completion.started
    first = outcome.first_token_at
    ttft = f"{first - completion.started:.3f}s" if first is not None else "-"
    reasons = ending or ",".join(sorted({r or "-" for r in outcome.finish_reasons})) or "-"
    log.info("%s prompt_tokens=%d completion_tokens=%d ttft=%s %.1f tok/s finish=%s", completion.id,
             outcome.prompt_tokens, outcome.completion_tokens, ttft,
             outcome.completion_tokens / elapsed if elapsed > 0 else 0.0, reasons)


async def embeddings(request: Request) -> Response:
    state = _ready_state(request)
    body = await _json_body(request)
    model = state.model
    params = schemas.parse_embedding(body, state.settings.model_id, n_embd=model.config.n_embd,
                                     vocab_size=model.config.vocab_size)
    id_lists = []
    for index, given in enumerate(params.inputs):
        ids = model.tokenizer.encode(given) if isinstance(given, str) else given
        name = "input" if len(params.inputs) == 1 else f"input[{index}]"
        if not ids:
            raise schemas.invalid(name, "has no tokens to embed")
        if len(ids) > model.config.n_positions:
            raise schemas.invalid(name, f"has {len(ids)} tokens, more than the model's context of "
                                  f"{model.config.n_positions}")
        id_lists.append(ids)
    _check_queue(state, 1)
    from ..scoring import mean_pooled

    future = state.engine.run(lambda: [mean_pooled(model, ids) for ids in id_lists])
    vectors = await asyncio.wrap_future(future)
    if params.base64:
        encoded = [base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        encoded = [np.asarray(v, np.float32).tolist() for v in vectors]
    state.responses[200] += 1
    return JSONResponse(schemas.embeddings(state.settings.model_id, encoded, sum(map(len, id_lists))))
