"""When an upload has left: acknowledged bytes on a real TCP connection (yolo_edge.remote.upload_timing)."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from yolo_edge.errors import ConfigError
from yolo_edge.remote.upload_timing import on_acknowledged, tcp_min_rtt_s, timed_session


class _SlowReader(http.server.BaseHTTPRequestHandler):
    """Reads the body slowly (a slow uplink, seen from the far end), then thinks before answering."""

    def do_POST(self):  # noqa: N802
        n, got = int(self.headers["Content-Length"]), 0
        while got < n:
            got += len(self.rfile.read(min(65536, n - got)))
            time.sleep(0.005)
        self.server.read_at = time.monotonic()
        time.sleep(0.3)  # the service's own time
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowReader)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_the_acknowledgement_comes_when_the_body_has_arrived_not_with_the_answer(server):
    session, acked = timed_session(), []
    t0 = time.monotonic()
    with on_acknowledged(lambda rtt: acked.append((time.monotonic(), rtt))):
        resp = session.post(f"http://127.0.0.1:{server.server_port}/x", data=b"x" * (4 << 20))
    answered = time.monotonic()
    assert resp.text == "ok" and len(acked) == 1
    at, rtt = acked[0]
    assert at - t0 > 0.05  # not before the bytes could have crossed
    assert at <= server.read_at + 0.05  # by the time the far end had read them, not later
    assert answered - at >= 0.25  # the service's 0.3 s is not counted as upload
    assert rtt is None or 0 <= rtt < 0.05  # loopback


def test_a_slow_upload_is_watched_with_few_wakeups(server, monkeypatch):
    """Every look at the send queue wakes the device's CPU, which a small device shares with
    its local inference: the queue is looked at a few dozen times over a slow upload, not
    every 2 ms, and its end is still seen within a few percent of its time."""
    import yolo_edge.remote.upload_timing as ut

    looks = []

    def counted(sock):
        looks.append(time.monotonic())
        return real(sock)

    real = ut.unacknowledged_bytes
    monkeypatch.setattr(ut, "unacknowledged_bytes", counted)
    session, acked = timed_session(), []
    t0 = time.monotonic()
    with on_acknowledged(lambda rtt: acked.append(time.monotonic())):
        session.post(f"http://127.0.0.1:{server.server_port}/x", data=b"x" * (4 << 20))
    upload_s = server.read_at - t0
    assert upload_s > 0.2 and len(acked) == 1
    assert len(looks) < 50, f"{len(looks)} looks over {upload_s:.2f} s"  # a 2 ms poll: over 100
    assert acked[0] <= server.read_at + max(0.02, 0.1 * upload_s)


def test_nothing_is_waited_for_without_an_observer(server):
    resp = timed_session().post(f"http://127.0.0.1:{server.server_port}/x", data=b"x" * 1000)
    assert resp.status_code == 200


def test_min_rtt_of_no_socket_is_unknown():
    assert tcp_min_rtt_s(None) is None


def test_per_frame_encodings_are_checked():
    from yolo_edge.remote.cloud import CloudClient

    client = CloudClient("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="one quality per image"):
        client.detect_frames([b"a", b"b"], jpeg_qualities=[90])
    with pytest.raises(ConfigError, match="within 1..100"):
        client.detect_frames([b"a"], jpeg_qualities=[0])
    with pytest.raises(ConfigError, match="on_uploaded"):
        client.detect_frames([b"a"], on_uploaded="nope")
