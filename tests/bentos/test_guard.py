"""The Guard middleware on a tiny ASGI app: auth, body limits, uploads, in-flight bound, error shape.

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


@pytest.mark.parametrize("status,body,headers,needle", [
    (404, b"Not Found", [], "no route POST /detect"),
    (405, b"Method Not Allowed", [(b"allow", b"GET, HEAD")], "POST is not allowed on /detect: use GET, HEAD"),
    (500, b"worker crashed", [], "worker crashed"),
    (400, b'{"detail": "bad header"}', [], "bad header"),
    (502, b"", [], "HTTP 502"),
])
def test_every_error_body_gets_the_json_shape(status, body, headers, needle):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain"), *headers]})
        await send({"type": "http.response.body", "body": body})

    got, out_headers, out = run(call(Guard(app)))
    data = json.loads(out)
    assert got == status and data["status"] == status and needle in data["error"]
    assert out_headers["content-type"] == "application/json" and int(out_headers["content-length"]) == len(out)


def test_the_app_gets_the_whole_body_once_it_has_arrived():
    seen = []

    async def app(scope, receive, send):
        while True:
            msg = await receive()
            seen.append(msg["body"])
            if not msg.get("more_body"):
                break
        await make_app(read_body=False)(scope, receive, send)

    guard = Guard(app)
    assert run(call(guard, chunks=(b"ab", b"", b"cd", b"e")))[0] == 200
    assert b"".join(seen) == b"abcde" and not seen[-1:] == [b"x"]
    assert (guard._open_uploads, guard._in_flight, guard._buffered) == (0, 0, 0)


async def stalled(guard, path="/detect"):
    """A request that sends 3 bytes of its body and then nothing; returns (status, body) or None."""
    scope = {"type": "http", "path": path, "method": "POST", "headers": [(b"content-length", b"1000")]}
    first = [{"type": "http.request", "body": b"abc", "more_body": True}]
    never = asyncio.Event()
    sent = []

    async def receive():
        if first:
            return first.pop()
        await never.wait()

    async def send(msg):
        sent.append(msg)

    await guard(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_a_stalled_upload_gets_408_and_never_held_an_in_flight_slot():
    async def scenario():
        gate = asyncio.Event()
        guard = Guard(make_app(gate=gate), max_in_flight=1, body_timeout_s=0.2)
        slow = asyncio.create_task(stalled(guard))
        await asyncio.sleep(0)  # the stalled upload is now waiting for its body
        assert guard._open_uploads == 1 and guard._in_flight == 0
        gate.set()
        complete = await call(guard)  # the one in-flight slot is free for a complete request
        return await slow, complete[0], guard

    (status, headers, body), complete, guard = run(scenario())
    assert complete == 200
    assert status == 408 and headers[b"connection"] == b"close" and "did not arrive within 0.2 s (3 bytes" in json.loads(body)["error"]
    assert (guard._open_uploads, guard._in_flight, guard._buffered) == (0, 0, 0)


def test_open_uploads_and_buffered_bytes_are_bounded():
    async def scenario():
        rejected = []
        guard = Guard(make_app(), max_open_uploads=2, body_timeout_s=5, on_reject=rejected.append)
        waiting = [asyncio.create_task(stalled(guard)) for _ in range(2)]
        await asyncio.sleep(0)
        third = await call(guard)
        for task in waiting:
            task.cancel()
        budget = await call(Guard(make_app(), max_buffered_bytes=4), chunks=(b"abc", b"de"))
        return third, budget, rejected, guard

    (status, headers, body), budget, rejected, guard = run(scenario())
    assert status == 503 and headers["retry-after"] == "1" and "uploads are already arriving" in json.loads(body)["error"]
    assert budget[0] == 503 and "too many uploads at once" in json.loads(budget[2])["error"]
    assert rejected == ["uploads"] and guard._open_uploads == 0 and guard._buffered == 0


def test_a_client_that_disconnects_mid_upload_gets_nothing_and_frees_its_slot():
    async def scenario():
        guard = Guard(make_app())
        scope = {"type": "http", "path": "/detect", "method": "POST", "headers": []}
        messages = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(msg):
            sent.append(msg)

        await guard(scope, receive, send)
        return sent, guard

    sent, guard = run(scenario())
    assert sent == [] and (guard._open_uploads, guard._in_flight, guard._buffered) == (0, 0, 0)


def test_malformed_http_answer_is_json_after_install():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from bentos.guard import install_json_protocol_errors

    class Transport:
        written, closed = b"", False

        def write(self, data):
            self.written += data

        def close(self):
            self.closed = True

    install_json_protocol_errors()
    proto = H11Protocol.__new__(H11Protocol)
    proto.transport = Transport()
    proto.send_400_response("Invalid HTTP request received.")
    head, _, body = proto.transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    assert json.loads(body)["status"] == 400 and proto.transport.closed


def test_not_ready_answers_503_with_retry_after_on_detect_only():
    rejected = []
    guard = Guard(make_app(), is_ready=lambda: False, on_reject=rejected.append)
    status, headers, body = run(call(guard))
    assert status == 503 and headers["retry-after"] == "1" and "warming up" in json.loads(body)["error"]
    assert run(call(guard, path="/metadata"))[0] == 200
    assert rejected == ["not_ready"]


def test_cleanups_left_by_the_app_run_when_the_request_ends_even_on_error():
    from bentos.guard import ON_END

    ran = []

    async def app(scope, receive, send):
        scope[ON_END].append(lambda: ran.append("released"))
        raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        run(call(Guard(app)))
    assert ran == ["released"]
