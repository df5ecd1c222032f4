"""Deadlines on the wire, against a real `bentoml serve`: expired frames are answered, never computed.

Each frame may carry its remaining budget (``budgets_s``); the service turns it into a
deadline at arrival and answers a frame whose deadline has passed when its batch starts
as ``expired``. "Not computed" is read from the service's own metrics: the frames the
model saw (``yolo_edge_batch_frames_sum``) and the frames computed after their deadline
(``yolo_edge_doomed_frames_computed_total``, which must stay 0).
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest
import requests
from scrape import metrics, total

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.wire import FrameStatus, decode_results

#: small frames: decoded at once, so a busy request is in the batch queue as soon as it arrives,
#: while the model's cost per frame (a 416x416 letterbox) is the same as for a photo
SMALL = [cv2.imencode(".png", np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()
         for i in range(8)]
BUSY_REQUESTS = 3  # of 8 frames each: at least two model batches of 8 queue behind the one running


def counts(url: str) -> dict[str, float]:
    m = metrics(url)
    return {"ok": total(m, "yolo_edge_frames_total", outcome="ok"),
            "expired": total(m, "yolo_edge_frames_total", outcome="expired"),
            "computed": total(m, "yolo_edge_batch_frames_sum"),
            "decoded": total(m, "yolo_edge_decode_seconds_count"),
            "doomed": total(m, "yolo_edge_doomed_frames_computed_total")}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def files(images: list[bytes]) -> list:
    return [("images", (f"f{i}.png", data, "image/png")) for i, data in enumerate(images)]


def busy(url: str, before: dict[str, float]) -> tuple[list[threading.Thread], list[int]]:
    """BUSY_REQUESTS requests of 8 frames without budgets, returned once all of them wait in the batch queue."""
    codes: list[int] = []

    def send() -> None:
        codes.append(requests.post(url + "/detect", files=files(SMALL), timeout=120).status_code)

    threads = [threading.Thread(target=send) for _ in range(BUSY_REQUESTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while counts(url)["decoded"] - before["decoded"] < 8 * BUSY_REQUESTS:  # decoded: in the queue, or running
        assert time.monotonic() < deadline, "the busy requests never arrived"
        time.sleep(0.01)
    return threads, codes


def test_the_doomed_counter_is_exported_at_zero(service):
    m = metrics(service.url)
    assert ("yolo_edge_doomed_frames_computed_total", 0.0) in [(k, v) for k, vs in m.items() for v in vs.values()]


def test_tiny_budgets_in_a_busy_service_come_back_expired_and_are_not_computed(service, default_detector):
    before = counts(service.url)
    client = CloudClient(service.url, expected_sha256=default_detector.info.sha256)
    client.service_info()  # the limits lookup a new client makes before its first upload, not in the 50 ms
    threads, codes = busy(service.url, before)
    with client:
        late = client.detect_frames(SMALL[:3], budgets_s=0.05)
        patient = client.detect_frames(SMALL[:1])  # the same frame, no deadline: waits its turn and is computed
    for t in threads:
        t.join()
    after = counts(service.url)
    assert codes == [200] * BUSY_REQUESTS
    assert [r.status for r in late] == [FrameStatus.EXPIRED] * 3, [r.error for r in late]
    assert all(r.error.endswith("not computed") for r in late)
    assert all(r.model.sha256 == default_detector.info.sha256 and r.detections is None for r in late)
    assert all(r.timing.queue_ms > 0 and r.timing.inference_ms == 0 and r.timing.batch_frames == 0 for r in late)
    assert patient[0].ok
    d = delta(after, before)
    assert d["expired"] == 3 and d["ok"] == 8 * BUSY_REQUESTS + 1
    assert d["computed"] == 8 * BUSY_REQUESTS + 1  # the model never saw the expired frames
    assert after["doomed"] == 0


def test_a_mixed_request_computes_only_its_live_frames(service):
    before = counts(service.url)
    r = requests.post(service.url + "/detect", files=files(SMALL[:4]), data={"budgets_s": "[30, 0, null, 0.0]"},
                      timeout=60)
    assert r.status_code == 200, r.text
    results = decode_results(r.json(), 4)
    assert [x.status for x in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK, FrameStatus.EXPIRED]
    assert results[0].timing.batch_frames == 2  # the model batch held the two live frames only
    d = delta(counts(service.url), before)
    assert (d["ok"], d["expired"], d["computed"], d["doomed"]) == (2, 2, 2, 0)


def test_the_client_does_not_upload_a_spent_budget(service, default_detector):
    before = counts(service.url)
    with CloudClient(service.url, expected_sha256=default_detector.info.sha256) as client:
        results = client.detect_frames(SMALL[:3], budgets_s=[30.0, -0.01, None])
        nothing = client.detect_frames(SMALL[:2], budgets_s=0)
    assert [x.status for x in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK]
    assert "not uploaded" in results[1].error
    assert [x.status for x in nothing] == [FrameStatus.EXPIRED] * 2
    d = delta(counts(service.url), before)
    assert (d["decoded"], d["ok"], d["expired"]) == (2, 2, 0)  # only the two live frames reached the service


def test_budgets_spend_the_upload_time_too(service):
    """The deadline counts from the request's arrival, before its body came: a slow upload spends the budget."""
    import socket

    body_parts = files(SMALL[:1])
    prepared = requests.Request("POST", service.url + "/detect", files=body_parts,
                                data={"budgets_s": json.dumps([0.3])}).prepare()
    head = (f"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {prepared.headers['Content-Type']}\r\nContent-Length: {len(prepared.body)}\r\n\r\n").encode()
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + prepared.body[:10])
        time.sleep(0.5)  # longer than the budget, within the service's body timeout
        sock.sendall(prepared.body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert b" 200 " in status.split(b"\r\n")[0], answer[:300]
    (result,) = decode_results(json.loads(body), 1)
    assert result.status is FrameStatus.EXPIRED and result.timing.queue_ms >= 300


@pytest.mark.parametrize("budgets, needle", [
    ("[0.5, 0.5]", "2 budgets for 1 images"), ("[-0.1]", "within 0"), ("[1e999]", "finite"),
    ("0.5", "JSON list"), ('["soon"]', "finite"),
])
def test_bad_budgets_are_json_400s_that_say_what_to_send(service, budgets, needle):
    r = requests.post(service.url + "/detect", files=files(SMALL[:1]), data={"budgets_s": budgets}, timeout=60)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert needle in r.json()["error"] and "budgets_s" in r.json()["error"]
