"""Slow clients: stalled uploads cannot starve complete requests, and get 408 themselves.

64 connections send their headers and 3 bytes of body, then nothing: issue 12 saw them
take every in-flight slot (good requests got 429 for a minute, the stalled ones 504).
A request now counts in flight only once its body has arrived; the stalled ones hold
upload slots of their own and are answered 408 when the body timeout passes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow  # waits out the service's body timeout once

STALLED = 64


def stall(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.sendall(b"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b")
    return sock


def answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    with sock:
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def open_uploads(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "yolo_edge_requests_open" and s.labels.get("stage") == "uploads")


def test_stalled_uploads_do_not_starve_complete_requests(service, bus_jpg):
    body = bus_jpg.read_bytes()
    socks = [stall(service.url) for _ in range(STALLED)]
    try:
        deadline = time.monotonic() + 60  # a liveness bound, not a timing assumption
        while open_uploads(service.url) < STALLED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_uploads(service.url) == STALLED  # every stalled upload holds its slot now
        # ... and the good requests, more than the in-flight bound's worth, all get through
        with cf.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: requests.post(service.url + "/detect", timeout=60,
                                                          files=[("images", ("b.jpg", body, "image/jpeg"))]).status_code,
                                  range(24)))
        assert codes == [200] * 24, codes  # 0 good requests refused
        answers = [answer(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert {status for status, _ in answers} == {408}
    assert all("did not arrive within" in a["error"] and a["status"] == 408 for _, a in answers)
    metrics = requests.get(service.url + "/metrics", timeout=10).text
    assert 'yolo_edge_rejected_requests_total{reason="timeout"}' in metrics
