"""The service's size limits are the wire module's, it says them, and the client keeps to them.

Against real ``bentoml serve`` processes on 127.0.0.1 (tests/bentos/conftest.py): the
default service publishes :data:`yolo_edge.remote.wire.LIMITS` in ``GET /metadata``; the secured
one runs with a 2 MB body limit, and the client then splits a batch that would exceed it
into several requests and refuses a frame that fits none, before uploading, where a plain
POST gets a 413.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import requests

from bentos.service import Settings
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.errors import ImageTooLargeError
from yolo_edge.remote.wire import LIMITS

pytestmark = pytest.mark.integration  # a real bentoml serve


def _noise_jpeg(side: int, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()


def _recording_session(seen: list[tuple[str, str, int, int]]) -> requests.Session:
    session = requests.Session()

    def record(resp: requests.Response, *args: object, **kwargs: object) -> None:
        body = resp.request.body or b""
        seen.append((resp.request.method, resp.request.path_url, len(body), resp.status_code))

    session.hooks["response"].append(record)
    return session


def test_the_service_settings_start_from_the_wire_limits():
    s = Settings()
    assert (s.max_upload_bytes, s.max_image_bytes, s.max_pixels, s.max_request_pixels) == (
        LIMITS.max_request_bytes, LIMITS.max_image_bytes, LIMITS.max_pixels, LIMITS.max_request_pixels)
    env = Settings.from_env({"YOLO_EDGE_MAX_IMAGE_BYTES": "1000"})
    assert env.max_image_bytes == 1000 and env.max_upload_bytes == LIMITS.max_request_bytes


def test_the_default_service_says_the_wire_limits(service):
    with CloudClient(service.url) as client:
        limits = client.info()["limits"]
    assert limits == {"max_images": LIMITS.max_images, "max_upload_bytes": LIMITS.max_request_bytes,
                      "max_image_bytes": LIMITS.max_image_bytes, "max_pixels": LIMITS.max_pixels,
                      "max_request_pixels": LIMITS.max_request_pixels, "max_det": LIMITS.max_det}


def test_the_client_splits_a_batch_the_service_would_refuse(secured_service):
    limit = int(secured_service.env["YOLO_EDGE_MAX_UPLOAD_BYTES"])
    frames = [_noise_jpeg(500, seed) for seed in range(4)]  # ~0.6 MB each, 2.4 MB together
    assert all(len(f) < limit for f in frames) and sum(map(len, frames)) > limit
    files = [("images", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames)]
    headers = {"Authorization": f"Bearer {secured_service.token}"}
    whole = requests.post(secured_service.url + "/detect", files=files, headers=headers, timeout=60)
    assert whole.status_code == 413  # in one request, the service refuses the batch
    seen: list[tuple[str, str, int, int]] = []
    with CloudClient(secured_service.url, token=secured_service.token, downscale=False,
                     session=_recording_session(seen)) as client:
        results = client.detect_frames(frames)
        assert client.service_info().max_upload_bytes == limit
    assert [r.ok for r in results] == [True] * 4
    posts = [(size, status) for method, path, size, status in seen if path == "/detect"]
    assert len(posts) >= 2 and all(status == 200 and size <= limit for size, status in posts), posts


def test_the_client_refuses_a_frame_that_fits_no_request_before_uploading(secured_service):
    limit = int(secured_service.env["YOLO_EDGE_MAX_UPLOAD_BYTES"])
    big = _noise_jpeg(1400, 0)  # ~4 MB
    assert len(big) > limit
    seen: list[tuple[str, str, int, int]] = []
    with CloudClient(secured_service.url, token=secured_service.token, downscale=False,
                     session=_recording_session(seen)) as client, pytest.raises(ImageTooLargeError) as info:
        client.detect(big)
    assert str(limit) in str(info.value) and "YOLO_EDGE_MAX_UPLOAD_BYTES" in str(info.value)
    assert [path for _, path, _, _ in seen] == ["/metadata"]  # nothing uploaded
    # with downscale (the default), the file is shrunk to the model's input and answered
    with CloudClient(secured_service.url, token=secured_service.token) as client:
        assert client.detect_frames([big])[0].ok
