"""CloudClient against a fake transport: retries, backoff, Retry-After, auth, sha checks.

The fake is a requests transport adapter mounted on a real ``requests.Session``, so the
client's own encoding, headers and error mapping run unchanged; only the network is
replaced. The real service is exercised in ``tests/bentos/``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter

from yolo_edge.remote.cloud import CloudClient, prepare_upload
from yolo_edge.errors import (
    CloudAuthError,
    CloudError,
    CloudModelMismatchError,
    CloudRequestError,
    CloudTimeoutError,
    CloudUnavailableError,
    ConfigError,
    ImageDecodeError,
    ImageNotFoundError,
)

SHA = "ab" * 32
META = {"name": "fake", "sha256": SHA, "names": {"0": "person"}, "imgsz": [416, 416],
        "providers": ["CPUExecutionProvider"], "version": "0", "max_batch": 8}


class FakeAdapter(BaseAdapter):
    """Answers each request with ``handler(request) -> (status, body, headers)`` or raises."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], Any]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' adapter signature
        self.requests.append(request)
        out = self.handler(request)
        if isinstance(out, Exception):
            raise out
        status, body, headers = out
        resp = requests.Response()
        resp.status_code = status
        resp.url = request.url
        resp.request = request
        resp.headers.update({"Content-Type": "application/json", **(headers or {})})
        resp._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
        return resp

    def close(self) -> None:
        pass


def make_client(handler, **kwargs) -> tuple[CloudClient, FakeAdapter, list[float]]:
    session = requests.Session()
    adapter = FakeAdapter(handler)
    session.mount("http://", adapter)
    sleeps: list[float] = []
    kwargs.setdefault("backoff_s", 0.1)
    client = CloudClient("http://svc.test", session=session, sleep=sleeps.append, **kwargs)
    return client, adapter, sleeps


def detect_item(boxes, shape, sha=SHA) -> dict:
    return {
        "image_shape": list(shape),
        "names": {"0": "person"},
        "detections": [{"xyxy": b, "confidence": 0.9, "class_id": 0, "label": "person"} for b in boxes],
        "model": {"name": "fake", "sha256": sha},
        "timing": {"queue_ms": 1.0, "decode_ms": 2.0, "inference_ms": 30.0, "server_ms": 35.0},
    }


def service(detect_answer: Callable[[requests.PreparedRequest], Any]):
    def handler(req):
        if req.url.endswith("/metadata"):
            return 200, META, None
        if req.url.endswith("/readyz"):
            return 200, b"\n", None
        return detect_answer(req)
    return handler


def jpeg(h: int, w: int) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), 127, np.uint8))[1].tobytes()


def uploaded_frames(body: bytes) -> list[np.ndarray]:
    """The images of a multipart body, decoded (PNG and JPEG parts)."""
    frames = []
    for part in body.split(b"\r\n\r\n")[1:]:
        arr = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
        if arr is not None:
            frames.append(arr)
    return frames


def test_detect_downscales_losslessly_and_maps_boxes_back():
    seen = {}
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)

    def answer(req):
        seen["body"] = req.body
        return 200, [detect_item([[10, 20, 110, 120]], (234, 416))], None

    client, adapter, _ = make_client(service(answer))
    dets = client.detect(frame, conf=0.3, classes=[0])
    (uploaded,) = uploaded_frames(seen["body"])
    assert b"image/png" in seen["body"]
    # exactly the pixels the service's letterbox would have made of the full frame
    np.testing.assert_array_equal(uploaded, cv2.resize(frame, (416, 234), interpolation=cv2.INTER_LINEAR))
    assert dets.image_shape == (720, 1280)
    sx, sy = 1280 / 416, 720 / 234
    np.testing.assert_allclose(dets.xyxy[0], [10 * sx, 20 * sy, 110 * sx, 120 * sy], rtol=1e-5)
    assert b'name="conf"' in seen["body"] and b"[0]" in seen["body"]
    assert [r.method + " " + r.path_url for r in adapter.requests] == ["GET /metadata", "POST /detect"]


