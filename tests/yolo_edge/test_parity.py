"""Parity with Ultralytics' own predict() on the same static ONNX files and photos.

Ultralytics is the reference implementation (a test dependency only). The torchvision
wheel that resolves here cannot run its NMS op on CPU torch, so a stand-in module
serves Ultralytics' own pure-torch ``TorchNMS.nms``, which matches torchvision exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from yolo_edge import Detector

pytestmark = pytest.mark.parity
ultralytics = pytest.importorskip("ultralytics", reason="parity tests need the [export] extra (Ultralytics)")


@pytest.fixture(autouse=True)
def torch_nms(monkeypatch):
    """Stand in for the broken torchvision with a module whose ops.nms is TorchNMS.nms."""
    import sys
    import types

    from ultralytics.utils.nms import TorchNMS

    stub = types.ModuleType("torchvision")
    stub.ops = types.ModuleType("torchvision.ops")
    stub.ops.nms = TorchNMS.nms
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    monkeypatch.setitem(sys.modules, "torchvision.ops", stub.ops)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _assert_parity(ours, ref_boxes, ref_conf, ref_cls):
    assert len(ours) == len(ref_boxes), f"{len(ours)} boxes vs Ultralytics {len(ref_boxes)}"
    if not len(ours):
        return
    iou = _iou_matrix(ref_boxes, ours.xyxy)
    for i in range(len(ref_boxes)):
        j = int(iou[i].argmax())
        assert iou[i, j] >= 0.99, f"box {ref_boxes[i]} best IoU {iou[i, j]:.4f}"
        assert ours.class_id[j] == ref_cls[i]
        assert abs(float(ours.confidence[j]) - float(ref_conf[i])) <= 1e-3


def _ultralytics_predict(model_path, image_path, imgsz, **kw):
    from ultralytics import YOLO

    r = YOLO(str(model_path), task="detect").predict(str(image_path), imgsz=imgsz, verbose=False, **kw)[0]
    return r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(int)


@pytest.mark.parametrize("conf, iou", [(0.25, 0.45), (0.1, 0.7)])
def test_fall_model_matches_ultralytics(fall_model_path, sample_photos, conf, iou):
    det = Detector("yolov8s-fall", conf=conf, iou=iou)
    for photo in sample_photos:
        ref = _ultralytics_predict(fall_model_path, photo, 640, conf=conf, iou=iou)
        assert len(ref[0]) > 0, "the reference found nothing: not a useful comparison"
        _assert_parity(det(photo), *ref)
