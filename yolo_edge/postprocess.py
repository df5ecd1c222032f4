"""Decode raw YOLO heads, run class-aware NMS, map boxes back: pure numpy functions.

Three output layouts are understood (``detect_output_format`` tells them apart):

- ``anchor_free``  ``[B, 4 + nc, N]``: YOLOv5u/v8/11 (cx, cy, w, h, class scores)
- ``anchor_based`` ``[B, N, 5 + nc]``: YOLOv5/v7 and Darknet (cx, cy, w, h, objectness, class probs)
- ``nms``          ``[B, K, 6]``: exports with NMS inside (x1, y1, x2, y2, score, class)

Thresholds follow Ultralytics' ``non_max_suppression``: a candidate is kept when its best
class score is strictly above ``conf``, candidates are sorted by score, and boxes of
different classes never suppress each other.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError, UnsupportedModelError
from .preprocess import LetterboxParams

__all__ = [
    "OUTPUT_FORMATS",
    "detect_output_format",
    "decode",
    "nms",
    "scale_boxes",
    "postprocess",
]

OUTPUT_FORMATS = ("anchor_free", "anchor_based", "nms")
_MAX_WH = 7680.0  # class offset for class-aware NMS, as in Ultralytics
_MAX_NMS = 30000  # candidates kept before NMS


def detect_output_format(shape: Sequence[int | str | None], nc: int | None) -> str:
    """Infer the layout of a ``[B, a, b]`` output from its shape and the class count.

    >>> detect_output_format([1, 84, 8400], 80)
    'anchor_free'
    >>> detect_output_format([1, 2535, 85], 80)
    'anchor_based'
    >>> detect_output_format([1, 300, 6], 80)
    'nms'
    """
    if len(shape) != 3:
        raise UnsupportedModelError(
            f"expected one detection output of rank 3 ([B, 4+nc, N], [B, N, 5+nc] or [B, K, 6]), got shape {list(shape)}"
        )
    a, b = shape[1], shape[2]
    a = a if isinstance(a, int) else None
    b = b if isinstance(b, int) else None
    if nc is not None:
        if a == 4 + nc and (b is None or b > a):
            return "anchor_free"
        if b == 5 + nc and (a is None or a > b):
            return "anchor_based"
    if b == 6 and a is not None and a <= 1000:
        return "nms"
    if a is not None and b is not None and a < b:  # class count unknown: channels are the short axis
        return "anchor_free"
    raise UnsupportedModelError(
        f"cannot tell the layout of output shape {list(shape)} for {nc} classes: expected [B, 4+nc, N] "
        "(YOLOv8/11), [B, N, 5+nc] (YOLOv5/v7/Darknet) or [B, K, 6] (NMS-included export); "
        "pass output_format= explicitly"
    )


def decode(pred: np.ndarray, fmt: str, conf: float, classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output -> candidate ``(xyxy, score, class_id)`` above ``conf``."""
    if fmt == "anchor_free":
        # [4 + nc, N]: reduce over classes along the contiguous axis, then gather only the
        # few columns that pass, instead of transposing all N candidates.
        scores = pred[4:]
        best = scores.max(0)
        keep = np.flatnonzero(best > conf)
        class_id = scores[:, keep].argmax(0)
        score = best[keep]
        boxes = pred[:4, keep].T
    elif fmt == "anchor_based":
        # score = objectness * class probability <= objectness: rows whose objectness is
        # already at or below conf cannot pass, so drop them before the [N, nc] product.
        keep = np.flatnonzero(pred[:, 4] > conf)
        rows = pred[keep]
        scores = rows[:, 5:] * rows[:, 4:5]
        class_id = scores.argmax(1)
        score = scores.max(1)
        passed = score > conf
        class_id, score, boxes = class_id[passed], score[passed], rows[passed, :4]
    elif fmt == "nms":
        keep = pred[:, 4] > conf
        if classes is not None:
            keep &= np.isin(pred[:, 5].astype(np.int64), np.asarray(classes))
        rows = pred[keep]
        return rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int64)
    else:
        raise ConfigError(f"unknown output format {fmt!r}: expected one of {OUTPUT_FORMATS}")

    if classes is not None:  # like Ultralytics: a box keeps its best class, then is filtered
        wanted = np.isin(class_id, np.asarray(classes, dtype=np.int64))
        class_id, score, boxes = class_id[wanted], score[wanted], boxes[wanted]
    xyxy = np.empty((len(score), 4), np.float32)
    half = boxes[:, 2:4] / 2
    xyxy[:, :2] = boxes[:, :2] - half
    xyxy[:, 2:] = boxes[:, :2] + half
    return xyxy, score.astype(np.float32), class_id.astype(np.int64)


def nms(xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Class-aware greedy NMS; returns kept indices, highest score first.

    Boxes of different classes are moved apart by ``class_id * 7680`` so one pass
    suppresses within classes only, exactly as Ultralytics does.
    """
    if len(score) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-score, kind="stable")[:_MAX_NMS]
    boxes = xyxy[order] + (class_id[order, None] * _MAX_WH).astype(np.float32)
    if len(order) <= _MATRIX_NMS_MAX:
        keep = _greedy_on_matrix(_pairwise_iou(boxes), iou, max_det)
    else:
        keep = _greedy_streaming(boxes, iou, max_det)
    return order[keep]


_MATRIX_NMS_MAX = 1024  # up to here one [k, k] IoU matrix (4 MB) beats k vector passes


def _pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, None] + area[None, :] - inter + 1e-9)


def _greedy_on_matrix(iou_matrix: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    suppress = iou_matrix > iou
    removed = np.zeros(len(iou_matrix), bool)
    keep: list[int] = []
    for i in range(len(iou_matrix)):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) == max_det:
            break
        removed |= suppress[i]
    return np.asarray(keep, np.int64)


def _greedy_streaming(boxes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    idx = np.arange(len(boxes))
    while idx.size and len(keep) < max_det:
        i = idx[0]
        keep.append(i)
        rest = idx[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        idx = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def scale_boxes(xyxy: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Map boxes from the letterboxed canvas back to the original image, clipped to it."""
    gain_x, gain_y = params.gain
    h, w = params.orig_shape
    offset = np.array([params.left, params.top, params.left, params.top], np.float32)
    gain = np.array([gain_x, gain_y, gain_x, gain_y], np.float32)
    out = (np.asarray(xyxy, np.float32) - offset) / gain
    return np.clip(out, 0, np.array([w, h, w, h], np.float32), out=out)


def postprocess(
    pred: np.ndarray,
    fmt: str,
    params: LetterboxParams,
    *,
    conf: float,
    iou: float,
    max_det: int,
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode, NMS and rescale one image's output; returns ``(xyxy, score, class_id)``."""
    xyxy, score, class_id = decode(pred, fmt, conf, classes)
    if fmt == "nms":
        order = np.argsort(-score, kind="stable")[:max_det]
    else:
        order = nms(xyxy, score, class_id, iou, max_det)
    return scale_boxes(xyxy[order], params), score[order], class_id[order]
