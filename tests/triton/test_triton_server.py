"""OipClient against a real Triton server (tritonserver from nvidia-pytriton) on 127.0.0.1.

The server loads repositories written by ``export_triton``: the default model with FP16
on the wire and the fall model in FP32, both with dynamic batching (preferred sizes 4
and 8, a queue delay) and a REJECT queue policy. Answers must equal local ``detect()``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from matching import assert_same_detections

import yolo_edge
from yolo_edge.remote.endpoint import Endpoint
from yolo_edge.errors import CloudDeadlineExpiredError, CloudModelMismatchError, CloudRequestError
from yolo_edge.remote.oip import OipClient

pytestmark = pytest.mark.slow  # one Triton start (two Python-backend models) is ~15-40 s here


@pytest.fixture(scope="module")
def frames(sample_photos: list[Path]) -> list[np.ndarray]:
    """Real photos and variants of them: flipped, shrunk, cropped (different letterbox geometry)."""
    bus, zidane = (cv2.imread(str(p)) for p in sample_photos)
    return [bus, zidane, cv2.flip(bus, 1), cv2.resize(zidane, (640, 360)), bus[100:700, :], cv2.flip(zidane, 1)]


@pytest.fixture(scope="module")
def client(triton) -> OipClient:
    with OipClient(triton.oip_url("yolo")) as c:
        yield c


def _wait_queued(triton, model: str, n: int, timeout_s: float = 30.0) -> None:
    """Until ``n`` requests wait in the model's queue (Triton's pending count leaves out the one running)."""
    deadline = time.monotonic() + timeout_s
    while triton.pending_requests(model) < n:
        assert time.monotonic() < deadline, f"fewer than {n} requests ever queued on {model}"
        time.sleep(0.02)


def _busy(client: OipClient, blob: np.ndarray, n: int) -> tuple[list[threading.Thread], list]:
    """``n`` requests of the full ``blob`` batch in flight, without a deadline."""
    done: list = []
    threads = [threading.Thread(target=lambda: done.append(client.backend.infer(blob)[0].shape[0])) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, done


def test_ready_verified_and_an_endpoint(client, triton, default_detector):
    assert isinstance(client, Endpoint)
    assert client.ready() and client.wake(wait_s=0)
    served = client.verify_model()
    assert served["sha256"] == default_detector.info.sha256
    assert served["datatype"] == "FP16" and served["input_shape"] == [-1, 3, 416, 416]
    assert served["output_shape"] == [-1, 2535, 85] and served["max_batch"] == 8 and served["version"] == "1"
    config = requests.get(f"{triton.base}/v2/models/yolo/config", timeout=5).json()
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [4, 8] and batching["max_queue_delay_microseconds"] == 5000
    assert batching["default_queue_policy"]["timeout_action"] == "REJECT"
    assert batching["default_queue_policy"]["allow_timeout_override"] is True


def test_a_batch_of_real_photos_equals_local_detect(client, triton, frames, default_detector):
    before = triton.stats("yolo")
    remote, metas = client.detect_many(frames, return_meta=True)
    local, _ = default_detector.predict(frames)
    for r, loc in zip(remote, local):
        assert_same_detections(r, loc)
    assert {label for d in local for label in d.labels} >= {"bus", "person", "tie"}  # real objects, not empty answers
    assert all(m["model"]["sha256"] == default_detector.info.sha256 for m in metas)
    after = triton.stats("yolo")
    assert after["inference_count"] - before["inference_count"] == len(frames)
    assert after["execution_count"] - before["execution_count"] == 1  # all six in one server batch


def test_fp32_model_made_batch_dynamic_equals_local(triton, frames, fall_detector):
    with OipClient(triton.oip_url("fall"), model="yolov8s-fall") as fall:
        served = fall.verify_model()
        assert served["datatype"] == "FP32" and served["sha256"] == fall_detector.info.sha256
        remote = fall.detect_many(frames[:4])
    local, _ = fall_detector.predict(frames[:4])
    assert sum(len(d) for d in local) > 0
    for r, loc in zip(remote, local):
        assert_same_detections(r, loc)


def test_sdk_detect_through_an_oip_endpoint(triton, sample_photos, default_detector):
    url = triton.oip_url("yolo").replace("/v2/models/", "/models/")  # the short form is accepted too
    remote = yolo_edge.detect([str(p) for p in sample_photos], endpoint=url)
    for r, p in zip(remote, sample_photos):
        assert_same_detections(r, default_detector(str(p)))


def test_dynamic_batcher_merges_queued_requests(client, triton, frames):
    blob = np.zeros((8, 3, 416, 416), np.float32)
    before = triton.stats("yolo")
    busy, _ = _busy(client, blob, 2)
    _wait_queued(triton, "yolo", 1)  # one batch of 8 running, one queued: the singles queue behind
    one = np.zeros((1, 3, 416, 416), np.float32)  # letterboxed already: they arrive within milliseconds
    singles = [threading.Thread(target=client.backend.infer, args=(one,)) for _ in range(4)]
    for t in singles:
        t.start()
    for t in busy + singles:
        t.join()
    after = triton.stats("yolo")
    assert after["inference_count"] - before["inference_count"] == 8 + 8 + 4
    # the 4 single-frame requests that waited together ran as fewer than 4 executions
    assert after["execution_count"] - before["execution_count"] < 2 + 4


def test_deadline_expired_in_the_queue_is_typed_and_never_computed(client, triton, frames):
    blob = np.zeros((8, 3, 416, 416), np.float32)
    before = triton.stats("yolo")
    busy, done = _busy(client, blob, 4)
    _wait_queued(triton, "yolo", 3)  # one batch of 8 running and three queued ahead of the next request
    with pytest.raises(CloudDeadlineExpiredError) as info:
        client.detect(frames[0], budget_s=0.2)
    for t in busy:
        t.join()
    assert info.value.status_code == 503 and "timeout expired" in str(info.value).lower()  # the server's verdict
    assert done == [8, 8, 8, 8]
    after = triton.stats("yolo")
    assert after["inference_count"] - before["inference_count"] == 32  # the expired frame was never run


def test_detect_frames_answers_expired_frames_as_statuses(client, triton, frames, default_detector):
    """The agent's call: a tiny budget in a busy queue comes back EXPIRED per frame, not raised, and is not run."""
    from yolo_edge.remote.wire import FrameStatus

    blob = np.zeros((8, 3, 416, 416), np.float32)
    before = triton.stats("yolo")
    busy, done = _busy(client, blob, 4)
    _wait_queued(triton, "yolo", 3)  # one batch of 8 running and three queued ahead of the next request
    results = client.detect_frames(frames[:3] + frames[:1], budgets_s=[0.2, 0.3, 0.25, -1.0])
    for t in busy:
        t.join()
    assert [r.status for r in results] == [FrameStatus.EXPIRED] * 4
    assert all("timeout expired" in r.error.lower() for r in results[:3])  # the server's verdict, one request
    assert "not sent" in results[3].error  # no budget left: never sent
    assert all(r.model.sha256 == default_detector.info.sha256 for r in results)
    assert done == [8, 8, 8, 8]
    after = triton.stats("yolo")
    assert after["inference_count"] - before["inference_count"] == 32  # the expired frames were never run
    live = client.detect_frames(frames[:2], budgets_s=30.0)  # a budget that holds: computed, equal to local
    assert [r.status for r in live] == [FrameStatus.OK] * 2
    for r, frame in zip(live, frames[:2]):
        assert_same_detections(r.detections, default_detector(frame))


