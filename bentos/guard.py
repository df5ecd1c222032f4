"""ASGI middleware in front of the yolo-edge service: auth, uploads, overload, error shape.

It runs inside BentoML's own middlewares (so BentoML's request metrics still count what
it refuses) and outside the API handlers:

- optional bearer-token auth (``token``); probes (/livez, /readyz) and /metrics stay open
  so orchestrators and Prometheus need no secret;
- refuses request bodies above ``max_body_bytes`` with 413 before they are read, both
  from ``Content-Length`` and while a body sent without one streams in;
- answers 503 with ``Retry-After`` on the detect route until ``is_ready()`` (warm-up);
- reads a detect request's whole body before the request counts as in flight, within
  ``body_timeout_s`` (else 408): a client that sends headers and then stalls holds an
  *upload* slot (``max_open_uploads``, with ``max_buffered_bytes`` for all uploads
  together), never one of the ``max_in_flight`` slots that complete requests need, so
  stalled uploads cannot starve complete ones;
- bounds requests in flight on the detect route: the excess gets 429 with
  ``Retry-After`` at once instead of queueing without bound;
- gives every error one JSON shape, ``{"error": ..., "status": N}``: BentoML's
  ``[{"error": ...}]`` lists, Starlette's plain-text 404/405, and (through
  :func:`install_json_protocol_errors`) uvicorn's own 400 for malformed HTTP; adds
  ``Retry-After`` to every 429/503 (BentoML's batcher answers 503 without one).

>>> app = Guard(inner_app, token="s3cret", max_body_bytes=8 << 20)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable

from yolo_edge.remote.wire import LIMITS

__all__ = ["Guard", "OPEN_PATHS", "ON_END", "ARRIVED", "install_json_protocol_errors"]

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths reachable without a token: health probes and the metrics scrape.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
#: Scope key of a list of callbacks the Guard runs when a guarded request ends, however it ends.
ON_END = "yolo_edge.on_end"
#: Scope key of when the request arrived (``time.perf_counter()``), before its body was read.
ARRIVED = "yolo_edge.arrived"


class _Refused(Exception):
    """A request answered by the Guard itself: status, message, extra headers, reason."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class _Disconnected(Exception):
    pass


