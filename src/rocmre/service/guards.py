"""ASGI guards in front of the app: the Host and Origin headers are checked against the names the server
answers to (DNS rebinding, cross-site forms), and a request body is read whole, in time, and checked (size, JSON
nesting) before any route sees it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rocmre.service.limits import MAX_JSON_DEPTH, json_too_deep
from rocmre.service.metrics import refuse_reason


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    """Answer a request directly from a guard."""
    body = json.dumps(payload).encode()  # (ASCII escapes: anything serialises)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Reads a request body whole before the app sees it: 413 above ``max_bytes`` (by Content-Length, or counted
    when chunked), 408 when it takes longer than ``body_timeout`` seconds (None: no limit), 400 for JSON nested
    deeper than ``max_depth``; a client that disconnects meanwhile is dropped quietly."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH,
                 body_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.body_timeout = body_timeout

    async def _too_large(self, scope: Scope, send: Send, size: int | None) -> None:
        refuse_reason(scope, "body_too_large")
        got = "a body" if size is None else f"a body of {size} bytes"
        await send_json(send, 413, {"detail": f"request too large: {got} exceeds the limit of {self.max_bytes} "
                                              f"bytes ({self.max_bytes / 2 ** 20:.1f} MB; see --max-request-mb)"})

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the request was answered (too large) or the client left."""
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                refuse_reason(scope, "body_timeout")
                await send_json(send, 408, {"detail": f"the request body did not arrive within {self.body_timeout:g} s "
                                                      "(see --body-timeout)"})
                return None
            if message["type"] == "http.disconnect":
                return None  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, send, None)
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size: int | None = int(length)
            except ValueError:
                size = None
            if size is None or size > self.max_bytes:
                await self._too_large(scope, send, size)
                return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if body and not ctype.startswith("multipart/") and await run_in_threadpool(json_too_deep, body,
                                                                                   self.max_depth):
            refuse_reason(scope, "json_too_deep")
            await send_json(send, 400, {"detail": f"the JSON body nests arrays/objects more than {self.max_depth} "
                                                  "levels deep; a request needs at most 4"})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(value: str) -> str:
    """The host of a Host header value (``name[:port]``, ``[v6]:port``), lower-cased, without a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def default_allowed_hosts(bind: str) -> list[str]:
    """The names a server bound to ``bind`` answers to by default: the loopback names, and ``bind`` itself when it
    is one address or name. A server on every interface (0.0.0.0, ::) adds this machine's name and addresses; other
    names clients use must be given (``--allowed-hosts``)."""
    hosts = list(LOOPBACK_HOSTS)
    if bind in ANY_ADDRESS:
        import socket

        name = socket.gethostname()
        hosts.append(name)
        with contextlib.suppress(OSError):
            hosts.extend(socket.gethostbyname_ex(name)[2])
    else:
        hosts.append(host_name(bind))
    return list(dict.fromkeys(h.lower() for h in hosts))


class HostGuard:
    """403 for a request whose Host header names a host not in ``allowed_hosts`` (``"*"`` allows any), so that a
    web page whose domain is rebound to this address cannot reach the server (DNS rebinding); and 403 for a
    request that changes something (not GET/HEAD/OPTIONS) from a browser page of another origin (its ``Origin``
    header neither names an allowed host nor equals the Host header), so that a cross-site form cannot post."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.allowed = {host_name(h) if h != "*" else "*" for h in allowed_hosts}

    def _allows(self, host: str) -> bool:
        return "*" in self.allowed or host in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host_header = headers.get(b"host", b"").decode("latin-1")
        host = host_name(host_header)
        if not self._allows(host):
            names = ", ".join(sorted(self.allowed))
            refuse_reason(scope, "host_not_allowed")
            await send_json(send, 403, {"detail": f"host {host or '(none)'!r} is not served here: this server answers "
                                                  f"to {names} (see --allowed-hosts)"})
            return
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS:
            text = origin.decode("latin-1").strip()
            netloc = urlsplit(text).netloc.lower() if text.lower() != "null" else ""
            same = bool(netloc) and netloc == host_header.strip().lower()
            if not same and not (netloc and host_name(netloc) in self.allowed):
                refuse_reason(scope, "cross_site")
                await send_json(send, 403, {"detail": f"cross-site request refused: a page of origin {text!r} "
                                                      "may not send it (see --allowed-hosts)"})
                return
        await self.app(scope, receive, send)
