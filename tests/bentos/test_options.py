"""The service's environment settings and how it reads a request's options, without a server."""

from __future__ import annotations

import pytest

from bentos.service import Settings
from yolo_edge.errors import ConfigError
from yolo_edge.remote.wire import DetectOptions


def test_form_options_parse_and_group():
    opts = DetectOptions.from_form([("conf", "0.3"), ("iou", "0.5"), ("max_det", "10"), ("classes", "[0, 2]")])
    assert opts.kwargs() == {"conf": 0.3, "iou": 0.5, "max_det": 10, "classes": [0, 2]}
    assert DetectOptions.from_form([("classes", "[0, 2]"), ("max_det", "10"), ("iou", "0.5"), ("conf", "0.3")]) == opts
    assert hash(opts) == hash(DetectOptions(conf=0.3, iou=0.5, max_det=10, classes=[0, 2]))  # a batch groups by it
    assert DetectOptions.from_form([]).kwargs() == {"conf": None, "iou": None, "max_det": None, "classes": None}


@pytest.mark.parametrize("fields,needle", [
    ([("conf", "1.5")], "conf"), ([("conf", "true")], "conf"), ([("iou", '"0.5"')], "iou"), ([("max_det", "0")], "max_det"),
    ([("max_det", "2.5")], "max_det"), ([("classes", '["person"]')], "classes"), ([("classes", "[-1]")], "classes"),
    ([("classes", "3")], "JSON list"), ([("classes", "null")], "null"), ([("threshold", "0.5")], "unknown form field"),
    ([("classes", "[99999999999999999999999]")], "classes"), ([("classes", "[" * 5000 + "]" * 5000)], "characters long"),
    ([("classes", "[" * 1000)], "flat JSON list"), ([("conf", "NaN")], "conf"), ([("conf", "1e400")], "conf"),
    ([("max_det", "9" * 5000)], "max_det"), ([("conf", "0.5"), ("conf", "0.6")], "twice"),
])
def test_form_options_reject_bad_values(fields, needle):
    with pytest.raises(ConfigError, match=needle):
        DetectOptions.from_form(fields)


def test_class_ids_must_be_the_models():
    assert DetectOptions(classes=[0, 79]).for_model(80).classes == (0, 79)
    with pytest.raises(ConfigError, match="the model's classes 0..79, got 80"):
        DetectOptions(classes=[80]).for_model(80)


def test_settings_from_env(tmp_path):
    s = Settings.from_env({"YOLO_EDGE_MODEL": "yolov8s-fall", "YOLO_EDGE_TOKEN": "t", "YOLO_EDGE_HOME": str(tmp_path),
                           "YOLO_EDGE_MAX_UPLOAD_BYTES": "1000", "YOLO_EDGE_WARMUP_RUNS": "7",
                           "YOLO_EDGE_BODY_TIMEOUT_S": "2.5", "YOLO_EDGE_MAX_REQUEST_PIXELS": "5000000"})
    assert (s.model, s.token, s.model_home, s.max_upload_bytes, s.warmup_runs) == ("yolov8s-fall", "t", tmp_path, 1000, 7)
    assert (s.body_timeout_s, s.max_request_pixels) == (2.5, 5_000_000)
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path)}).token is None
    with pytest.raises(ValueError, match="YOLO_EDGE_MAX_IN_FLIGHT must be an integer"):
        Settings.from_env({"YOLO_EDGE_MAX_IN_FLIGHT": "many"})
    with pytest.raises(ValueError, match="YOLO_EDGE_BODY_TIMEOUT_S must be within"):
        Settings.from_env({"YOLO_EDGE_BODY_TIMEOUT_S": "600"})
    with pytest.raises(ValueError, match="finite"):
        Settings.from_env({"YOLO_EDGE_BODY_TIMEOUT_S": "nan"})
    with pytest.raises(ValueError, match="YOLO_EDGE_MAX_OPEN_UPLOADS must be a positive"):
        Settings.from_env({"YOLO_EDGE_MAX_OPEN_UPLOADS": "0"})


def test_settings_precision(tmp_path):
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path)}).precision is None  # the backend decides
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path), "YOLO_EDGE_PRECISION": "FP32"}).precision == "fp32"
    with pytest.raises(ValueError, match="YOLO_EDGE_PRECISION must be fp16 or fp32, got 'int8'"):
        Settings.from_env({"YOLO_EDGE_PRECISION": "int8"})


def test_pixel_budget_is_taken_and_given_back_once():
    from http import HTTPStatus

    from bentos.intake import PixelBudget, Rejected

    budget = PixelBudget(100)
    release = budget.acquire(60)
    with pytest.raises(Rejected) as refused:
        budget.acquire(50)
    assert refused.value.status == HTTPStatus.SERVICE_UNAVAILABLE and "retry shortly" in str(refused.value)
    release()
    release()  # idempotent
    assert budget.used == 0 and budget.acquire(100) is not None