def test_jpeg_quality_makes_uploads_lossy_jpeg_only_when_asked():
    seen = {}

    def answer(req):
        seen["body"] = req.body
        return 200, [detect_item([], (234, 416))], None

    client, _, _ = make_client(service(answer), jpeg_quality=80)
    client.detect(np.full((720, 1280, 3), 127, np.uint8))
    assert b"image/jpeg" in seen["body"] and b"image/png" not in seen["body"]
    assert uploaded_frames(seen["body"])[0].shape == (234, 416, 3)
    big = jpeg(1000, 2000)  # a file larger than the model input: re-encoded only when lossy
    client.detect(big)
    assert big not in seen["body"] and uploaded_frames(seen["body"])[0].shape == (208, 416, 3)
    lossless, adapter, _ = make_client(service(answer))
    lossless.detect(big)
    assert big in seen["body"]
    # the service's limits are read before the first upload, once per client
    assert [r.path_url for r in adapter.requests] == ["/metadata", "/detect"]


def test_metadata_is_looked_up_once_per_client_even_from_many_threads():
    import concurrent.futures as cf

    client, adapter, _ = make_client(service(lambda req: (200, [detect_item([], (10, 10))], None)))
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.detect(np.zeros((500, 500, 3), np.uint8)), range(16)))
    paths = [r.path_url for r in adapter.requests]
    assert paths.count("/metadata") == 1 and paths.count("/detect") == 16


def test_more_images_than_one_request_takes_are_split():
    from yolo_edge.remote.wire import LIMITS

    sizes = []

    def answer(req):
        n = req.body.count(b'name="images"')
        sizes.append(n)
        return 200, [detect_item([], (10, 10))] * n, None

    client, _, _ = make_client(service(answer))
    dets = client.detect_many([jpeg(10, 10)] * (LIMITS.max_images + 3))
    assert sizes == [LIMITS.max_images, 3] and len(dets) == LIMITS.max_images + 3


def test_a_failed_frame_does_not_hide_the_others():
    from yolo_edge.errors import CloudFrameError
    from yolo_edge.remote.wire import FrameStatus

    failed = {"status": "error", "error": "inference failed", "model": {"name": "fake", "sha256": SHA},
              "timing": {"queue_ms": 1.0}}
    client, _, _ = make_client(service(lambda req: (200, [detect_item([[1, 2, 3, 4]], (10, 10)), failed], None)))
    results = client.detect_frames([jpeg(10, 10), jpeg(10, 10)])
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.ERROR]
    assert len(results[0].detections) == 1 and results[1].detections is None
    assert results[1].error == "inference failed"
    with pytest.raises(CloudFrameError, match="image 1 .error.: inference failed") as info:
        client.detect_many([jpeg(10, 10), jpeg(10, 10)])
    assert info.value.index == 1 and info.value.frame_status == "error"


@pytest.mark.parametrize("body", [[{"detections": "nope"}], [{"status": "weird"}], {"not": "a list"},
                                  [{"status": "error"}, {"status": "ok"}]])
def test_an_unreadable_answer_is_a_cloud_error(body):
    client, _, _ = make_client(service(lambda req: (200, body, None)))
    with pytest.raises(CloudError, match="answered"):
        client.detect(jpeg(10, 10))


def test_small_encoded_bytes_are_sent_unchanged():
    raw = jpeg(100, 200)
    seen = {}

    def answer(req):
        seen["body"] = req.body
        return 200, [detect_item([], (100, 200))], None

    client, _, _ = make_client(service(answer))
    dets = client.detect(raw)
    assert raw in seen["body"] and len(dets) == 0 and dets.image_shape == (100, 200)


def test_detect_many_is_one_request_and_returns_meta():
    client, adapter, _ = make_client(
        service(lambda req: (200, [detect_item([[1, 2, 3, 4]], (10, 10)), detect_item([], (10, 10))], None)),
        downscale=False,
    )
    dets, metas = client.detect_many([jpeg(10, 10), jpeg(10, 10)], return_meta=True)
    assert len(dets) == 2 and len(dets[0]) == 1 and len(dets[1]) == 0
    assert metas[0]["model"]["sha256"] == SHA
    assert set(metas[0]["timing"]) >= {"queue_ms", "inference_ms", "server_ms", "roundtrip_ms"}
    assert sum(r.path_url == "/detect" for r in adapter.requests) == 1


def test_retries_503_with_backoff_then_succeeds():
    answers = iter([(503, {"error": "overloaded"}, None), (503, {"error": "overloaded"}, None),
                    (200, [detect_item([], (10, 10))], None)])
    client, adapter, sleeps = make_client(service(lambda req: next(answers)), downscale=False, max_retries=2)
    client.detect(jpeg(10, 10))
    assert len(sleeps) == 2
    # exponential with jitter in [0.5, 1) of the nominal 0.1, 0.2
    assert 0.05 <= sleeps[0] < 0.1 and 0.1 <= sleeps[1] < 0.2


