"""Shared by the agent's integration tests: the real local detector, as a slower edge device."""

from __future__ import annotations

import cv2
import pytest
from agent_fakes import SlowerEdge

from edge_agent.demo import measure_local_fps
from yolo_edge.image import load_image


@pytest.fixture(scope="module")
def detector(default_model_path):
    from yolo_edge import Detector

    return Detector("yolov3-tiny-coco", threads=1)


@pytest.fixture(scope="module")
def frames(sample_photos):
    return [cv2.resize(load_image(p), (640, 360)) for p in sample_photos]


@pytest.fixture(scope="module")
def edge(detector, frames):
    measured_s = 1.0 / measure_local_fps(detector, frames[0], runs=10)
    return SlowerEdge(detector, service_s=max(0.2, 3 * measured_s))
