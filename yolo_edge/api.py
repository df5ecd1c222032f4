"""``yolo_edge.detect``: the one-call entry point."""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

from .detector import Detector
from .image import ImageSource
from .types import Detections

__all__ = ["detect"]

_detectors: dict[tuple, Detector] = {}
_lock = threading.Lock()


def _shared_detector(model: str | os.PathLike | None, backend: str) -> Detector:
    key = (None if model is None else os.fspath(model), backend)
    with _lock:
        det = _detectors.get(key)
        if det is None:
            det = _detectors[key] = Detector(model, backend=backend)
        return det


def detect(
    image: ImageSource | Sequence[ImageSource],
    model: str | os.PathLike | None = None,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    classes: str | Sequence[int | str] | None = None,
    channels: str = "bgr",
    backend: str = "auto",
    endpoint: str | None = None,
    token: str | None = None,
    **cloud_options: Any,
) -> Detections | list[Detections]:
    """Detect objects in an image (or a list of images).

    Locally by default: the model (default ``yolov3-tiny-coco``) is loaded once and
    reused by later calls. With ``endpoint=`` the image is sent to a yolo-edge service
    instead, and the answer has the same form and coordinates; an ``oip+http://`` endpoint
    is a Triton, KServe or OpenVINO server serving ``model`` (see :mod:`yolo_edge.oip`).

    >>> import yolo_edge
    >>> dets = yolo_edge.detect("bus.jpg")                          # doctest: +SKIP
    >>> dets = yolo_edge.detect(frame, endpoint="http://127.0.0.1:3000")  # doctest: +SKIP
    >>> dets = yolo_edge.detect(frame, endpoint="oip+http://127.0.0.1:8000/v2/models/yolo")  # doctest: +SKIP
    """
    opts = dict(conf=conf, iou=iou, max_det=max_det, classes=classes)
    single = not isinstance(image, (list, tuple))
    images = [image] if single else list(image)
    if endpoint is not None:
        from .endpoint import open_endpoint

        client = open_endpoint(endpoint, model=model, token=token, **cloud_options)
        try:
            results = client.detect_many(images, channels=channels, **opts)
        finally:
            client.close()
    else:
        results, _ = _shared_detector(model, backend).predict(images, channels=channels, **opts)
    return results[0] if single else results
