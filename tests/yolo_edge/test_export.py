"""`yolo-edge export`: Ultralytics -> ONNX -> local registry entry (offline: a model yaml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from yolo_edge import Detector
from yolo_edge.errors import ConfigError, ModelError
from yolo_edge.models.fetch import sha256_file
from yolo_edge.models.registry import load_local_registry

pytestmark = pytest.mark.integration  # real exports

pytest.importorskip("ultralytics", reason="export needs the [export] extra (Ultralytics)")


def test_cli_export_registers_a_dynamic_model(tmp_path):
    env = {**os.environ, "YOLO_EDGE_HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "yolo_edge.cli", "export", "yolov8n.yaml", "--imgsz", "320", "--dynamic", "--name", "v8n"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    entry = load_local_registry(tmp_path)["v8n"]
    assert entry.sha256 == sha256_file(entry.path) and entry.imgsz == (320, 320)
    assert len(entry.names) == 80 and entry.opset and entry.opset >= 11
    assert json.loads((tmp_path / "registry.json").read_text())["models"]["v8n"]["sha256"] == entry.sha256

    det = Detector("v8n", root=tmp_path, conf=0.0001)
    assert det.info.output_format == "anchor_free" and det.info.dynamic_batch
    frames = [np.full((240, 320, 3), v, np.uint8) for v in (30, 200, 90)]
    batched, _ = det.predict(frames)  # one batch of 3 through the dynamic axis
    assert [len(d) for d in batched] == [len(det(f)) for f in frames]


def test_export_refuses_bad_inputs(tmp_path):
    from yolo_edge.export import export_ultralytics

    with pytest.raises(ConfigError, match=r"\.pt checkpoint"):
        export_ultralytics(tmp_path / "model.onnx", root=tmp_path)
    with pytest.raises(ModelError, match="never does"):
        export_ultralytics(tmp_path / "missing.pt", root=tmp_path)
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="nms_iou=1.5"):
        export_ultralytics(tmp_path / "m.pt", nms=True, nms_iou=1.5, root=tmp_path)
