"""The Guard middleware on a tiny ASGI app: auth, body limits, in-flight bound, error shape.

A fake inner app is honest here: the Guard only sees ASGI messages. The real stack is
covered by test_service.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bentos.guard import Guard


def make_app(status: int = 200, body: bytes = b'{"ok": true}', read_body: bool = True, gate: asyncio.Event | None = None):
    async def app(scope, receive, send):
        if read_body:
            while True:
                msg = await receive()
                if not msg.get("more_body"):
                    break
        if gate is not None:
            await gate.wait()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


async def call(app, path="/detect", headers=None, chunks=(b"x",)):
    scope = {"type": "http", "path": path, "method": "POST",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def run(coro):
    return asyncio.run(coro)


def test_token_required_except_on_probes_and_metrics():
    rejected = []
    guard = Guard(make_app(), token="s3cret", on_reject=rejected.append)
    status, headers, body = run(call(guard))
    assert status == 401 and "Bearer" in headers["www-authenticate"] and "bearer token" in json.loads(body)["error"]
    assert run(call(guard, headers={"Authorization": "Bearer nope"}))[0] == 401
    assert run(call(guard, headers={"Authorization": "Basic s3cret"}))[0] == 401
    assert run(call(guard, headers={"Authorization": "Bearer s3cret"}))[0] == 200
    for path in ("/readyz", "/livez", "/metrics"):
        assert run(call(guard, path=path))[0] == 200
    assert rejected == ["unauthorized"] * 3


def test_no_token_means_open():
    assert run(call(Guard(make_app())))[0] == 200


def test_declared_body_over_limit_is_413_before_reading():
    guard = Guard(make_app(), max_body_bytes=10)
    status, _, body = run(call(guard, headers={"Content-Length": "11"}, chunks=(b"x" * 11,)))
    assert status == 413 and "limit of 10" in json.loads(body)["error"]


def test_streamed_body_over_limit_is_413_even_if_the_app_turns_errors_into_500():
    async def app(scope, receive, send):  # like BentoML: any exception becomes a 500 response
        try:
            while (await receive()).get("more_body"):
                pass
            status = 200
        except Exception:
            status = 500
        await make_app(status=status, read_body=False)(scope, receive, send)

    status, _, body = run(call(Guard(app, max_body_bytes=10), chunks=(b"x" * 6, b"x" * 6)))
    assert status == 413 and "exceeds 10 bytes" in json.loads(body)["error"]


def test_in_flight_bound_answers_429_with_retry_after():
    async def scenario():
        gate = asyncio.Event()
        guard = Guard(make_app(gate=gate), max_in_flight=2, retry_after_s=3)
        first = [asyncio.create_task(call(guard)) for _ in range(2)]
        await asyncio.sleep(0.01)
        status, headers, _ = await call(guard)
        other_path = asyncio.create_task(call(guard, path="/metadata"))  # only the detect route is bounded
        await asyncio.sleep(0.01)
        gate.set()
        return status, headers, [(await t)[0] for t in first], (await other_path)[0]

    status, headers, first, other = run(scenario())
    assert status == 429 and headers["retry-after"] == "3"
    assert first == [200, 200] and other == 200


def test_503_gets_retry_after_and_bentoml_error_lists_are_unwrapped():
    status, headers, body = run(call(Guard(make_app(503, b'{"error": "process is overloaded"}'))))
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body) == {"error": "process is overloaded", "status": 503}
    status, headers, body = run(call(Guard(make_app(400, b'[{"error": "bad conf"}]'))))
    assert json.loads(body) == {"error": "bad conf", "status": 400}
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("body", [b"not json", b'{"detail": "x"}'])
def test_other_error_bodies_pass_through(body):
    status, _, out = run(call(Guard(make_app(404, body))))
    assert status == 404
    assert (json.loads(out) == {"detail": "x"}) if body.startswith(b"{") else (out == body)


def test_not_ready_answers_503_with_retry_after_on_detect_only():
    rejected = []
    guard = Guard(make_app(), is_ready=lambda: False, on_reject=rejected.append)
    status, headers, body = run(call(guard))
    assert status == 503 and headers["retry-after"] == "1" and "warming up" in json.loads(body)["error"]
    assert run(call(guard, path="/metadata"))[0] == 200
    assert rejected == ["not_ready"]
