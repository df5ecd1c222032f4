"""Registry, fetch and integrity checks (no network: artifacts come from the cache)."""

from __future__ import annotations

import shutil

import pytest

from yolo_edge import Detector
from yolo_edge.errors import ModelIntegrityError, ModelNotFoundError
from yolo_edge.models import MODELS, fetch_model, verify_model
from yolo_edge.models.fetch import sha256_file
from yolo_edge.models.registry import LocalEntry, cache_dir, register_local


@pytest.fixture
def home_copy(tmp_path, default_model_path, fall_model_path):
    """A private cache with copies of the fetched files, so tests can tamper with them."""
    src = cache_dir()
    for sub in ("models", "artifacts"):
        shutil.copytree(src / sub, tmp_path / sub)
    return tmp_path


def test_pins_are_complete():
    for spec in MODELS.values():
        assert len(spec.onnx_sha256) == 64 and len(spec.artifact.sha256) == 64
        assert all(len(d) == 64 for d in spec.members.values())


def test_fetched_models_verify(default_model_path, fall_model_path):
    assert verify_model("yolov3-tiny-coco") == default_model_path
    assert sha256_file(fall_model_path) == MODELS["yolov8s-fall"].onnx_sha256


def test_tampered_model_is_refused(home_copy):
    onnx = home_copy / "models" / "yolov8s-fall" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        Detector("yolov8s-fall", root=home_copy)
    with pytest.raises(ModelIntegrityError, match="fetch again"):
        fetch_model("yolov8s-fall", home_copy)


def test_missing_model_says_how_to_fetch(tmp_path):
    with pytest.raises(ModelNotFoundError, match="yolo-edge models fetch yolov8s-fall"):
        Detector("yolov8s-fall", root=tmp_path)


def test_refetch_from_cached_artifact_rebuilds_identically(home_copy):
    """Converting the Darknet weights again reproduces the pinned ONNX byte for byte."""
    shutil.rmtree(home_copy / "models" / "yolov3-tiny-coco")
    path = fetch_model("yolov3-tiny-coco", home_copy)  # the artifact is cached: no download
    assert sha256_file(path) == MODELS["yolov3-tiny-coco"].onnx_sha256


def test_tampered_artifact_member_is_refused(home_copy, monkeypatch):
    shutil.rmtree(home_copy / "models" / "yolov8s-fall")
    artifact = home_copy / "artifacts" / MODELS["yolov8s-fall"].artifact.filename
    artifact.write_bytes(artifact.read_bytes()[:-10])  # truncated: fails the artifact pin
    # a corrupt cached artifact is thrown away and re-downloaded; forbid the download here
    def no_network(*a, **k):
        raise AssertionError("tests must not download")

    monkeypatch.setattr("yolo_edge.models.fetch.download_file", no_network)
    with pytest.raises(AssertionError, match="must not download"):
        fetch_model("yolov8s-fall", home_copy)
    assert not artifact.exists()


def test_local_registry_pins_sha(tmp_path, fall_model_path):
    copy = tmp_path / "mine.onnx"
    shutil.copyfile(fall_model_path, copy)
    register_local(LocalEntry(name="mine", path=str(copy), sha256=sha256_file(copy)), tmp_path)
    assert Detector("mine", root=tmp_path).info.name == "mine"
    copy.write_bytes(copy.read_bytes() + b"x")
    with pytest.raises(ModelIntegrityError):
        Detector("mine", root=tmp_path)


# -- identity: a file is what its sha256 says ---------------------------------------------------

def test_a_modified_copy_under_a_registered_name_is_not_that_model(tmp_path, default_model_path):
    copy = tmp_path / "yolov3-tiny-coco.onnx"  # the registered name as its file name
    data = bytearray(default_model_path.read_bytes())
    data[len(data) // 2] ^= 0x01  # a weight changed: still a loadable model, but another one
    copy.write_bytes(bytes(data))
    det = Detector(copy)
    assert det.info.sha256 == sha256_file(copy) != MODELS["yolov3-tiny-coco"].onnx_sha256
    assert det.info.name != "yolov3-tiny-coco" and det.info.name.startswith("yolov3-tiny-coco@")
    assert det.info.sha256.startswith(det.info.name.split("@")[1])


def test_an_exact_copy_loaded_by_path_is_identified_by_its_sha256(tmp_path, default_model_path):
    copy = tmp_path / "whatever.onnx"
    shutil.copyfile(default_model_path, copy)
    info = Detector(copy).info
    assert (info.name, info.sha256, info.output_format) == (
        "yolov3-tiny-coco", MODELS["yolov3-tiny-coco"].onnx_sha256, "anchor_based")


def test_a_plain_file_keeps_its_stem(tmp_path, fall_model_path):
    copy = tmp_path / "my-detector.onnx"
    data = bytearray(fall_model_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    assert Detector(copy).info.name == "my-detector"


def test_expected_sha256_pins_the_file(tmp_path, default_model_path):
    pinned = MODELS["yolov3-tiny-coco"].onnx_sha256
    assert Detector(default_model_path, expected_sha256=pinned.upper()).info.sha256 == pinned
    with pytest.raises(ModelIntegrityError, match="was expected"):
        Detector("yolov3-tiny-coco", expected_sha256="1" * 64)
    copy = tmp_path / "m.onnx"
    copy.write_bytes(default_model_path.read_bytes() + b"\x00")
    with pytest.raises(ModelIntegrityError, match=sha256_file(copy)):
        Detector(copy, expected_sha256=pinned)


def test_local_registry_entries_are_type_checked(tmp_path):
    from yolo_edge.errors import ConfigError

    (tmp_path / "registry.json").write_text('{"models": {"mine": {"path": ["a"], "sha256": "' + "0" * 64 + '"}}}')
    with pytest.raises(ConfigError, match="'path' must be a file path string"):
        Detector("mine", root=tmp_path)
    with pytest.raises(ConfigError, match="plain word"):
        register_local(LocalEntry(name="x/y", path="m.onnx", sha256="0" * 64), tmp_path / "other")


def test_a_damaged_model_file_is_a_typed_error(tmp_path, default_model_path):
    from yolo_edge.errors import YoloEdgeError

    copy = tmp_path / "damaged.onnx"
    data = bytearray(default_model_path.read_bytes())
    data[-100] ^= 0xFF  # inside the metadata text at the end of the file
    copy.write_bytes(bytes(data))
    with pytest.raises(YoloEdgeError):
        Detector(copy)
    copy.write_bytes(default_model_path.read_bytes()[: 1 << 20])  # cut short
    with pytest.raises(YoloEdgeError):
        Detector(copy)
