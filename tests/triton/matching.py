"""Compare a remote answer with a local one: same classes, IoU >= 0.99, confidence within 0.01."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (xyxy)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def assert_same_detections(remote, local, *, min_iou: float = 0.99, conf_tol: float = 0.01) -> None:
    """Same classes, and each local box has a remote twin: same class, IoU >= min_iou, confidence within conf_tol."""
    assert sorted(remote.class_id.tolist()) == sorted(local.class_id.tolist()), (remote, local)
    assert remote.image_shape == local.image_shape
    if not len(local):
        return
    iou = box_iou(local.xyxy, remote.xyxy)
    iou[local.class_id[:, None] != remote.class_id[None, :]] = 0
    for i in np.argsort(-local.confidence):
        j = int(np.argmax(iou[i]))
        assert iou[i, j] >= min_iou, f"local box {local.xyxy[i]} has no remote twin (best IoU {iou[i, j]:.4f})"
        assert abs(float(remote.confidence[j]) - float(local.confidence[i])) <= conf_tol
        iou[:, j] = 0  # each remote box matches once
