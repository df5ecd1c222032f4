"""Shared by the agent's integration tests: the real local detector, as a slower edge device."""

from __future__ import annotations

import time

import cv2
import pytest

from edge_agent.demo import measure_local_fps
from yolo_edge.image import load_image


@pytest.fixture(scope="module")
def detector(default_model_path):
    from yolo_edge import Detector

    return Detector("yolov3-tiny-coco", threads=1)


@pytest.fixture(scope="module")
def frames(sample_photos):
    return [cv2.resize(load_image(p), (640, 360)) for p in sample_photos]


class SlowerEdge:
    """The real detector, with every call padded to ``service_s`` (a slower device)."""

    def __init__(self, detector, service_s: float) -> None:
        self.detector, self.service_s = detector, service_s

    def __call__(self, image):
        start = time.perf_counter()
        dets = self.detector(image)
        time.sleep(max(0.0, self.service_s - (time.perf_counter() - start)))
        return dets


@pytest.fixture(scope="module")
def edge(detector, frames):
    measured_s = 1.0 / measure_local_fps(detector, frames[0], runs=10)
    return SlowerEdge(detector, service_s=max(0.2, 3 * measured_s))
