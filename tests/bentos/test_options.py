"""Per-request options and environment settings of the service, without a server."""

from __future__ import annotations

import pytest
from bentoml.exceptions import InvalidArgument

from bentos.service import Options, Settings


def test_options_parse_and_group():
    opts = Options.parse({"conf": 0.3, "iou": 0.5, "max_det": 10, "classes": [0, 2]})
    assert opts.kwargs() == {"conf": 0.3, "iou": 0.5, "max_det": 10, "classes": [0, 2]}
    assert Options.parse({"classes": [0, 2], "conf": 0.3, "iou": 0.5, "max_det": 10}) == opts
    assert hash(opts) == hash(Options.parse({"conf": 0.3, "iou": 0.5, "max_det": 10, "classes": [0, 2]}))
    assert Options.parse({}).kwargs() == {"conf": None, "iou": None, "max_det": None, "classes": None}
    assert Options.parse({"classes": 3}).classes == (3,)


@pytest.mark.parametrize("extra,needle", [
    ({"conf": 1.5}, "conf"), ({"conf": True}, "conf"), ({"iou": "0.5"}, "iou"), ({"max_det": 0}, "max_det"),
    ({"max_det": 2.5}, "max_det"), ({"classes": ["person"]}, "classes"), ({"classes": [-1]}, "classes"),
    ({"threshold": 0.5}, "unknown form field"),
])
def test_options_reject_bad_values(extra, needle):
    with pytest.raises(InvalidArgument, match=needle):
        Options.parse(extra)


def test_settings_from_env(tmp_path):
    s = Settings.from_env({"YOLO_EDGE_MODEL": "yolov8s-fall", "YOLO_EDGE_TOKEN": "t", "YOLO_EDGE_HOME": str(tmp_path),
                           "YOLO_EDGE_MAX_UPLOAD_BYTES": "1000", "YOLO_EDGE_WARMUP_RUNS": "7"})
    assert (s.model, s.token, s.model_home, s.max_upload_bytes, s.warmup_runs) == ("yolov8s-fall", "t", tmp_path, 1000, 7)
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path)}).token is None
    with pytest.raises(ValueError, match="YOLO_EDGE_MAX_IN_FLIGHT must be an integer"):
        Settings.from_env({"YOLO_EDGE_MAX_IN_FLIGHT": "many"})


def test_settings_precision(tmp_path):
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path)}).precision is None  # the backend decides
    assert Settings.from_env({"YOLO_EDGE_HOME": str(tmp_path), "YOLO_EDGE_PRECISION": "FP32"}).precision == "fp32"
    with pytest.raises(ValueError, match="YOLO_EDGE_PRECISION must be fp16 or fp32, got 'int8'"):
        Settings.from_env({"YOLO_EDGE_PRECISION": "int8"})
