"""Bad calls to the SDK: every one raises from yolo_edge's error tree and says what was expected.

A caller catches ``YoloEdgeError`` and is done: no ValueError, TypeError or
OverflowError from numpy, OpenCV or requests gets through (``ConfigError`` and
``ImageError`` are also ValueErrors, for callers that already catch those).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from bombs import bombs

import yolo_edge
from yolo_edge import CloudClient, Detector, YoloEdgeError
from yolo_edge.errors import ConfigError, ImageError, ImageTooLargeError, ModelError
from yolo_edge.image import encode_image, load_image
from yolo_edge.models import fetch_model, get_spec
from yolo_edge.models.registry import LocalEntry, register_local
from yolo_edge.remote.oip import OipClient
from yolo_edge.types import Detections

IMG = np.zeros((32, 32, 3), np.uint8)
SHA = "0" * 64


def _registry(root: Path, entry: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "registry.json").write_text(json.dumps({"models": {"mine": entry}}))
    return root


def _detector_calls(det):
    return {
        "call with an unknown option": lambda: det(IMG, confidence=0.5),
        "predict on a single path": lambda: det.predict("bus.jpg"),
        "predict on a number": lambda: det.predict(5),
        "predict with a class the model lacks": lambda: det.predict([IMG], classes=[99]),
        "predict with channels=None": lambda: det.predict([IMG], channels=None),
        "call with conf as text": lambda: det(IMG, conf="high"),
    }


def _client_calls():
    client = CloudClient("http://127.0.0.1:9", max_retries=0)  # nothing listens there: no call may get that far
    return {
        "client.detect_many on one image": lambda: client.detect_many(IMG),
        "client.detect with conf text": lambda: client.detect(IMG, conf="a"),
        "client.detect with classes [None]": lambda: client.detect(IMG, classes=[None]),
        "client.detect with max_det inf": lambda: client.detect(IMG, max_det=float("inf")),
        "client.detect with channels bgra": lambda: client.detect(IMG, channels="bgra"),
        "client.detect_many return_meta text": lambda: client.detect_many([IMG], return_meta="yes"),
        "client.wake(wait_s='a')": lambda: client.wake(wait_s="a"),
        "client.verify_model('zz')": lambda: client.verify_model("zz"),
        "client.detect of a missing file": lambda: client.detect("/nonexistent/frame.jpg"),
        "client.detect of a bomb": lambda: client.detect(bombs()["png"]),
    }


def _oip_calls():
    """OipClient takes the same arguments as CloudClient and checks them alike, before any request."""
    url = "oip+http://127.0.0.1:9/v2/models/m"  # nothing listens there: no call may get that far

    def client(**kw):
        return OipClient(url, model="yolov3-tiny-coco", max_retries=0, **kw)

    oip = client()
    return {
        "OipClient timeout text": lambda: client(timeout="x"),
        "OipClient timeout nan": lambda: client(timeout=float("nan")),
        "OipClient backoff_s text": lambda: client(backoff_s="a"),
        "OipClient max_batch 2.5": lambda: client(max_batch=2.5),
        "OipClient max_retries -1": lambda: OipClient(url, model="yolov3-tiny-coco", max_retries=-1),
        "OipClient token with a line break": lambda: client(token="a\nb"),
        "OipClient expected_sha256 'zz'": lambda: client(expected_sha256="zz"),
        "OipClient allow_model_mismatch text": lambda: client(allow_model_mismatch="yes"),
        "OipClient sleep 5": lambda: client(sleep=5),
        "oip.detect_many on one image": lambda: oip.detect_many(IMG),
        "oip.detect_frames on one image": lambda: oip.detect_frames(IMG),
        "oip.detect_many budget_s text": lambda: oip.detect_many([IMG], budget_s="a"),
        "oip.detect_many budget_s nan": lambda: oip.detect_many([IMG], budget_s=float("nan")),
        "oip.detect_many return_meta text": lambda: oip.detect_many([IMG], return_meta="yes"),
        "oip.wake(wait_s='a')": lambda: oip.wake(wait_s="a"),
        "oip.wake(wait_s=-1)": lambda: oip.wake(wait_s=-1),
    }


def corpus(tmp: Path, det) -> dict[str, callable]:
    big = tmp / "huge.jpg"
    with big.open("wb") as f:  # a sparse 400 MB file: refused by its size, never read
        f.truncate(400 << 20)
    folder = tmp / "folder.jpg"
    folder.mkdir(exist_ok=True)
    pt = tmp / "model.pt"
    pt.write_bytes(b"x")
    exr = b"\x76\x2f\x31\x01" + b"\x00" * 64
    cases = {
        # yolo_edge.detect: options
        "detect conf='a'": lambda: yolo_edge.detect(IMG, conf="a"),
        "detect conf=nan": lambda: yolo_edge.detect(IMG, conf=float("nan")),
        "detect conf=-0.1": lambda: yolo_edge.detect(IMG, conf=-0.1),
        "detect conf=10**400": lambda: yolo_edge.detect(IMG, conf=10 ** 400),
        "detect iou=2": lambda: yolo_edge.detect(IMG, iou=2),
        "detect iou=[0.5]": lambda: yolo_edge.detect(IMG, iou=[0.5]),
        "detect max_det=inf": lambda: yolo_edge.detect(IMG, max_det=float("inf")),
        "detect max_det=0": lambda: yolo_edge.detect(IMG, max_det=0),
        "detect max_det=10**30": lambda: yolo_edge.detect(IMG, max_det=10 ** 30),
        "detect max_det=10**5000": lambda: yolo_edge.detect(IMG, max_det=10 ** 5000),
        "detect max_det=2.5": lambda: yolo_edge.detect(IMG, max_det=2.5),
        "detect max_det=True": lambda: yolo_edge.detect(IMG, max_det=True),
        "detect classes=[10**30]": lambda: yolo_edge.detect(IMG, classes=[10 ** 30]),
        "detect classes=[None]": lambda: yolo_edge.detect(IMG, classes=[None]),
        "detect classes='persn' (no such class)": lambda: yolo_edge.detect(IMG, classes="persn"),
        "detect classes=[-1]": lambda: yolo_edge.detect(IMG, classes=[-1]),
        "detect classes=[80] (80 classes)": lambda: yolo_edge.detect(IMG, classes=[80]),
        "detect classes=[1.5]": lambda: yolo_edge.detect(IMG, classes=[1.5]),
        "detect classes={1: 2}": lambda: yolo_edge.detect(IMG, classes={1: 2}),
        "detect classes=[[0]]": lambda: yolo_edge.detect(IMG, classes=[[0]]),
        "detect channels='bgra'": lambda: yolo_edge.detect(IMG, channels="bgra"),
        "detect channels=None": lambda: yolo_edge.detect(IMG, channels=None),
        # yolo_edge.detect: where to run
        "detect model=123": lambda: yolo_edge.detect(IMG, model=123),
        "detect backend=5": lambda: yolo_edge.detect(IMG, backend=5),
        "detect backend='nope'": lambda: yolo_edge.detect(IMG, backend="nope"),
        "detect token without endpoint": lambda: yolo_edge.detect(IMG, token="t"),
        "detect jpeg_quality without endpoint": lambda: yolo_edge.detect(IMG, jpeg_quality=80),
        "detect endpoint='svc:3000'": lambda: yolo_edge.detect(IMG, endpoint="svc:3000"),
        "detect endpoint=123": lambda: yolo_edge.detect(IMG, endpoint=123),
        "detect endpoint with a typo'd option": lambda: yolo_edge.detect(IMG, endpoint="http://127.0.0.1:9", jpeg_qualiti=5),
        "detect endpoint with model=": lambda: yolo_edge.detect(IMG, endpoint="http://127.0.0.1:9", model="yolov8s-fall"),
        "detect endpoint with timeout='a'": lambda: yolo_edge.detect(IMG, endpoint="http://127.0.0.1:9", timeout="a"),
        # yolo_edge.detect: images
        "detect(None)": lambda: yolo_edge.detect(None),
        "detect(12345)": lambda: yolo_edge.detect(12345),
        "detect(b'')": lambda: yolo_edge.detect(b""),
        "detect(b'garbage')": lambda: yolo_edge.detect(b"garbage"),
        "detect missing path": lambda: yolo_edge.detect("/nonexistent/bus.jpg"),
        "detect a directory": lambda: yolo_edge.detect(folder),
        "detect /dev/zero": lambda: yolo_edge.detect("/dev/zero"),
        "detect a path with NUL": lambda: yolo_edge.detect("bus\0.jpg"),
        "detect a 400 MB file": lambda: yolo_edge.detect(big),
        "detect float32 array": lambda: yolo_edge.detect(np.zeros((10, 10, 3), np.float32)),
        "detect empty array": lambda: yolo_edge.detect(np.zeros((0, 10, 3), np.uint8)),
        "detect 2-channel array": lambda: yolo_edge.detect(np.zeros((10, 10, 2), np.uint8)),
        "detect 8000x7000 array": lambda: yolo_edge.detect(np.zeros((8000, 7000), np.uint8)),
        "detect list with a bad path": lambda: yolo_edge.detect([IMG, "/nonexistent/b.jpg"]),
        "detect a PNG bomb": lambda: yolo_edge.detect(bombs()["png"]),
        "detect a fill-byte JPEG bomb": lambda: yolo_edge.detect(bombs()["jpeg_fill_bytes"]),
        "detect a TIFF bomb": lambda: yolo_edge.detect(bombs()["tiff_be"]),
        "detect OpenEXR bytes": lambda: yolo_edge.detect(exr),
        # Detector
        "Detector(123)": lambda: Detector(123),
        "Detector(b'model.onnx')": lambda: Detector(b"model.onnx"),
        "Detector(threads='x')": lambda: Detector(threads="x"),
        "Detector(threads=-1)": lambda: Detector(threads=-1),
        "Detector(threads=0)": lambda: Detector(threads=0),
        "Detector(threads=1.5)": lambda: Detector(threads=1.5),
        "Detector(max_pixels='x')": lambda: Detector(max_pixels="x"),
        "Detector(max_pixels=0)": lambda: Detector(max_pixels=0),
        "Detector(conf=2)": lambda: Detector(conf=2),
        "Detector(conf=None)": lambda: Detector(conf=None),
        "Detector(iou='x')": lambda: Detector(iou="x"),
        "Detector(max_det=None)": lambda: Detector(max_det=None),
        "Detector(classes=[None])": lambda: Detector(classes=[None]),
        "Detector(classes=[500]) on 80 classes": lambda: Detector(classes=[500]),
        "Detector(backend='nope')": lambda: Detector(backend="nope"),
        "Detector(backend=object())": lambda: Detector(backend=object()),
        "Detector(providers='CPU')": lambda: Detector(providers="CPUExecutionProvider"),
        "Detector(backend_options=[1])": lambda: Detector(backend_options=[1]),
        "Detector(output_format='yolo9000')": lambda: Detector(output_format="yolo9000"),
        "Detector(output_format=5)": lambda: Detector(output_format=5),
        "Detector(expected_sha256='abc')": lambda: Detector(expected_sha256="abc"),
        "Detector(expected_sha256=another)": lambda: Detector(expected_sha256=SHA),
        "Detector(root=5)": lambda: Detector(root=5),
        "Detector('no-such-model')": lambda: Detector("no-such-model"),
        "Detector(model.pt)": lambda: Detector(pt),
        "Detector(registry entry with a non-string path)":
            lambda: Detector("mine", root=_registry(tmp / "r1", {"path": 5, "sha256": SHA})),
        "Detector(registry entry with a bad sha)":
            lambda: Detector("mine", root=_registry(tmp / "r2", {"path": "x.onnx", "sha256": 7})),
        "Detector(registry entry that is a list)": lambda: Detector("mine", root=_registry(tmp / "r3", [1, 2])),
        # CloudClient
        "CloudClient('svc')": lambda: CloudClient("svc"),
        "CloudClient(timeout='a')": lambda: CloudClient("http://x", timeout="a"),
        "CloudClient(timeout=0)": lambda: CloudClient("http://x", timeout=0),
        "CloudClient(timeout=inf)": lambda: CloudClient("http://x", timeout=float("inf")),
        "CloudClient(jpeg_quality=0)": lambda: CloudClient("http://x", jpeg_quality=0),
        "CloudClient(jpeg_quality='90')": lambda: CloudClient("http://x", jpeg_quality="90"),
        "CloudClient(max_retries=-1)": lambda: CloudClient("http://x", max_retries=-1),
        "CloudClient(backoff_s=nan)": lambda: CloudClient("http://x", backoff_s=float("nan")),
        "CloudClient(token with a newline)": lambda: CloudClient("http://x", token="a\nb"),
        "CloudClient(token=5)": lambda: CloudClient("http://x", token=5),
        "CloudClient(expected_sha256='nothex')": lambda: CloudClient("http://x", expected_sha256="nothex"),
        "CloudClient(downscale='yes')": lambda: CloudClient("http://x", downscale="yes"),
        # images, results and models
        "load_image(max_pixels='x')": lambda: load_image(IMG, max_pixels="x"),
        "encode_image as .gif": lambda: encode_image(IMG, ".gif"),
        "encode_image quality='high'": lambda: encode_image(IMG, quality="high"),
        "encode_image of text": lambda: encode_image("notarray"),
        "Detections.from_dict('x')": lambda: Detections.from_dict("x"),
        "Detections(xyxy='abc')": lambda: Detections(xyxy="abc", confidence=[0.5], class_id=[1]),
        "Detections(class_id=[10**30])": lambda: Detections(xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[10 ** 30]),
        "Detections(xyxy of 3 numbers)": lambda: Detections(xyxy=[[0, 0, 1]], confidence=[0.5], class_id=[1]),
        "fetch_model('nope')": lambda: fetch_model("nope"),
        "get_spec(5)": lambda: get_spec(5),
        "register_local with '@' in the name":
            lambda: register_local(LocalEntry(name="a@b", path=str(pt), sha256=SHA), tmp / "r4"),
    }
    cases.update(_detector_calls(det))
    cases.update(_client_calls())
    cases.update(_oip_calls())
    return cases


def test_the_corpus_is_large():
    assert len(corpus(Path("/tmp"), None)) >= 60


def test_every_bad_call_raises_a_yolo_edge_error(tmp_path, default_detector, monkeypatch):
    monkeypatch.setenv("YOLO_EDGE_HOME", os.environ.get("YOLO_EDGE_HOME", str(Path.home() / ".cache" / "yolo-edge")))
    foreign, silent = {}, []
    for name, call in corpus(tmp_path, default_detector).items():
        try:
            call()
        except YoloEdgeError as exc:
            assert str(exc), f"{name}: an error without a message"
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            foreign[name] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        else:
            silent.append(name)
    assert not foreign, foreign
    assert not silent, f"accepted without an error: {silent}"


def test_errors_say_what_was_expected(default_detector):
    with pytest.raises(ConfigError, match=r"conf must be a number within \[0, 1\], got 'a'"):
        yolo_edge.detect(IMG, conf="a")
    with pytest.raises(ConfigError, match="threads must be None .* or an integer within 1..1024, got -1"):
        Detector(threads=-1)
    with pytest.raises(ConfigError, match=r"class ids within the model's classes 0..79, got 99"):
        default_detector(IMG, classes=[99])
    with pytest.raises(ModelError, match="sha256"):
        Detector(expected_sha256=SHA)


def test_a_huge_file_is_refused_without_being_read(tmp_path, monkeypatch):
    big = tmp_path / "huge.jpg"
    with big.open("wb") as f:
        f.truncate(400 << 20)

    def no_reading(self, *args, **kwargs):
        raise AssertionError(f"{self} was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(ImageTooLargeError, match="bytes, above the limit"):
        load_image(big)
    assert issubclass(ImageTooLargeError, ImageError)
