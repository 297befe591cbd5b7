"""ASGI guards in front of the app: a request body is read whole and checked (size, JSON nesting) before any
route sees it."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rocmre.service.limits import MAX_JSON_DEPTH, json_too_deep


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    """Answer a request directly from a guard."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Reads a request body whole before the app sees it: 413 above ``max_bytes`` (by Content-Length, or counted
    when chunked), 400 for JSON nested deeper than ``max_depth``; a client that disconnects meanwhile is dropped
    quietly."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _too_large(self, send: Send, size: int | None) -> None:
        got = "a body" if size is None else f"a body of {size} bytes"
        await send_json(send, 413, {"detail": f"request too large: {got} exceeds the limit of {self.max_bytes} "
                                              f"bytes ({self.max_bytes / 2 ** 20:.1f} MB; see --max-request-mb)"})

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the request was answered (too large) or the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
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
                await self._too_large(send, size)
                return
        body = await self._read_body(receive, send)
        if body is None:
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if body and not ctype.startswith("multipart/") and await run_in_threadpool(json_too_deep, body,
                                                                                   self.max_depth):
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
