"""ASGI middleware in front of the yolo-edge service: auth, upload size, overload, error shape.

It runs inside BentoML's own middlewares (so BentoML's request metrics still count what
it refuses) and outside the API handlers:

- optional bearer-token auth (``token``); probes (/livez, /readyz) and /metrics stay open
  so orchestrators and Prometheus need no secret;
- refuses request bodies above ``max_body_bytes`` with 413 before they are read, both
  from ``Content-Length`` and while streaming a body sent without one;
- answers 503 with ``Retry-After`` on the detect route until ``is_ready()`` (warm-up);
- bounds requests in flight on the detect route (``max_in_flight``): the excess gets
  429 with ``Retry-After`` at once instead of queueing without bound;
- adds ``Retry-After`` to every 429/503 (BentoML's batcher answers 503 without one);
- rewrites BentoML's ``[{"error": ...}]`` error bodies to ``{"error": ..., "status": N}``.

>>> app = Guard(inner_app, token="s3cret", max_body_bytes=8 << 20)   # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Awaitable, Callable

__all__ = ["Guard", "OPEN_PATHS"]

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths reachable without a token: health probes and the metrics scrape.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


class _BodyTooLarge(Exception):
    pass


class Guard:
    """Protects the service; see the module docstring. One instance per worker."""

    def __init__(
        self,
        app: Any,
        *,
        token: str | None = None,
        max_body_bytes: int = 32 << 20,
        max_in_flight: int = 64,
        retry_after_s: int = 1,
        guarded_paths: tuple[str, ...] = ("/detect",),
        on_reject: Callable[[str], None] | None = None,
        is_ready: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = int(max_body_bytes)
        self.max_in_flight = int(max_in_flight)
        self.retry_after_s = int(retry_after_s)
        self.guarded_paths = guarded_paths
        self._in_flight = 0  # one event loop per worker: no lock needed
        self._on_reject = on_reject or (lambda reason: None)
        self._is_ready = is_ready or (lambda: True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if self._token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            self._on_reject("unauthorized")
            return await _reply(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                {"WWW-Authenticate": 'Bearer realm="yolo-edge"'})
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            self._on_reject("too_large")
            return await _reply(send, 413, f"request body is {length} bytes, above the limit of "
                                f"{self.max_body_bytes}: send fewer or smaller (downscaled JPEG) images")
        guarded = path in self.guarded_paths
        if guarded and not self._is_ready():
            self._on_reject("not_ready")
            return await _reply(send, 503, "the model is still loading or warming up: retry shortly",
                                {"Retry-After": str(self.retry_after_s)})
        if guarded and self._in_flight >= self.max_in_flight:
            self._on_reject("overloaded")
            return await _reply(send, 429, f"{self._in_flight} requests already in flight: retry later",
                                {"Retry-After": str(self.retry_after_s)})
        self._in_flight += guarded
        state: dict[str, Any] = {"start": None, "body": b"", "too_large": False, "sent": False}
        try:
            await self.app(scope, self._limited(receive, state), self._shaping(send, state))
        except _BodyTooLarge:
            if not state["sent"]:
                await self._too_large(send)
        finally:
            self._in_flight -= guarded

    async def _too_large(self, send: Send) -> None:
        self._on_reject("too_large")
        await _reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes: "
                     "send fewer or smaller (downscaled JPEG) images")

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                scheme, _, credential = value.partition(b" ")
                # constant-time compare so the token cannot be guessed byte by byte from timings
                return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token or b"")
        return False

    def _limited(self, receive: Receive, state: dict[str, Any]) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    # BentoML turns exceptions in its handlers into a 500; the flag lets
                    # _shaping answer 413 in its place
                    state["too_large"] = True
                    raise _BodyTooLarge()
            return message

        return wrapped

    def _shaping(self, send: Send, state: dict[str, Any]) -> Send:
        """Add Retry-After to 429/503 and give 4xx/5xx JSON bodies one shape."""

        async def wrapped(message: Message) -> None:
            if state["too_large"]:
                if message["type"] == "http.response.start":
                    state["sent"] = True
                    await self._too_large(send)
                return None
            if message["type"] == "http.response.start":
                state["sent"] = True
                status = message["status"]
                if status < 400:
                    return await send(message)
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
                if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
                    headers.append((b"retry-after", str(self.retry_after_s).encode()))
                state["start"] = {**message, "headers": headers}
                return None
            if state["start"] is None or message["type"] != "http.response.body":
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body"):
                return None
            start, body = state["start"], _error_body(state["body"], state["start"]["status"])
            start["headers"].append((b"content-length", str(len(body)).encode()))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return wrapped


def _error_body(body: bytes, status: int) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body  # not JSON (a plain-text 404, say): leave it alone
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML wraps 4xx errors from exceptions in a one-element list
    if isinstance(data, dict) and "error" in data:
        data.setdefault("status", status)
    return json.dumps(data).encode()


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
