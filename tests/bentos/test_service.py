"""The service for real: `bentoml serve` on 127.0.0.1 with the pinned default model.

Bad inputs must get a 4xx JSON error that names the problem (never a 500), concurrent
requests must really share model batches (read from /metrics), and the cloud answer
must equal the local Detector's for the same image.
"""

from __future__ import annotations

import concurrent.futures as cf
import struct
import zlib

import cv2
import numpy as np
import pytest
import requests
from scrape import metrics, total

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.errors import CloudAuthError, CloudModelMismatchError


def post(url: str, files: list, data: dict | None = None, token: str | None = None, timeout: float = 60):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + "/detect", files=files, data=data or {}, headers=headers, timeout=timeout)


def jpeg_part(path, name="images"):
    return (name, (path.name, path.read_bytes(), "image/jpeg"))


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image: must be refused before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64


# -- readiness ----------------------------------------------------------------------------

def test_readyz_is_503_while_warming_up_then_200(service):
    assert service.warming, "never saw the service before it was ready: warm-up too short to observe"
    ready, detect, retry_after, body = service.warming[0]
    assert ready == 503
    assert detect == 503 and retry_after is not None and "warming up" in body  # clients are told to come back
    assert requests.get(service.url + "/readyz", timeout=5).status_code == 200
    assert requests.get(service.url + "/livez", timeout=5).status_code == 200


# -- detection ------------------------------------------------------------------------------

def test_multipart_upload_of_real_photos(service, bus_jpg, zidane_jpg, default_detector):
    r = post(service.url, [jpeg_part(bus_jpg), jpeg_part(zidane_jpg)], {"conf": "0.3"})
    assert r.status_code == 200, r.text
    bus, zidane = r.json()
    assert bus["image_shape"] == [1080, 810] and zidane["image_shape"] == [720, 1280]
    assert {"bus", "person"} <= {d["label"] for d in bus["detections"]}
    assert "person" in {d["label"] for d in zidane["detections"]}
    assert all(d["confidence"] >= 0.3 for d in bus["detections"] + zidane["detections"])
    for item in (bus, zidane):
        assert item["model"] == {"name": "yolov3-tiny-coco", "sha256": default_detector.info.sha256}
        assert set(item["timing"]) >= {"queue_ms", "decode_ms", "inference_ms", "server_ms"}
        assert item["timing"]["server_ms"] >= item["timing"]["inference_ms"] > 0


def test_cloud_detections_equal_local(service, sample_photos, default_detector):
    with CloudClient(service.url, downscale=False, expected_sha256=default_detector.info.sha256) as client:
        for photo in sample_photos:
            cloud = client.detect(photo)
            local = default_detector(photo)
            assert cloud.image_shape == local.image_shape
            np.testing.assert_array_equal(cloud.class_id, local.class_id)
            np.testing.assert_allclose(cloud.xyxy, local.xyxy, atol=1e-3)  # JSON keeps 3 decimals
            np.testing.assert_allclose(cloud.confidence, local.confidence, atol=1e-6)


def test_detect_with_endpoint_equals_local_detect(service, bus_jpg, zidane_jpg):
    import yolo_edge

    local = yolo_edge.detect([bus_jpg, zidane_jpg], conf=0.3)
    cloud = yolo_edge.detect([bus_jpg, zidane_jpg], conf=0.3, endpoint=service.url, downscale=False)
    for c, l in zip(cloud, local):
        assert c.labels == l.labels
        np.testing.assert_allclose(c.xyxy, l.xyxy, atol=1e-3)
    single = yolo_edge.detect(bus_jpg, conf=0.3, endpoint=service.url, downscale=False)
    assert single.labels == local[0].labels


def test_options_are_applied_per_request(service, bus_jpg, default_detector):
    r = post(service.url, [jpeg_part(bus_jpg)], {"classes": "[5]", "conf": "0.2", "max_det": "1"})
    assert r.status_code == 200, r.text
    (item,) = r.json()
    assert [d["label"] for d in item["detections"]] == ["bus"]
    local = default_detector(str(bus_jpg), classes=[5], conf=0.2, max_det=1)
    assert item["detections"][0]["xyxy"] == pytest.approx(local.xyxy[0].tolist(), abs=1e-3)