def test_retry_after_is_honoured_and_reported():
    client, _, sleeps = make_client(
        service(lambda req: (429, {"error": "busy"}, {"Retry-After": "3"})), downscale=False, max_retries=1
    )
    with pytest.raises(CloudUnavailableError) as info:
        client.detect(jpeg(10, 10))
    assert sleeps == [3.0]
    assert info.value.retry_after_s == 3.0 and info.value.status_code == 429


def test_retry_after_longer_than_timeout_gives_up_at_once():
    client, _, sleeps = make_client(
        service(lambda req: (503, {"error": "scaling up"}, {"Retry-After": "120"})), downscale=False, timeout=5
    )
    with pytest.raises(CloudUnavailableError) as info:
        client.detect(jpeg(10, 10))
    assert sleeps == [] and info.value.retry_after_s == 120.0


def test_connection_refused_is_unavailable_after_retries():
    client, adapter, sleeps = make_client(lambda req: requests.ConnectionError("refused"), max_retries=2)
    with pytest.raises(CloudUnavailableError, match="cannot connect"):
        client.info()
    assert len(adapter.requests) == 3 and len(sleeps) == 2


def test_a_slow_detect_is_typed_and_not_retried():
    client, adapter, _ = make_client(service(lambda req: requests.ReadTimeout("slow")))
    with pytest.raises(CloudTimeoutError):
        client.detect(jpeg(10, 10))
    assert [r.path_url for r in adapter.requests] == ["/metadata", "/detect"]


def test_a_slow_metadata_lookup_is_retried():
    client, adapter, sleeps = make_client(lambda req: requests.ReadTimeout("slow"), max_retries=2)
    with pytest.raises(CloudTimeoutError):
        client.info()
    assert len(adapter.requests) == 3 and len(sleeps) == 2


def test_connect_timeout_is_retried_even_for_detect():
    # requests.ConnectTimeout is also a requests.Timeout: it must not be taken for a slow answer
    answers = iter([requests.ConnectTimeout("no SYN-ACK"), (200, [detect_item([], (10, 10))], None)])
    client, adapter, sleeps = make_client(service(lambda req: next(answers)), max_retries=2)
    assert len(client.detect(jpeg(10, 10))) == 0
    assert [r.path_url for r in adapter.requests] == ["/metadata", "/detect", "/detect"] and len(sleeps) == 1
    client, _, _ = make_client(lambda req: requests.ConnectTimeout("no SYN-ACK"), max_retries=1)
    with pytest.raises(CloudUnavailableError, match="no connection within"):
        client.detect(jpeg(10, 10))


@pytest.mark.parametrize("status,error", [(401, CloudAuthError), (403, CloudAuthError),
                                          (400, CloudRequestError), (413, CloudRequestError),
                                          (500, CloudError)])
def test_status_codes_map_to_typed_errors_without_retry(status, error):
    client, adapter, sleeps = make_client(
        service(lambda req: (status, {"error": "bad image: not a JPEG"}, None)), downscale=False
    )
    with pytest.raises(error) as info:
        client.detect(jpeg(10, 10))
    assert info.value.status_code == status and sleeps == []
    if status == 400:
        assert "not a JPEG" in str(info.value)


def test_bentoml_list_shaped_error_body_is_read():
    client, _, _ = make_client(service(lambda req: (422, [{"error": "classes must be ints"}], None)), downscale=False)
    with pytest.raises(CloudRequestError, match="classes must be ints"):
        client.detect(jpeg(10, 10))


def nginx_page(status: int, reason: str) -> tuple[int, bytes, dict]:
    """nginx's own error page, as a balancer without custom error_page answers."""
    body = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
            "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()
    return status, body, {"Content-Type": "text/html", "Server": "nginx"}


def test_a_proxys_html_502_is_a_typed_retried_error_with_a_clear_message():
    client, _, sleeps = make_client(service(lambda req: nginx_page(502, "Bad Gateway")), downscale=False, max_retries=1)
    with pytest.raises(CloudUnavailableError) as info:
        client.detect(jpeg(10, 10))
    msg = str(info.value)
    assert info.value.status_code == 502 and len(sleeps) == 1
    assert "502 Bad Gateway (an HTML page from nginx in front of the service" in msg
    assert "replicas are running" in msg and "<" not in msg


