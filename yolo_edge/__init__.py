"""yolo-edge: fast YOLO object detection on edge devices and in the cloud.

>>> import yolo_edge
>>> dets = yolo_edge.detect(yolo_edge.samples.path("bus.jpg"))   # doctest: +SKIP
>>> det = yolo_edge.Detector("yolov8s-fall")    # doctest: +SKIP
"""

from . import errors, samples
from .api import detect
from .cloud import CloudClient
from .detector import Detector, StageTimings
from .errors import YoloEdgeError
from .image import load_image
from .oip import OipClient
from .pool import EndpointPool
from .types import Detections, ModelInfo

__version__ = "0.1.0"

__all__ = [
    "CloudClient",
    "Detections",
    "Detector",
    "EndpointPool",
    "ModelInfo",
    "OipClient",
    "StageTimings",
    "YoloEdgeError",
    "__version__",
    "detect",
    "errors",
    "load_image",
    "samples",
]
