"""CloudClient holds its uploads to the limits the service says it takes, before uploading.

A stand-in service on 127.0.0.1 (a real HTTP server, tests/http_standin.py) says its
limits in ``GET /metadata`` and answers ``/detect`` with one result per uploaded image;
the client must split a batch into requests that fit, shrink a file that is too large when
it may, and refuse what fits no request with an error that names the limit. The real
service is exercised the same way in tests/bentos/test_limits.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import cv2
import numpy as np
import pytest
from http_standin import Script, Server

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.cloud_upload import REQUEST_OVERHEAD, fit_request, request_bytes, service_limits
from yolo_edge.errors import ImageTooLargeError
from yolo_edge.remote.wire import LIMITS, ServiceInfo

SHA = "ab" * 32


def _meta(**limits: int) -> dict[str, Any]:
    return {"name": "m", "sha256": SHA, "names": {"0": "person"}, "imgsz": [64, 64], "max_batch": 8,
            "limits": limits}


def _stand_in(**limits: int) -> Server:
    def answer(method: str, path: str, body: bytes) -> tuple[int, dict, Any]:
        if path == "/metadata":
            return 200, {}, _meta(**limits)
        if len(body) > limits.get("max_upload_bytes", LIMITS.max_request_bytes):
            return 413, {}, {"error": "request body above the limit"}
        images = body.count(b'name="images"')
        item = {"status": "ok", "image_shape": [1, 1], "names": {"0": "person"}, "detections": [],
                "model": {"name": "m", "sha256": SHA}, "timing": {}}
        return 200, {}, [item] * images

    return Server(Script(answer))


def _posts(server: Server) -> list[bytes]:
    return [body for method, _, body in server.script.seen if method == "POST"]


def _noise_png(side: int, seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".png", noise)[1].tobytes()  # noise does not compress: about 3 bytes a pixel


@pytest.fixture
def stand_in():
    servers: list[Server] = []

    def start(**limits: int) -> Server:
        servers.append(_stand_in(**limits))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_batch_over_the_body_limit_is_split_into_requests_that_fit(stand_in):
    limit = 100_000
    server = stand_in(max_upload_bytes=limit)
    frames = [_noise_png(100, seed) for seed in range(5)]  # ~30 KB each: 3 fit one request
    with CloudClient(server.url) as client:
        results = client.detect_frames(frames)
    assert [r.ok for r in results] == [True] * 5
    posts = _posts(server)
    assert [b.count(b'name="images"') for b in posts] == [3, 2]
    assert all(len(b) <= limit for b in posts)
    assert [p for _, p, _ in server.script.seen].count("/metadata") == 1  # read once


def test_a_batch_over_the_pixel_limit_or_the_image_count_is_split(stand_in):
    server = stand_in(max_request_pixels=3 * 64 * 64, max_images=2)
    frames = [np.full((64, 64, 3), i, np.uint8) for i in range(7)]
    with CloudClient(server.url) as client:
        assert len(client.detect_many(frames)) == 7
    assert [b.count(b'name="images"') for b in _posts(server)] == [2, 2, 2, 1]
    server = stand_in(max_request_pixels=3 * 64 * 64)
    with CloudClient(server.url) as client:
        assert len(client.detect_many(frames)) == 7
    assert [b.count(b'name="images"') for b in _posts(server)] == [3, 3, 1]


def test_a_frame_that_fits_no_request_is_refused_before_anything_is_uploaded(stand_in):
    server = stand_in(max_upload_bytes=20_000)
    big = _noise_png(100)  # ~30 KB, sent as it is without downscale
    with CloudClient(server.url, downscale=False) as client, pytest.raises(ImageTooLargeError) as info:
        client.detect_many([_noise_png(10), big])
    text = str(info.value)
    assert "image 1 is" in text and "20000" in text and "YOLO_EDGE_MAX_UPLOAD_BYTES" in text
    assert "jpeg_quality" in text and _posts(server) == []


def test_a_file_over_the_limit_is_shrunk_to_the_model_input_when_downscale_is_on(stand_in):
    server = stand_in(max_image_bytes=20_000)
    big = _noise_png(100)  # above the per-image limit, larger than the 64x64 model input
    with CloudClient(server.url) as client:
        (result,) = client.detect_frames([big])
    assert result.ok
    (body,) = _posts(server)
    assert big not in body and len(body) < 20_000 + REQUEST_OVERHEAD


def test_the_service_pixel_limit_refuses_an_unshrunk_array(stand_in):
    server = stand_in(max_pixels=50 * 50)
    with CloudClient(server.url, downscale=False) as client, pytest.raises(ImageTooLargeError,
                                                                           match=r"100x100 = 10000 pixels, above the 2500 pixels"):
        client.detect(np.zeros((100, 100, 3), np.uint8))
    with CloudClient(server.url) as client:  # shrunk to the 64x64 input: still above 2500 pixels
        with pytest.raises(ImageTooLargeError, match="YOLO_EDGE_MAX_PIXELS"):
            client.detect(np.zeros((100, 100, 3), np.uint8))
    assert _posts(server) == []


def test_service_limits_take_what_the_service_says_and_default_the_rest():
    info = ServiceInfo.from_dict(_meta(max_upload_bytes=1000, max_pixels=10))
    limits = service_limits(info)
    assert (limits.max_request_bytes, limits.max_pixels) == (1000, 10)
    assert (limits.max_image_bytes, limits.max_request_pixels) == (LIMITS.max_image_bytes, LIMITS.max_request_pixels)
    assert service_limits(ServiceInfo.from_dict(_meta())) == LIMITS
    with pytest.raises(Exception, match="max_upload_bytes"):
        ServiceInfo.from_dict(_meta(max_upload_bytes=-1))


def test_the_body_estimate_is_never_below_the_real_body(stand_in):
    server = stand_in()
    frames = [_noise_png(20, seed) for seed in range(4)]
    with CloudClient(server.url) as client:
        client.detect_frames(frames, budgets_s=[1.0, None, 2.5, 3.0], conf=0.25, classes=[0, 1])
    (body,) = _posts(server)
    fields = {"conf": "0.25", "classes": "[0, 1]", "budgets_s": json.dumps([0.999999, None, 2.49999, 2.99999])}
    assert len(body) <= request_bytes([len(f) for f in frames], fields)
    assert fit_request([(len(f), 400) for f in frames], fields) == 4
    assert re.search(rb'name="budgets_s"', body)


def test_frames_that_fit_alone_always_go_even_when_the_fields_grow(stand_in):
    # a body limit that one frame with its own budget fits, two with theirs would not
    frame = _noise_png(40)
    fields_one = {"budgets_s": json.dumps([9.99999])}
    limit = request_bytes([len(frame)], fields_one) + 10
    server = stand_in(max_upload_bytes=limit)
    with CloudClient(server.url) as client:
        results = client.detect_frames([frame, frame, frame], budgets_s=[10.0, 10.0, 10.0])
    assert [r.ok for r in results] == [True] * 3
    assert [b.count(b'name="images"') for b in _posts(server)] == [1, 1, 1]
