"""The transport under both clients, against real HTTP servers on 127.0.0.1.

Each server answers from a script of (status, headers, body, delay) and records what it
got, so the retry rules are checked on real sockets: what is retried and what is not,
``Retry-After`` in seconds and as an HTTP date, the backoff cap, a connect timeout (a
listener whose accept queue is full drops the SYN), a read timeout, and the deadline.
``sleep`` is recorded (and does not wait) except where real waiting is the point.
"""

from __future__ import annotations

import email.utils
import socket
import time
from typing import Any, Iterator

import pytest

from http_standin import Script, Server

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.errors import (
    CloudAuthError,
    CloudError,
    CloudRequestError,
    CloudTimeoutError,
    CloudUnavailableError,
    ConfigError,
)
from yolo_edge.remote.transport import MAX_BACKOFF_S, HttpTransport, RetryPolicy, backoff_delay, parse_retry_after


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Server] = []

    def start(*answers: Any) -> Server:
        servers.append(Server(Script(*answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def transport(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> HttpTransport:
    retry = RetryPolicy(max_retries=kwargs.pop("max_retries", 2), backoff_s=kwargs.pop("backoff_s", 0.1),
                        max_backoff_s=kwargs.pop("max_backoff_s", MAX_BACKOFF_S))
    sleep = sleeps.append if sleeps is not None else time.sleep
    return HttpTransport(url, client="TestClient", hint="is it running?", retry=retry, sleep=sleep, **kwargs)


OK = (200, {}, {"ok": True})
BUSY = (503, {}, {"error": "overloaded"})


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# -- Retry-After ------------------------------------------------------------------------------

def test_retry_after_as_an_http_date_is_waited_for(serve):
    server = serve((503, {"Retry-After": http_date(4)}, {"error": "warming up"}), OK)
    sleeps: list[float] = []
    with transport(server.url, sleeps, timeout=10) as t:
        assert t.request("GET", "/metadata").json() == {"ok": True}
    # the date has whole seconds: 4 s from a time within the current second is 3..4 s away
    assert len(sleeps) == 1 and 2.5 <= sleeps[0] <= 4.5, sleeps
    assert [m for m, _, _ in server.script.seen] == ["GET", "GET"]


def test_retry_after_in_seconds_beats_the_backoff_and_is_reported(serve):
    server = serve((429, {"Retry-After": "3"}, {"error": "busy"}))
    sleeps: list[float] = []
    with transport(server.url, sleeps, max_retries=1) as t, pytest.raises(CloudUnavailableError, match="busy") as info:
        t.request("POST", "/detect", data=b"x")
    assert sleeps == [3.0] and len(server.script.seen) == 2
    assert info.value.retry_after_s == 3.0 and info.value.status_code == 429


def test_a_retry_after_longer_than_the_timeout_is_not_waited_for(serve):
    server = serve((503, {"Retry-After": http_date(120)}, {"error": "scaling up"}))
    sleeps: list[float] = []
    with transport(server.url, sleeps, timeout=5) as t, pytest.raises(CloudUnavailableError) as info:
        t.request("GET", "/metadata")
    assert sleeps == [] and len(server.script.seen) == 1 and info.value.retry_after_s > 100


@pytest.mark.parametrize("value, seconds", [("7", 7.0), ("0", 0.0), ("-3", 0.0), (" 2.5 ", 2.5),
                                            ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # 10 s after `now`
                                            ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
                                            ("Wednesday, 21-Oct-15 07:28:10 GMT", 10.0),  # RFC 850, still allowed
                                            ("soon", None), ("", None), (None, None), ("nan", None), ("inf", None)])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value, now=1445412480.0) == seconds


# -- backoff ----------------------------------------------------------------------------------

def test_backoff_grows_with_jitter_and_stops_at_the_cap(serve):
    server = serve(BUSY)
    sleeps: list[float] = []
    with transport(server.url, sleeps, max_retries=6, backoff_s=0.2, max_backoff_s=1.0) as t:
        with pytest.raises(CloudUnavailableError, match="overloaded"):
            t.request("POST", "/detect", data=b"x")
    assert len(sleeps) == 6 and len(server.script.seen) == 7
    nominal = [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert all(n / 2 <= s <= n for s, n in zip(sleeps, nominal)), sleeps
    assert backoff_delay(0.2, 10, 1.0, rand=1.0) == 1.0 and backoff_delay(0.2, 0, 1.0, rand=0.0) == 0.1


def test_a_retry_after_above_the_cap_is_still_honoured(serve):
    server = serve((503, {"Retry-After": "3"}, {"error": "busy"}), OK)
    sleeps: list[float] = []
    with transport(server.url, sleeps, max_backoff_s=0.5, timeout=5) as t:
        t.request("GET", "/metadata")
    assert sleeps == [3.0]


def test_bad_policies_fail_with_what_is_expected():
    with pytest.raises(ConfigError, match="max_retries must be an integer within 0..20"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ConfigError, match="max_backoff_s must be a non-negative finite number"):
        RetryPolicy(max_backoff_s=float("inf"))


# -- what is retried --------------------------------------------------------------------------

def full_listener() -> tuple[socket.socket, int, list[socket.socket]]:
    """A 127.0.0.1 listener whose accept queue is full, so it drops new SYNs (a real connect
    timeout on loopback): (the listener, its port, the connections that fill its queue)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(10):
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
        except (socket.timeout, TimeoutError):
            probe.close()
            return listener, port, fillers
        fillers.append(probe)
    for sock in [*fillers, listener]:
        sock.close()
    raise AssertionError("the listener's accept queue never filled: no connect timeout to test")


def test_a_connect_timeout_is_retried_even_for_a_post():
    listener, port, fillers = full_listener()
    script = Script(OK)
    servers: list[Server] = []

    def sleep(seconds: float) -> None:  # between the tries: the queue is emptied, the listener starts serving
        for filler in fillers:
            filler.close()
        listener.setblocking(False)
        while True:
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                break
        listener.setblocking(True)
        servers.append(Server(script, sock=listener))

    t = HttpTransport(f"http://127.0.0.1:{port}", client="TestClient", hint="is it running?", timeout=0.5,
                      retry=RetryPolicy(max_retries=1, backoff_s=0.01), sleep=sleep)
    try:
        assert t.request("POST", "/detect", data=b"frame").json() == {"ok": True}
        assert [(m, p, b) for m, p, b in script.seen if m == "POST"] == [("POST", "/detect", b"frame")]
        assert len(servers) == 1  # exactly one retry
    finally:
        t.close()
        for server in servers:
            server.close()
        listener.close()


def test_a_connect_timeout_without_retries_left_is_unavailable():
    listener, port, fillers = full_listener()
    try:
        with transport(f"http://127.0.0.1:{port}", [], max_retries=0, timeout=0.3) as t:
            with pytest.raises(CloudUnavailableError, match=r"no connection within 0.3 s; is it running\?"):
                t.request("POST", "/detect", data=b"x")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_slow_answer_is_retried_for_a_get_but_not_for_a_post(serve):
    slow = (200, {}, {"ok": True}, 1.0)
    server = serve(slow)
    sleeps: list[float] = []
    with transport(server.url, sleeps, timeout=0.3, max_retries=2) as t:
        with pytest.raises(CloudTimeoutError, match="took longer than 0.3 s"):
            t.request("POST", "/detect", data=b"x")
        assert sleeps == [] and len(server.script.seen) == 1
        with pytest.raises(CloudTimeoutError):
            t.request("GET", "/metadata")
    assert len(sleeps) == 2 and len(server.script.seen) == 4


def test_a_refused_connection_is_retried_then_unavailable():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    with transport(f"http://127.0.0.1:{port}", sleeps, max_retries=2) as t:
        with pytest.raises(CloudUnavailableError, match="connection refused") as info:
            t.request("POST", "/detect", data=b"x")
    assert len(sleeps) == 2 and info.value.original is not None and info.value.__cause__ is None


@pytest.mark.parametrize("status, error", [(401, CloudAuthError), (403, CloudAuthError), (400, CloudRequestError),
                                          (413, CloudRequestError), (500, CloudError)])
def test_other_statuses_are_typed_and_not_retried(serve, status, error):
    server = serve((status, {}, {"error": "not a JPEG"}))
    sleeps: list[float] = []
    with transport(server.url, sleeps, token="s3cret") as t, pytest.raises(error, match="not a JPEG") as info:
        t.request("POST", "/detect", data=b"x")
    assert type(info.value) is error and info.value.status_code == status and sleeps == []
    if error is CloudAuthError:
        assert "check the token= given to TestClient" in str(info.value)


def test_accepted_statuses_come_back_as_answers(serve):
    server = serve((404, {}, {"error": "no such extension"}))
    with transport(server.url, []) as t:
        assert t.request("GET", "/config", accept=(404,)).status_code == 404


def test_a_proxys_html_page_is_one_line(serve):
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    server = serve((502, {"Content-Type": "text/html", "Server": "nginx"}, page))
    with transport(server.url, [], max_retries=0) as t, pytest.raises(CloudUnavailableError) as info:
        t.request("GET", "/metadata")
    text = str(info.value)  # (http.server sends its own Server header too: both are named)
    assert "-> 502: 502 Bad Gateway (an HTML page from" in text and "nginx" in text and "<html" not in text
    assert "no replica behind the proxy answered" in text


def test_refine_decides_the_type_and_so_whether_to_retry(serve):
    server = serve((503, {}, {"error": "Request timeout expired"}))

    def refine(error: CloudError) -> CloudError:
        return CloudRequestError(f"refined: {error}", status_code=error.status_code)

    sleeps: list[float] = []
    with transport(server.url, sleeps, refine=refine) as t, pytest.raises(CloudRequestError, match="refined"):
        t.request("POST", "/infer", data=b"x")
    assert sleeps == [] and len(server.script.seen) == 1


# -- the deadline -----------------------------------------------------------------------------

def test_no_retry_that_could_not_start_before_the_deadline(serve):
    server = serve((503, {"Retry-After": "1"}, {"error": "overloaded"}))
    sleeps: list[float] = []
    with transport(server.url, sleeps, max_retries=3) as t:
        with pytest.raises(CloudUnavailableError, match="overloaded"):
            t.request("POST", "/detect", data=b"x", deadline=time.monotonic() + 0.5)
        assert sleeps == [] and len(server.script.seen) == 1
        with pytest.raises(CloudUnavailableError):
            t.request("POST", "/detect", data=b"x", deadline=time.monotonic() + 60)
    assert sleeps == [1.0, 1.0, 1.0] and len(server.script.seen) == 5


def test_the_time_spent_waiting_counts_against_the_deadline(serve):
    # real sleeps: 0.1-0.2 s, then 0.2-0.4 s, then 0.4-0.8 s; with a 0.5 s deadline every try
    # that is made starts before it, and the three retries allowed never all fit
    server = serve(BUSY)
    with transport(server.url, None, max_retries=3, backoff_s=0.2) as t:
        deadline = time.monotonic() + 0.5
        with pytest.raises(CloudUnavailableError):
            t.request("POST", "/detect", data=b"x", deadline=deadline)
    assert 1 <= len(server.script.seen) <= 3
    assert all(arrived < deadline for arrived in server.script.arrived)


def test_prepare_makes_each_try_anew(serve):
    server = serve(BUSY, BUSY, OK)
    tries: list[int] = []

    def prepare() -> dict[str, Any]:
        tries.append(len(tries))
        return {"data": f"try {len(tries)}".encode(), "headers": {"X-Try": str(len(tries))}}

    with transport(server.url, [], token="s3cret") as t:
        t.request("POST", "/detect", prepare=prepare)
    assert [b for _, _, b in server.script.seen] == [b"try 1", b"try 2", b"try 3"]


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


# -- both clients travel on it ----------------------------------------------------------------

def test_cloud_client_waits_for_an_http_date_retry_after(serve):
    server = serve((503, {"Retry-After": http_date(3)}, {"error": "warming up"}),
                   (200, {}, {"name": "m", "sha256": "ab" * 32, "names": {"0": "a"}, "imgsz": [32, 32]}))
    sleeps: list[float] = []
    with CloudClient(server.url, sleep=sleeps.append, timeout=10) as client:
        assert client.info()["name"] == "m"
    assert len(sleeps) == 1 and 1.5 <= sleeps[0] <= 3.5


def test_oip_client_waits_for_an_http_date_retry_after(serve, default_model_path):
    from yolo_edge.remote.oip import OipClient

    sleeps: list[float] = []
    with socket.socket() as s:  # the client first (it reads the local model), then the date
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OipClient(f"oip+http://127.0.0.1:{port}/v2/models/yolo", model=default_model_path,
                       sleep=sleeps.append, timeout=10, max_retries=1)
    server = Server(Script((503, {"Retry-After": http_date(3)}, {"error": "loading"})), sock=_listen(port))
    with client, pytest.raises(CloudUnavailableError, match="loading") as info:
        client.verify_model()
    assert len(sleeps) == 1 and 1.5 <= sleeps[0] <= 3.5 and info.value.retry_after_s is not None
    server.close()
    assert [p for _, p, _ in server.script.seen] == ["/v2/models/yolo"] * 2