def test_a_proxys_html_413_names_the_proxy_limit():
    client, _, sleeps = make_client(service(lambda req: nginx_page(413, "Request Entity Too Large")), downscale=False)
    with pytest.raises(CloudRequestError) as info:
        client.detect(jpeg(10, 10))
    msg = str(info.value)
    assert info.value.status_code == 413 and sleeps == []
    assert "413 Request Entity Too Large" in msg and "client_max_body_size" in msg and "<" not in msg


def test_a_plain_text_error_body_is_kept():
    client, _, _ = make_client(service(lambda req: (500, b"worker crashed", {"Content-Type": "text/plain"})),
                               downscale=False)
    with pytest.raises(CloudError, match="-> 500: worker crashed$"):
        client.detect(jpeg(10, 10))


def test_token_is_sent_as_bearer():
    client, adapter, _ = make_client(service(lambda req: (200, [detect_item([], (10, 10))], None)),
                                     token="s3cret", downscale=False)
    client.detect(jpeg(10, 10))
    assert adapter.requests[-1].headers["Authorization"] == "Bearer s3cret"
    client2, adapter2, _ = make_client(service(lambda req: (200, [detect_item([], (10, 10))], None)), downscale=False)
    client2.detect(jpeg(10, 10))
    assert "Authorization" not in adapter2.requests[-1].headers


def test_sha_mismatch_is_an_error_unless_allowed(caplog):
    answer = service(lambda req: (200, [detect_item([], (10, 10), sha="cd" * 32)], None))
    client, _, _ = make_client(answer, expected_sha256=SHA, downscale=False)
    with pytest.raises(CloudModelMismatchError, match="allow_model_mismatch"):
        client.detect(jpeg(10, 10))
    lenient, _, _ = make_client(answer, expected_sha256=SHA, allow_model_mismatch=True, downscale=False)
    assert len(lenient.detect(jpeg(10, 10))) == 0
    assert "expected" in caplog.text


def test_verify_model():
    client, _, _ = make_client(service(None))
    assert client.verify_model(SHA)["name"] == "fake"
    with pytest.raises(CloudModelMismatchError):
        client.verify_model("00" * 32)
    with pytest.raises(ConfigError):
        client.verify_model()


def test_ready_and_wake_never_raise():
    client, _, _ = make_client(lambda req: requests.ConnectionError("refused"))
    assert client.ready() is False
    state = {"n": 0}

    def warming(req):
        state["n"] += 1
        return (200, b"\n", None) if state["n"] >= 3 else (503, b"not ready", None)

    client, adapter, sleeps = make_client(warming)
    assert client.wake() is False  # one ping, no waiting
    assert client.wake(wait_s=30) is True
    assert len(adapter.requests) == 3 and sleeps == [0.5]


def test_bad_inputs_fail_locally_with_typed_errors():
    client, adapter, _ = make_client(service(None), downscale=False)
    with pytest.raises(ImageDecodeError):
        client.detect(b"definitely not an image")
    with pytest.raises(ImageNotFoundError, match="not found"):
        client.detect("/nonexistent/frame.jpg")
    with pytest.raises(ConfigError):
        client.detect_many(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError):
        CloudClient("svc:3000")
    assert not any(r.path_url == "/detect" for r in adapter.requests)


def test_prepare_upload_rgb_and_no_upscale():
    rgb = np.zeros((50, 60, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB
    up = prepare_upload(rgb, channels="rgb", imgsz=(416, 416), jpeg_quality=95)
    back = cv2.imdecode(np.frombuffer(up.data, np.uint8), cv2.IMREAD_COLOR)
    assert up.shape == (50, 60) and up.scale == (1.0, 1.0)
    assert back[25, 30, 2] > 200 and back[25, 30, 0] < 50  # red lands in BGR's last channel
    lossless = prepare_upload(rgb, channels="rgb", imgsz=(416, 416))
    assert lossless.content_type == "image/png"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(lossless.data, np.uint8), cv2.IMREAD_COLOR),
                                  rgb[..., ::-1])


def test_prepare_upload_refuses_bombs_and_unknown_formats_before_sending():
    import struct
    import zlib

    from yolo_edge.errors import ImageTooLargeError, UnsupportedImageError

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(ImageTooLargeError):
        prepare_upload(bomb)
    with pytest.raises(UnsupportedImageError, match="OpenEXR"):
        prepare_upload(b"\x76\x2f\x31\x01" + b"\x00" * 100)


