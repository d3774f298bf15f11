"""``tinygpt serve``: an OpenAI-compatible HTTP server and the Write With Transformer editor page.

Needs the serve extra (``pip install "tinygpt[serve]"``: starlette and uvicorn). :func:`serve` runs it in the
foreground; :func:`~tinygpt.server.app.create_app` gives the ASGI app to run under another ASGI server.
"""

from __future__ import annotations

import logging
import signal

__all__ = ["serve", "SHUTDOWN_GRACE_SECONDS"]

# On Ctrl-C or SIGTERM the server stops accepting at once, lets running streams go on this long, then
# cancels what is left (their sequences leave the engine at its next step).
SHUTDOWN_GRACE_SECONDS = 3
INSTALL_HINT = 'pip install "tinygpt[serve]"'


def serve(model: str = "distilgpt2", *, revision: str | None = None, served_name: str | None = None, dtype: str = "float32", host: str = "127.0.0.1", port: int = 8000,
          max_batch: int = 16, max_queue: int = 64, kv_cache_tokens: int | None = None,
          api_key: str | None = None, log_level: str = "info") -> None:
    """Serve ``model`` on ``host:port`` until Ctrl-C or SIGTERM. Loopback by default: ``host="0.0.0.0"``
    opens it to the network. ``served_name``: the model id clients send (default: ``model`` as given).
    ``api_key``: clients must send ``Authorization: Bearer <api_key>``.
    Raises RuntimeError if the model cannot be loaded (the server stops then)."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise RuntimeError(f"tinygpt serve needs the serve extra ({error.name} is not installed): "
                           f"{INSTALL_HINT}") from None
    from .app import ServerSettings, create_app

    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(message)s")
    settings = ServerSettings(model=model, revision=revision, served_name=served_name, dtype=dtype, max_batch=max_batch, max_queue=max_queue,
                              kv_cache_tokens=kv_cache_tokens, api_key=api_key)
    server = None

    def stop(error: BaseException) -> None:
        server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn takes SIGINT and SIGTERM while it runs (stop accepting, drain, shut down) and raises them again
    # to the handlers it found once it is done: let those be no-ops, so a requested stop exits with status 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failure = app.state.tinygpt.load_error
    if failure is not None:
        raise RuntimeError(f"could not load {model}: {failure}") from failure
    if not server.started:
        raise RuntimeError(f"the server did not start on {host}:{port} (see the log above)")


def _stopped(signum, frame) -> None:
    """What a SIGINT or SIGTERM does once uvicorn has shut down: nothing more."""