def test_downscaled_numpy_upload_maps_back_to_original_coordinates(service, bus_jpg, default_detector):
    frame = cv2.imread(str(bus_jpg))
    with CloudClient(service.url, jpeg_quality=95) as client:
        dets, metas = client.detect_many([frame], return_meta=True)
    assert dets[0].image_shape == (1080, 810)
    local = default_detector(frame)
    # the upload is the letterbox-sized frame as JPEG: the confident boxes land where the local ones do
    strong = local.confidence > 0.5
    for box in local.xyxy[strong]:
        assert np.abs(dets[0].xyxy - box).max(axis=1).min() < 15
    assert metas[0]["timing"]["roundtrip_ms"] > 0


def test_concurrent_requests_are_merged_into_batches(service, bus_jpg):
    before = metrics(service.url)
    body = bus_jpg.read_bytes()
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(service.url, [("images", ("b.jpg", body, "image/jpeg"))]).status_code,
                              range(16)))
    assert codes == [200] * 16
    after = metrics(service.url)
    batches = total(after, "yolo_edge_batch_frames_count") - total(before, "yolo_edge_batch_frames_count")
    frames = total(after, "yolo_edge_batch_frames_sum") - total(before, "yolo_edge_batch_frames_sum")
    assert frames == 16
    assert batches < 16, "every request ran alone: adaptive batching did not merge any"
    bento_batches = (total(after, "bentoml_service_adaptive_batch_size_count", method_name="detect")
                     - total(before, "bentoml_service_adaptive_batch_size_count", method_name="detect"))
    assert 0 < bento_batches < 16


# -- bad input: 4xx JSON naming the problem, never a 500 -------------------------------------

@pytest.mark.parametrize("case,files,data,status,needle", [
    ("text file", [("images", ("a.txt", b"hello world", "text/plain"))], None, 400, "could not decode"),
    ("empty file", [("images", ("a.jpg", b"", "image/jpeg"))], None, 400, "empty"),
    ("truncated png", [("images", ("a.png", cv2.imencode(".png", np.full((64, 64, 3), 9, np.uint8))[1].tobytes()[:60],
                                   "image/png"))], None, 400, "could not decode"),
    ("decompression bomb", [("images", ("bomb.png", png_header_claiming(100_000, 100_000), "image/png"))], None,
     413, "megapixels"),
    # a multipart text field (no filename): BentoML's own parser would try to download it
    ("url instead of file", [("images", (None, b"http://169.254.169.254/latest"))], None, 400, "file uploads"),
    ("no images", [("conf", (None, b"0.5"))], None, 400, "no images"),
    ("conf out of range", "PHOTO", {"conf": "1.5"}, 400, "conf must be"),
    ("classes not a list", "PHOTO", {"classes": "\"person\""}, 400, "'classes' must be a JSON list"),
    ("max_det zero", "PHOTO", {"max_det": "0"}, 400, "max_det"),
    ("unknown field", "PHOTO", {"confidence": "0.5"}, 400, "unknown form field"),
    ("not json", "PHOTO", {"iou": "high"}, 400, "iou"),
])
def test_bad_input_gets_a_4xx_json_error(service, bus_jpg, case, files, data, status, needle):
    if files == "PHOTO":
        files = [jpeg_part(bus_jpg)]
    r = post(service.url, files, data)
    assert r.status_code == status, (case, r.status_code, r.text)
    body = r.json()
    assert needle in body["error"], (case, body)
    assert body["status"] == status


def test_non_multipart_body_is_415(service):
    r = requests.post(service.url + "/detect", json={"images": ["aGVsbG8="]}, timeout=30)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]


def test_too_many_images_in_one_request(service):
    tiny = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    r = post(service.url, [("images", (f"{i}.jpg", tiny, "image/jpeg")) for i in range(40)])
    assert r.status_code == 400 and "too many images: at most 32" in r.json()["error"]


def test_bad_inputs_are_counted_and_did_not_hurt_the_service(service, bus_jpg):
    post(service.url, [("images", ("a.txt", b"nope", "text/plain"))])
    m = metrics(service.url)
    assert total(m, "yolo_edge_frames_total", outcome="invalid") >= 1
    assert post(service.url, [jpeg_part(bus_jpg)]).status_code == 200