class Guard:
    """Protects the service; see the module docstring. One instance per worker."""

    def __init__(
        self,
        app: Any,
        *,
        token: str | None = None,
        max_body_bytes: int = LIMITS.max_request_bytes,
        max_in_flight: int = 64,
        max_open_uploads: int = 256,
        max_buffered_bytes: int = 256 << 20,
        body_timeout_s: float = 30.0,
        retry_after_s: int = 1,
        guarded_paths: tuple[str, ...] = ("/detect",),
        on_reject: Callable[[str], None] | None = None,
        on_count: Callable[[str, int], None] | None = None,
        is_ready: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = int(max_body_bytes)
        self.max_in_flight = int(max_in_flight)
        self.max_open_uploads = int(max_open_uploads)
        self.max_buffered_bytes = int(max_buffered_bytes)
        self.body_timeout_s = float(body_timeout_s)
        self.retry_after_s = int(retry_after_s)
        self.guarded_paths = guarded_paths
        # one event loop per worker: plain counters, no lock needed
        self._in_flight = 0
        self._open_uploads = 0
        self._buffered = 0
        self._on_reject = on_reject or (lambda reason: None)
        self._on_count = on_count or (lambda what, n: None)  # ("uploads" | "in_flight", count) on each change
        self._is_ready = is_ready or (lambda: True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[ARRIVED] = time.perf_counter()  # frames' budgets count from here: the upload spends them too
        shaped = _shaping(send, scope, self.retry_after_s)
        try:
            self._admit(scope)
            if scope.get("path", "") not in self.guarded_paths or scope.get("method") != "POST":
                return await self.app(scope, receive, shaped)
            if self._open_uploads >= self.max_open_uploads:
                raise _Refused(503, f"{self._open_uploads} uploads are already arriving: retry shortly", "uploads",
                               {"Retry-After": str(self.retry_after_s)})
            body, size = await self._read_body(receive)
        except _Refused as refused:
            self._on_reject(refused.reason)
            return await _reply(send, refused.status, refused.message, refused.headers)
        except _Disconnected:
            return None  # the client went away mid-upload: nobody to answer
        try:
            if self._in_flight >= self.max_in_flight:
                self._on_reject("overloaded")
                return await _reply(send, 429, f"{self._in_flight} requests already in flight: retry later",
                                    {"Retry-After": str(self.retry_after_s)})
            self._in_flight += 1
            self._on_count("in_flight", self._in_flight)
            on_end: list[Callable[[], None]] = []
            scope[ON_END] = on_end  # the app may leave cleanups for the end of the request here
            try:
                await self.app(scope, _replay(body, receive), shaped)
            finally:
                self._in_flight -= 1
                self._on_count("in_flight", self._in_flight)
                for callback in on_end:
                    callback()
        finally:
            self._buffered -= size

    def _admit(self, scope: Scope) -> None:
        """The checks that need no body: auth, declared size, readiness."""
        path = scope.get("path", "")
        if self._token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            raise _Refused(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'", "unauthorized",
                           {"WWW-Authenticate": 'Bearer realm="yolo-edge"'})
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            raise _Refused(413, f"request body is {length} bytes, above the limit of {self.max_body_bytes}: "
                           "send fewer or smaller (downscaled JPEG) images", "too_large")
        if path in self.guarded_paths and not self._is_ready():
            raise _Refused(503, "the model is still loading or warming up: retry shortly", "not_ready",
                           {"Retry-After": str(self.retry_after_s)})

    async def _read_body(self, receive: Receive) -> tuple[deque[bytes], int]:
        """The whole body, within the body timeout, the size limit and the shared byte budget.

        Returns the chunks and their size, which stays counted in the shared budget
        until the caller subtracts it.
        """
        self._open_uploads += 1
        self._on_count("uploads", self._open_uploads)
        chunks: deque[bytes] = deque()
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        try:
            while True:
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
                except asyncio.TimeoutError:
                    raise _Refused(408, f"the request body did not arrive within {self.body_timeout_s:g} s "
                                   f"({size} bytes came): send it at once, or over a faster link", "timeout",
                                   {"Connection": "close"}) from None
                if message["type"] == "http.disconnect":
                    raise _Disconnected()
                chunk = message.get("body", b"")
                if chunk:
                    if size + len(chunk) > self.max_body_bytes:
                        raise _Refused(413, f"request body exceeds {self.max_body_bytes} bytes: send fewer or "
                                       "smaller (downscaled JPEG) images", "too_large", {"Connection": "close"})
                    if self._buffered + len(chunk) > self.max_buffered_bytes:
                        raise _Refused(503, "the service is receiving too many uploads at once: retry shortly",
                                       "uploads", {"Retry-After": str(self.retry_after_s), "Connection": "close"})
                    chunks.append(chunk)
                    size += len(chunk)
                    self._buffered += len(chunk)
                if not message.get("more_body"):
                    return chunks, size
        except BaseException:
            self._buffered -= size
            raise
        finally:
            self._open_uploads -= 1
            self._on_count("uploads", self._open_uploads)

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                scheme, _, credential = value.partition(b" ")
                # constant-time compare so the token cannot be guessed byte by byte from timings
                return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token or b"")
        return False


def _replay(chunks: deque[bytes], receive: Receive) -> Receive:
    """Hand the buffered body to the app, freeing it as it goes; then the real receive."""
    if not chunks:
        chunks.append(b"")

    async def replayed() -> Message:
        if chunks:
            body = chunks.popleft()
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        return await receive()  # after the body: only a disconnect can come

    return replayed


def _shaping(send: Send, scope: Scope, retry_after_s: int) -> Send:
    """Add Retry-After to 429/503 and give every 4xx/5xx body the JSON error shape."""
    state: dict[str, Any] = {"start": None, "body": b""}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                return await send(message)
            state["start"] = message
            return None
        if state["start"] is None or message["type"] != "http.response.body":
            return await send(message)
        state["body"] += message.get("body", b"")
        if message.get("more_body"):
            return None
        start = state["start"]
        status = start["status"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", str(retry_after_s).encode()))
        body = _error_body(state["body"], status, scope, headers)
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _error_body(body: bytes, status: int, scope: Scope, headers: list[tuple[bytes, bytes]]) -> bytes:
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML wraps 4xx errors from exceptions in a one-element list
    if not (isinstance(data, dict) and isinstance(data.get("error"), str)):
        detail = data.get("detail") if isinstance(data, dict) else None  # Starlette's HTTPException shape
        message = detail if isinstance(detail, str) and detail else _plain_error(body, status, scope, headers)
        data = {**(data if isinstance(data, dict) else {}), "error": message}
    data["status"] = status
    return json.dumps(data).encode()


def _plain_error(body: bytes, status: int, scope: Scope, headers: list[tuple[bytes, bytes]]) -> str:
    method, path = scope.get("method", "?"), scope.get("path", "?")
    if status == 404:
        return f"no route {method} {path}: the service answers POST /detect, GET /metadata, /readyz, /livez, /metrics"
    if status == 405:
        allow = next((v.decode("latin-1") for k, v in headers if k.lower() == b"allow"), "")
        return f"{method} is not allowed on {path}" + (f": use {allow}" if allow else "")
    text = body.decode("utf-8", "replace").strip()[:300]
    return text or f"HTTP {status}"


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reply(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def install_json_protocol_errors() -> None:
    """Make uvicorn answer requests it cannot parse as HTTP with the JSON error shape.

    uvicorn writes its own plain-text 400 for malformed HTTP (a broken request line,
    headers over h11's 16 KiB buffer, a bad Content-Length) before any ASGI app sees
    the request, and BentoML builds uvicorn's config itself (no ``http=`` hook), so this
    replaces that one method, in the worker, on both of uvicorn's HTTP protocols.
    Idempotent.
    """
    body = json.dumps({"error": "malformed HTTP request: check the request line, the headers (at most "
                                "16 KiB together) and Content-Length", "status": 400}).encode()

    def send_400_response(self: Any, msg: str) -> None:  # noqa: ARG001 - uvicorn's signature
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()

    for module, name in (("uvicorn.protocols.http.h11_impl", "H11Protocol"),
                         ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol")):
        try:
            protocol = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:  # httptools is optional
            continue
        protocol.send_400_response = send_400_response
