"""Shared fixtures: the pinned models and sample photos, fetched by `make test` beforehand.

Tests never download: a missing model fails with the command that fetches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from yolo_edge.models.fetch import sample_path
from yolo_edge.models.registry import MODELS, SAMPLES, model_path

os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "ultralytics"))


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        pytest.fail(f"{what} is not fetched ({path}): run `make test`, or `yolo-edge models fetch --all` first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    return _need(model_path("yolov3-tiny-coco"), "the default model yolov3-tiny-coco")


@pytest.fixture(scope="session")
def fall_model_path() -> Path:
    return _need(model_path("yolov8s-fall"), "the model yolov8s-fall")


@pytest.fixture(scope="session")
def bus_jpg() -> Path:
    return _need(sample_path("bus.jpg"), "the sample bus.jpg")


@pytest.fixture(scope="session")
def zidane_jpg() -> Path:
    return _need(sample_path("zidane.jpg"), "the sample zidane.jpg")


@pytest.fixture(scope="session")
def sample_photos(bus_jpg: Path, zidane_jpg: Path) -> list[Path]:
    return [bus_jpg, zidane_jpg]


@pytest.fixture(scope="session")
def darknet_files(default_model_path: Path) -> tuple[Path, Path, list[str]]:
    """(cfg, weights, class names) of the default model, as extracted at fetch time."""
    src = default_model_path.parent / "source"
    names = [n.strip() for n in (src / "coco.names").read_text().splitlines() if n.strip()]
    return _need(src / "yolov3-tiny.cfg", "yolov3-tiny.cfg"), _need(src / "yolov3-tiny.weights", "yolov3-tiny.weights"), names


@pytest.fixture(scope="session")
def default_detector(default_model_path: Path):
    from yolo_edge import Detector

    return Detector("yolov3-tiny-coco")


@pytest.fixture(scope="session")
def fall_detector(fall_model_path: Path):
    from yolo_edge import Detector

    return Detector("yolov8s-fall")


#: fixtures that start a real server: a test that uses one is an integration test (``make test-fast``
#: leaves those out; ``make test`` runs them)
SERVER_FIXTURES = frozenset({"service", "secured_service", "local_service"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_service(tmp_path_factory, default_model_path):
    """A real `bentoml serve` of the service on a free 127.0.0.1 port, shared by the README and examples tests."""
    from edge_agent.cloudserve import LocalService

    tmp = tmp_path_factory.mktemp("local-service")
    with LocalService(threads=1, log_dir=tmp, env={"BENTOML_HOME": str(tmp / "bentoml")}) as svc:
        yield svc