# -- metadata and metrics ---------------------------------------------------------------------

def test_metadata(service, default_detector):
    with CloudClient(service.url) as client:
        info = client.info()
        assert client.verify_model(default_detector.info.sha256)["name"] == "yolov3-tiny-coco"
        with pytest.raises(CloudModelMismatchError):
            client.verify_model("0" * 64)
    assert info["sha256"] == default_detector.info.sha256
    assert info["imgsz"] == [416, 416] and len(info["names"]) == 80 and info["names"]["0"] == "person"
    assert "CPUExecutionProvider" in info["providers"]
    assert info["version"] and info["max_batch"] >= 2
    assert info["backend_info"]["name"] == "onnxruntime" and "auto" in info["backend_info"]["selected"]


def test_the_log_says_where_the_model_came_from(service, default_model_path):
    # the test service is started with YOLO_EDGE_HOME set to the user's cache (conftest._model_env)
    log = service.log.read_text(errors="replace")
    assert f"serving yolov3-tiny-coco from {default_model_path}: $YOLO_EDGE_HOME ({default_model_path.parents[2]})" in log


def test_metrics_parse_and_carry_the_model(service, bus_jpg, default_detector):
    post(service.url, [jpeg_part(bus_jpg)])
    m = metrics(service.url)
    for name in ("yolo_edge_batch_frames_count", "yolo_edge_inference_seconds_count", "yolo_edge_decode_seconds_count"):
        assert total(m, name) >= 1, name
    assert total(m, "yolo_edge_frames_total", outcome="ok") >= 1
    info = [dict(k) for k, v in m["yolo_edge_model_info"].items() if v == 1]
    assert any(i["sha256"] == default_detector.info.sha256 and i["name"] == "yolov3-tiny-coco" for i in info)
    assert "bentoml_service_request_duration_seconds_count" in m


def test_client_wake_and_ready(service):
    with CloudClient(service.url) as client:
        assert client.ready() and client.wake(wait_s=5)


# -- protection: auth, upload limit, overload -------------------------------------------------

def test_auth_required_when_token_set(secured_service, bus_jpg):
    url, token = secured_service.url, secured_service.token
    r = post(url, [jpeg_part(bus_jpg)])
    assert r.status_code == 401 and "bearer" in r.json()["error"].lower()
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(url, [jpeg_part(bus_jpg)], token="wrong").status_code == 401
    assert requests.get(url + "/metadata", timeout=10).status_code == 401
    assert post(url, [jpeg_part(bus_jpg)], token=token).status_code == 200
    # probes and the metrics scrape stay open
    assert requests.get(url + "/readyz", timeout=10).status_code == 200
    assert requests.get(url + "/metrics", timeout=10).status_code == 200


def test_client_with_and_without_token(secured_service, bus_jpg):
    with CloudClient(secured_service.url, token=secured_service.token) as client:
        assert len(client.detect(bus_jpg)) > 0
    with CloudClient(secured_service.url) as anonymous, pytest.raises(CloudAuthError):
        anonymous.detect(bus_jpg)


def test_auth_off_accepts_anonymous(service, bus_jpg):
    assert post(service.url, [jpeg_part(bus_jpg)]).status_code == 200


def test_upload_over_the_byte_limit_is_413(secured_service):
    limit = int(secured_service.env["YOLO_EDGE_MAX_UPLOAD_BYTES"])
    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()  # a real JPEG, ~4 MB
    assert len(big) > limit
    r = post(secured_service.url, [("images", ("big.jpg", big, "image/jpeg"))], token=secured_service.token)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # the client reads the limit from /metadata and refuses before uploading (tests/bentos/test_limits.py)


def test_overload_answers_429_with_retry_after(secured_service, bus_jpg):
    body = bus_jpg.read_bytes()
    files = [("images", (f"{i}.jpg", body, "image/jpeg")) for i in range(4)]
    with cf.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(secured_service.url, files, token=secured_service.token), range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    assert all(r.headers.get("Retry-After") for r in responses if r.status_code == 429)
    m = metrics(secured_service.url)
    assert total(m, "yolo_edge_rejected_requests_total", reason="overloaded") >= 1