def test_detect_with_endpoint_reuses_one_client_per_endpoint_and_token():
    import yolo_edge
    from yolo_edge import api

    session = requests.Session()
    adapter = FakeAdapter(service(lambda req: (200, [detect_item([], (10, 10))], None)))
    session.mount("http://", adapter)
    frame = np.zeros((500, 500, 3), np.uint8)
    try:
        for _ in range(3):
            yolo_edge.detect(frame, endpoint="http://svc.test", session=session)
        yolo_edge.detect(frame, endpoint="http://svc.test", token="other", session=session)
        paths = [r.path_url for r in adapter.requests]
        assert paths.count("/metadata") == 2 and paths.count("/detect") == 4  # one lookup per (endpoint, token)
        with pytest.raises(ConfigError, match="unknown option"):
            yolo_edge.detect(frame, endpoint="http://svc.test", jpeg_qualiti=80)
    finally:
        api.close_clients()
    assert not api._clients


# -- per-frame budgets ---------------------------------------------------------------------------

def form_field(req, name: str) -> str | None:
    """A text field of a multipart request body, or None."""
    import re

    match = re.search(rb'name="' + name.encode() + rb'"\r\n\r\n(.*?)\r\n--', req.body, re.DOTALL)
    return match.group(1).decode() if match else None


def expired_item(sha=SHA) -> dict:
    return {"status": "expired", "error": "its deadline passed 3.0 ms before its batch started: not computed",
            "model": {"name": "fake", "sha256": sha}, "timing": {"queue_ms": 250.0, "server_ms": 250.0}}


def test_budgets_travel_with_the_request_and_expired_frames_come_back_as_outcomes():
    from yolo_edge.errors import CloudFrameError
    from yolo_edge.remote.wire import FrameStatus

    sent = []

    def answer(req):
        sent.append(json.loads(form_field(req, "budgets_s")))
        return 200, [detect_item([[1, 2, 3, 4]], (10, 10)), expired_item(), detect_item([], (10, 10))], None

    client, adapter, _ = make_client(service(answer), downscale=False, expected_sha256=SHA)
    results = client.detect_frames([jpeg(10, 10)] * 3, budgets_s=[50.0, 20.0, None], conf=0.3)
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK]
    assert results[1].detections is None and "not computed" in results[1].error
    assert all(r.model.sha256 == SHA for r in results)
    (budgets,) = sent
    # what is left when the request is sent: a little less than given, never more; None stays None
    assert 40 < budgets[0] <= 50 and 10 < budgets[1] <= 20 and budgets[2] is None
    assert form_field(adapter.requests[-1], "conf") == "0.3"
    with pytest.raises(CloudFrameError, match="image 1 .expired.") as info:
        client.detect_many([jpeg(10, 10)] * 3, budgets_s=100.0)
    assert info.value.frame_status == "expired" and sent[-1] == [pytest.approx(100.0, abs=10)] * 3


def test_without_budgets_the_request_is_as_before():
    client, adapter, _ = make_client(service(lambda req: (200, [detect_item([], (10, 10))], None)), downscale=False)
    client.detect_frames([jpeg(10, 10)])
    assert form_field(adapter.requests[-1], "budgets_s") is None


def test_a_spent_budget_is_not_uploaded():
    from yolo_edge.remote.wire import FrameStatus

    seen = []

    def answer(req):
        n = req.body.count(b'name="images"')
        seen.append((n, json.loads(form_field(req, "budgets_s"))))
        return 200, [detect_item([], (10, 10))] * n, None

    client, _, _ = make_client(service(answer), downscale=False, expected_sha256=SHA)
    results = client.detect_frames([jpeg(10, 10), jpeg(20, 20), jpeg(30, 30)], budgets_s=[50.0, 0.0, -0.3])
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.EXPIRED]
    assert seen == [(1, [pytest.approx(50.0, abs=10)])]  # one image uploaded, with its own budget
    assert "not uploaded" in results[2].error and results[2].model.sha256 == SHA


