"""The wire format: one module encodes and decodes both sides, with one set of limits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_edge import Detections
from yolo_edge.errors import CloudError, ConfigError
from yolo_edge.remote.wire import (
    LIMITS,
    DetectOptions,
    FrameResult,
    FrameStatus,
    FrameTiming,
    ModelRef,
    ServiceInfo,
    budgets_to_form,
    check_budgets,
    decode_results,
    parse_form,
)

MODEL = ModelRef("m", "ab" * 32)


def test_options_round_trip_through_the_form():
    for opts in (DetectOptions(), DetectOptions(conf=0.3), DetectOptions(iou=0, max_det=LIMITS.max_det),
                 DetectOptions(conf=np.float32(0.5), max_det=np.int64(7), classes=np.array([3, 1]))):
        form = opts.to_form()
        assert all(isinstance(v, str) for v in form.values())
        assert DetectOptions.from_form(form.items()) == opts


def test_options_normalise_types():
    opts = DetectOptions(conf=1, classes=5, max_det=np.int32(4))
    assert opts.conf == 1.0 and isinstance(opts.conf, float)
    assert opts.classes == (5,) and opts.max_det == 4 and type(opts.max_det) is int


def test_ok_result_round_trip():
    dets = Detections([[1, 2, 30, 40]], [0.9], [2], {2: "car"}, (100, 200))
    result = FrameResult(status=FrameStatus.OK, model=MODEL, detections=dets,
                         timing=FrameTiming(queue_ms=1.5, decode_ms=2, inference_ms=30, server_ms=40, batch_frames=3))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "ok" and "error" not in data and data["timing"]["batch_frames"] == 3
    back = FrameResult.from_dict(data)
    assert back.ok and back.detections == dets and back.model == MODEL and back.timing == result.timing


def test_failed_result_has_no_detections_and_says_why():
    result = FrameResult(status=FrameStatus.ERROR, model=MODEL, error="inference failed")
    data = result.to_dict()
    assert "detections" not in data  # an old client fails loudly instead of reading "no objects"
    assert FrameResult.from_dict(data) == result
    expired = FrameResult.from_dict({"status": "expired", "error": "deadline passed", "model": data["model"]})
    assert expired.status is FrameStatus.EXPIRED and not expired.ok
    with pytest.raises(ConfigError):
        FrameResult(status=FrameStatus.ERROR, model=MODEL)  # no reason
    with pytest.raises(ConfigError):
        FrameResult(status=FrameStatus.OK, model=MODEL)  # no detections


def test_a_result_without_status_is_read_as_ok():  # what services before the status field sent
    old = {"image_shape": [10, 10], "names": {}, "detections": [], "model": {"name": "m", "sha256": "x"},
           "timing": {"queue_ms": 1}}
    assert FrameResult.from_dict(old).ok


@pytest.mark.parametrize("data", [None, [], {"x": 1}, [{"status": "ok"}], [{"status": "bogus", "error": "x"}],
                                  [{"detections": [{"xyxy": "a"}]}], [{"detections": [], "timing": {"queue_ms": "slow"}}]])
def test_unreadable_answers_are_cloud_errors(data):
    with pytest.raises(CloudError):
        decode_results(data, 1)


def test_service_info_round_trip():
    info = ServiceInfo(name="m", sha256="AB" * 32, names={0: "person"}, imgsz=(416, 416), max_batch=8,
                       max_upload_bytes=1 << 20, max_pixels=10, max_request_pixels=20, extra={"backend": "onnxruntime"})
    data = json.loads(json.dumps(info.to_dict()))
    assert data["backend"] == "onnxruntime" and data["limits"]["max_images"] == LIMITS.max_images
    back = ServiceInfo.from_dict(data)
    assert back.sha256 == "ab" * 32 and back.imgsz == (416, 416) and back.max_request_pixels == 20
    with pytest.raises(CloudError, match="metadata"):
        ServiceInfo.from_dict({"name": "m"})


# -- per-frame budgets ------------------------------------------------------------------------------

def test_budgets_round_trip_through_the_form_beside_the_options():
    budgets = check_budgets([0.25, None, np.float32(0.5), 0], 4)
    assert budgets == (0.25, None, 0.5, 0.0) and all(isinstance(b, (float, type(None))) for b in budgets)
    fields = [*DetectOptions(conf=0.3).to_form().items(), ("budgets_s", budgets_to_form(budgets))]
    assert parse_form(fields, image_count=4) == (DetectOptions(conf=0.3), budgets)
    assert parse_form([("conf", "0.3")], image_count=4) == (DetectOptions(conf=0.3), None)  # no budgets: as before
    assert json.loads(budgets_to_form([1 / 3])) == [0.333333]  # microseconds are enough


def test_one_budget_for_every_frame_and_spent_budgets_on_the_client_side():
    assert check_budgets(0.2, 3) == (0.2, 0.2, 0.2)
    assert check_budgets(None, 3) is None
    assert check_budgets(np.array([0.1, 0.2]), 2) == (0.1, 0.2)
    assert check_budgets([-0.5, 0.0], 2, spent_ok=True) == (-0.5, 0.0)  # spent: the client does not send it
    with pytest.raises(ConfigError, match="within 0.."):
        check_budgets([-0.5, 0.0], 2)  # on the wire a budget is never negative


@pytest.mark.parametrize("value, count, match", [
    ([0.1, 0.2], 3, "2 budgets for 3 images"),
    ([float("nan")], 1, "finite"),
    ([float("inf")], 1, "finite"),
    ([LIMITS.max_budget_s + 1], 1, "at most|within"),
    ([10 ** 400], 1, "finite"),
    ([True], 1, "finite"),
    (["0.5"], 1, "finite"),
    ([[0.5]], 1, "finite"),
    ("0.5", 1, "one number, or a list"),
    ({0: 0.5}, 1, "one number, or a list"),
])
def test_bad_budgets_are_config_errors(value, count, match):
    for spent_ok in (False, True):
        with pytest.raises(ConfigError, match=match):
            check_budgets(value, count, spent_ok=spent_ok)


@pytest.mark.parametrize("text, match", [
    ("0.5", "JSON list"),
    ("null", "null"),
    ("[0.5, 0.5]", "2 budgets for 1 images"),
    ("[-1]", "within 0"),
    ("[NaN]", "JSON list|number"),
    ("[Infinity]", "JSON list|number"),
    ("[1e999]", "finite"),
    ("[3601]", "within 0"),
    ('["0.5"]', "finite"),
    ("[true]", "finite"),
    ("[[0.5]]", "flat JSON list"),
    ("[" * 5000, "flat JSON list"),
    ("[0.5", "JSON list"),
    ("x" * (LIMITS.max_field_chars + 1), "characters long"),
])
def test_bad_budget_fields_are_config_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_form([("budgets_s", text)], image_count=1)


def test_the_budgets_field_is_given_once_and_named_in_errors():
    with pytest.raises(ConfigError, match="given twice"):
        parse_form([("budgets_s", "[1]"), ("budgets_s", "[1]")], image_count=1)
    with pytest.raises(ConfigError, match="budgets_s"):
        parse_form([("budget", "[1]")], image_count=1)  # the unknown-field error lists the real name
