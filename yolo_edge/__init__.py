"""yolo-edge: fast YOLO object detection on edge devices and in the cloud.

>>> import yolo_edge
>>> dets = yolo_edge.detect(yolo_edge.samples.path("bus.jpg"))   # doctest: +SKIP
>>> det = yolo_edge.Detector("yolov8s-fall")    # doctest: +SKIP

The public names are loaded on first use (PEP 562), so a module that needs only a light
part of the SDK (``yolo_edge.remote.wire``, ``yolo_edge.errors``, ``yolo_edge.remote.health``; the
agent's ``edge_agent.core``) does not pull in OpenCV, onnxruntime or an HTTP client.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the submodule that defines it, imported when the name is first used.
_EXPORTS = {
    "CloudClient": "remote.cloud",
    "Detections": "types",
    "Detector": "detector",
    "EndpointPool": "remote.pool",
    "ModelInfo": "types",
    "OipClient": "remote.oip",
    "StageTimings": "detector",
    "YoloEdgeError": "errors",
    "detect": "api",
    "load_image": "image",
}
_SUBMODULES = ("errors", "samples")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from . import errors, samples
    from .api import detect
    from .remote.cloud import CloudClient
    from .detector import Detector, StageTimings
    from .errors import YoloEdgeError
    from .image import load_image
    from .remote.oip import OipClient
    from .remote.pool import EndpointPool
    from .types import Detections, ModelInfo


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES or (not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}")):
        # a submodule used as an attribute (yolo_edge.api...) without importing it first, as
        # worked when this package imported them all
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