def test_the_caller_learns_which_frames_were_not_uploaded():
    """A frame answered expired by the client itself is told apart from one the service expired."""
    client, _, _ = make_client(service(lambda req: (200, [detect_item([], (10, 10))], None)), downscale=False,
                               expected_sha256=SHA)
    not_sent = []
    client.detect_frames([jpeg(10, 10), jpeg(20, 20), jpeg(30, 30)], budgets_s=[0.0, 50.0, -1.0],
                         on_not_sent=not_sent.append)
    assert sorted(not_sent) == [0, 2]
    with pytest.raises(ConfigError, match="on_not_sent"):
        client.detect_frames([jpeg(10, 10)], on_not_sent="nope")


def test_the_caller_learns_each_frames_encoded_size_before_the_upload():
    """The agent plans the upload's time on its uplink from the real bytes, not from the last frames'."""
    seen = []

    def answer(req):
        seen.append(list(encoded))  # by the time the request arrives, the sizes were told
        n = req.body.count(b'name="images"')
        return 200, [detect_item([], (10, 10))] * n, None

    encoded = []
    client, _, _ = make_client(service(answer), downscale=False, expected_sha256=SHA)
    frames = [jpeg(10, 10), jpeg(40, 40), jpeg(30, 30)]
    client.detect_frames(frames, budgets_s=[50.0, 50.0, -1.0], on_encoded=encoded.append)
    (sizes,) = encoded
    assert sizes[0] > 0 and sizes[1] > sizes[0] and sizes[2] == 0  # the third was not uploaded
    assert seen == [[sizes]]
    with pytest.raises(ConfigError, match="on_encoded"):
        client.detect_frames([jpeg(10, 10)], on_encoded="nope")


def test_when_every_budget_is_spent_no_request_is_made():
    from yolo_edge.remote.wire import FrameStatus

    client, adapter, _ = make_client(service(None), expected_sha256=SHA)
    frames = [np.zeros((600, 600, 3), np.uint8)] * 2  # arrays would need /metadata to be shrunk: not even that
    results = client.detect_frames(frames, budgets_s=0)
    assert [r.status for r in results] == [FrameStatus.EXPIRED] * 2 and adapter.requests == []
    assert all(r.model.sha256 == SHA for r in results)


def test_budgets_are_recomputed_at_each_try():
    budgets = []
    answers = iter([(503, {"error": "overloaded"}, None), (200, [detect_item([], (10, 10))], None)])

    def answer(req):
        budgets.append(json.loads(form_field(req, "budgets_s"))[0])
        return next(answers)

    session = requests.Session()
    session.mount("http://", FakeAdapter(service(answer)))
    # sleeping for real: the budget must shrink by the wait
    client = CloudClient("http://svc.test", session=session, downscale=False, max_retries=2, backoff_s=0.05)
    client.detect_frames([jpeg(10, 10)], budgets_s=2.0)
    assert len(budgets) == 2 and budgets[1] <= budgets[0] - 0.02


def test_no_retry_that_could_not_start_before_the_last_deadline():
    client, adapter, sleeps = make_client(
        service(lambda req: (503, {"error": "overloaded"}, {"Retry-After": "1"})), downscale=False, max_retries=3)
    with pytest.raises(CloudUnavailableError, match="overloaded"):
        client.detect_frames([jpeg(10, 10), jpeg(10, 10)], budgets_s=[0.3, 0.5])
    assert sleeps == [] and sum(r.path_url == "/detect" for r in adapter.requests) == 1
    # a frame without a deadline keeps the retries
    with pytest.raises(CloudUnavailableError):
        client.detect_frames([jpeg(10, 10), jpeg(10, 10)], budgets_s=[0.3, None])
    assert sleeps == [1.0, 1.0, 1.0]


def test_an_expired_answer_of_another_model_is_still_a_mismatch():
    client, _, _ = make_client(service(lambda req: (200, [expired_item(sha="cd" * 32)], None)),
                               downscale=False, expected_sha256=SHA)
    with pytest.raises(CloudModelMismatchError):
        client.detect_frames([jpeg(10, 10)], budgets_s=0.5)


@pytest.mark.parametrize("budgets", [[0.5], [0.5, 0.5, 0.5], float("nan"), [float("inf"), 1], "0.5", [1, "1"],
                                     [True, 1], 1e9, {0: 1, 1: 1}])
def test_bad_budgets_fail_locally(budgets):
    client, adapter, _ = make_client(service(None), downscale=False)
    with pytest.raises(ConfigError, match="budgets_s"):
        client.detect_frames([jpeg(10, 10), jpeg(10, 10)], budgets_s=budgets)
    assert adapter.requests == []
