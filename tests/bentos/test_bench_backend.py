"""The no-inference benchmark backend and the serving-path settings (issue 18).

``YOLO_EDGE_BENCH_NO_INFERENCE=1`` must select the backend that runs no model (and say so
on /metadata and in the log), everything around the model must still run (bad input is
still refused), and BentoML's access log is off unless ``YOLO_EDGE_ACCESS_LOG=1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from conftest import _model_env, _start, _stop

from bentos.bench_backend import ENV, NoInference
from bentos.service import Settings
from yolo_edge import Detector

pytestmark = pytest.mark.integration  # real bentoml serve processes


def test_no_inference_keeps_the_real_shapes_and_finds_nothing(default_detector, bus_jpg):
    fake = NoInference(default_detector.backend)
    batch = np.zeros((2, 3, *default_detector.info.imgsz), np.float32)
    real, zeros = default_detector.backend.run(batch), fake.run(batch)
    assert [z.shape for z in zeros] == [r.shape for r in real]
    assert [z.dtype for z in zeros] == [r.dtype for r in real]
    assert not any(z.any() for z in zeros)
    assert (fake.providers, fake.max_batch) == (default_detector.backend.providers, default_detector.backend.max_batch)
    det = Detector("yolov3-tiny-coco", backend=fake)
    assert default_detector.predict([bus_jpg.read_bytes()])[0][0].xyxy.shape[0] > 0  # the photo has objects ...
    assert det.predict([bus_jpg.read_bytes()])[0][0].xyxy.shape[0] == 0  # ... that the benchmark backend never reports


@pytest.mark.parametrize("raw, expected", [(None, False), ("", False), ("0", False), ("1", True), ("true", True),
                                           ("No", False), ("YES", True)])
def test_flags_from_env(tmp_path, raw, expected):
    env = {"YOLO_EDGE_HOME": str(tmp_path)}
    if raw is not None:
        env.update({ENV: raw, "YOLO_EDGE_ACCESS_LOG": raw})
    s = Settings.from_env(env)
    assert (s.bench_no_inference, s.access_log) == (expected, expected)


@pytest.mark.parametrize("key", [ENV, "YOLO_EDGE_ACCESS_LOG"])
def test_a_bad_flag_is_refused_with_its_name(key):
    with pytest.raises(ValueError, match=f"{key} must be 1 or 0 .* got 'maybe'"):
        Settings.from_env({key: "maybe"})


@pytest.fixture(scope="module")
def no_inference_service(tmp_path_factory, default_model_path, bus_jpg):
    env = {**_model_env(default_model_path), ENV: "1", "YOLO_EDGE_ACCESS_LOG": "1", "YOLO_EDGE_WARMUP_RUNS": "1"}
    served = _start(tmp_path_factory.mktemp("noinf"), env, bus_jpg.read_bytes())
    yield served
    _stop(served)


def test_service_runs_no_model_when_asked(no_inference_service, bus_jpg):
    url = no_inference_service.url
    meta = requests.get(url + "/metadata", timeout=10).json()
    assert meta["backend"] == "no-inference (benchmark)" and meta["name"] == "yolov3-tiny-coco"
    r = requests.post(url + "/detect", files=[("images", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))] * 2, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    answers = r.json()
    assert [a["status"] for a in answers] == ["ok", "ok"] and all(a["detections"] == [] for a in answers)
    assert answers[0]["model"]["name"] == "yolov3-tiny-coco"
    # the serving path around the model still runs: a bad image is still refused
    bad = requests.post(url + "/detect", files=[("images", ("x.jpg", b"not an image", "image/jpeg"))], timeout=30)
    assert bad.status_code in (400, 415) and "image 0" in bad.json()["error"]
    log = no_inference_service.log_tail(200_000)
    assert "BENCHMARK MODE" in log
    assert "path=/detect" in log  # YOLO_EDGE_ACCESS_LOG=1: BentoML's access log is on


def test_access_log_is_off_by_default(service, bus_jpg):
    r = requests.post(service.url + "/detect", files=[("images", ("bus.jpg", bus_jpg.read_bytes(), "image/jpeg"))],
                      timeout=60)
    assert r.status_code == 200
    log = service.log_tail(1_000_000)
    assert "path=/detect" not in log and "BENCHMARK MODE" not in log
