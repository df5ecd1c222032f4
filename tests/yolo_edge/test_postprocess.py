import numpy as np
import pytest

from yolo_edge.errors import UnsupportedModelError
from yolo_edge.postprocess import decode, detect_output_format, nms, postprocess, scale_boxes
from yolo_edge.preprocess import letterbox_params


def _iou(a, b):
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_formats_are_told_apart():
    assert detect_output_format([1, 84, 8400], 80) == "anchor_free"
    assert detect_output_format(["batch", 6, 8400], 2) == "anchor_free"
    assert detect_output_format([1, 2535, 85], 80) == "anchor_based"
    assert detect_output_format([1, 300, 6], 80) == "nms"
    with pytest.raises(UnsupportedModelError, match="expected one detection output of rank 3"):
        detect_output_format([1, 8400], 80)
    with pytest.raises(UnsupportedModelError, match="output_format"):
        detect_output_format([1, 7, 7], 3)


def test_nms_matches_reference_greedy():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 500, (300, 2)).astype(np.float32)
    wh = rng.uniform(10, 120, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    cls = rng.integers(0, 3, 300)
    keep = nms(boxes, scores, cls, 0.5, 300)
    # reference: plain O(n^2) greedy per class
    ref = []
    for c in np.unique(cls):
        idx = [i for i in np.argsort(-scores) if cls[i] == c]
        while idx:
            i = idx.pop(0)
            ref.append(i)
            idx = [j for j in idx if _iou(boxes[i], boxes[j]) <= 0.5]
    assert sorted(keep.tolist()) == sorted(ref)
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)


def test_nms_respects_max_det_and_empty():
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]], np.float32)
    assert len(nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64), 0.5, 2)) == 2
    assert len(nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5, 10)) == 0


def test_classes_never_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]), 0.5, 10)
    assert len(keep) == 2


def test_anchor_free_decode_threshold_and_class_filter():
    pred = np.zeros((4 + 3, 5), np.float32)  # [4+nc, N]
    pred[:4, 0] = [50, 50, 20, 20]
    pred[4 + 1, 0] = 0.9  # class 1
    pred[:4, 1] = [150, 150, 20, 20]
    pred[4 + 2, 1] = 0.25  # exactly at conf: dropped (strictly greater, as Ultralytics)
    xyxy, score, cls = decode(pred, "anchor_free", 0.25)
    np.testing.assert_allclose(xyxy, [[40, 40, 60, 60]])
    assert cls.tolist() == [1] and score.tolist() == pytest.approx([0.9])
    assert len(decode(pred, "anchor_free", 0.25, classes=[0])[0]) == 0


def test_anchor_based_multiplies_objectness():
    pred = np.zeros((2, 5 + 2), np.float32)
    pred[0, :5] = [50, 50, 20, 20, 0.5]
    pred[0, 5:] = [0.9, 0.1]  # 0.45 after objectness
    pred[1, :5] = [80, 80, 10, 10, 0.2]
    pred[1, 5:] = [0.1, 0.9]  # 0.18: below 0.25
    xyxy, score, cls = decode(pred, "anchor_based", 0.25)
    assert cls.tolist() == [0] and score.tolist() == pytest.approx([0.45])


def test_nms_format_passthrough_and_rescale():
    params = letterbox_params((720, 1280), (640, 640))  # top=140, gain 0.5
    pred = np.array([[100, 240, 300, 340, 0.8, 3], [0, 0, 1, 1, 0.1, 0]], np.float32)
    xyxy, score, cls = postprocess(pred, "nms", params, conf=0.25, iou=0.45, max_det=10)
    np.testing.assert_allclose(xyxy, [[200, 200, 600, 400]])
    assert cls.tolist() == [3]


def test_scale_boxes_clips_to_image():
    params = letterbox_params((100, 200), (64, 64))
    out = scale_boxes(np.array([[-5, -5, 70, 70]], np.float32), params)
    assert out.min() >= 0 and out[0, 2] <= 200 and out[0, 3] <= 100


def test_matrix_and_streaming_nms_agree(monkeypatch):
    from yolo_edge import postprocess as pp

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 300, (800, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(10, 90, (800, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 800).astype(np.float32)
    cls = rng.integers(0, 4, 800)
    matrix = nms(boxes, scores, cls, 0.5, 100)
    monkeypatch.setattr(pp, "_MATRIX_NMS_MAX", 0)
    np.testing.assert_array_equal(matrix, nms(boxes, scores, cls, 0.5, 100))
