"""Running the app under uvicorn: its connection settings (keep-alive, concurrency cap, a header timeout), and a
server in a background thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

DEFAULT_TIMEOUT_KEEP_ALIVE = 5
DEFAULT_LIMIT_CONCURRENCY = 1000
DEFAULT_HEADER_TIMEOUT = 10.0


def http_protocol() -> type:
    """uvicorn's fastest HTTP/1.1 protocol installed: httptools' C parser (the serve extra installs
    ``uvicorn[standard]``), else the pure-Python h11 one."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


def header_timeout_protocol(seconds: float, base: type | None = None) -> type:
    """uvicorn's HTTP protocol (``base``, default :func:`http_protocol`) closing a connection whose request line
    and headers are not complete within ``seconds`` of the connection opening or of the previous answer (uvicorn
    has no such timeout of its own: a client sending half a header would hold its connection for ever)."""
    base = base or http_protocol()

    class HeaderTimeoutProtocol(base):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # still waiting for a request's headers
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self._arm()
            super().data_received(data)
            if self.cycle is not cycle:  # the headers of a new request are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def freeze_loaded_objects() -> None:
    """Move every object alive now (the model, tokenizer, tagger: millions of them) out of the garbage collector's
    reach (``gc.freeze``): a full collection under load then scans only what requests allocate, instead of freezing
    every thread for a few hundred milliseconds (``/health`` included). Call it once everything is loaded."""
    import gc

    gc.collect()
    gc.freeze()


def uvicorn_settings(*, log_level: str = "info", timeout_keep_alive: int = DEFAULT_TIMEOUT_KEEP_ALIVE,
                     limit_concurrency: int | None = DEFAULT_LIMIT_CONCURRENCY,
                     header_timeout: float | None = DEFAULT_HEADER_TIMEOUT, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config``: idle keep-alive connections close after
    ``timeout_keep_alive`` s, above ``limit_concurrency`` connections or tasks new requests get 503, and a request
    whose headers take longer than ``header_timeout`` s loses its connection (None: no limit)."""
    if header_timeout is not None:
        kwargs["http"] = header_timeout_protocol(header_timeout)
    return {"log_level": log_level, "timeout_keep_alive": timeout_keep_alive,
            "limit_concurrency": limit_concurrency, **kwargs}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None,
                    timeout: float = 30.0, **config: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields the base URL once /health answers. ``config``:
    the settings of :func:`uvicorn_settings`."""
    import httpx
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                           **uvicorn_settings(**{"log_level": "warning", **config})))
    thread = threading.Thread(target=server.run, name=f"rocmre-serve-{port}", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the server on {url} did not come up within {timeout} s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