def test_no_budget_left_is_not_sent(client, triton, frames):
    before = triton.stats("yolo")
    with pytest.raises(CloudDeadlineExpiredError, match="not sent"):
        client.detect(frames[0], budget_s=0)
    after = triton.stats("yolo")
    assert after["inference_count"] == before["inference_count"]
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]


def test_endpoint_on_another_model_is_refused(triton):
    with OipClient(triton.oip_url("fall")) as wrong:  # local default model, remote fall model
        with pytest.raises(CloudModelMismatchError, match="416"):
            wrong.verify_model()
    with OipClient(triton.oip_url("yolo"), expected_sha256="0" * 64) as other:
        with pytest.raises(CloudModelMismatchError, match="sha256"):
            other.detect(np.zeros((64, 64, 3), np.uint8))
    with OipClient(triton.oip_url("nope")) as missing:
        assert not missing.ready()
        with pytest.raises(CloudRequestError, match="nope"):
            missing.verify_model()


def test_onnxruntime_export_refused_only_for_the_missing_backend(triton, triton_repo: Path):
    resp = triton.load("yolo_ort")
    assert resp.status_code == 400
    assert "unable to find backend library for backend 'onnxruntime'" in resp.json()["error"]
    # the same config with only its platform (and name) swapped for the Python backend loads
    twin = triton_repo / "yolo_ort_python"
    (twin / "1").mkdir(parents=True)
    text = (triton_repo / "yolo_ort" / "config.pbtxt").read_text()
    assert text.count('platform: "onnxruntime_onnx"') == 1
    (twin / "config.pbtxt").write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
                                       .replace('name: "yolo_ort"', 'name: "yolo_ort_python"'))
    for f in ("model.onnx", "model.py"):
        (twin / "1" / f).symlink_to(triton_repo / ("yolo_ort" if f == "model.onnx" else "yolo") / "1" / f)
    assert triton.load("yolo_ort_python").status_code == 200
    # the failed model makes Triton's server-wide readiness false (strict readiness); ours is still served
    assert requests.get(f"{triton.base}/v2/health/ready", timeout=5).status_code != 200
    with OipClient(triton.oip_url("yolo_ort_python")) as twin_client:
        assert twin_client.ready() and twin_client.verify_model()["datatype"] == "FP32"
