"""The Detector on the real default model and real photos."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

import yolo_edge
from yolo_edge import Detections, Detector
from yolo_edge.errors import ConfigError, ImageDecodeError, ModelNotFoundError, UnsupportedModelError

COCO_PERSON, COCO_BUS, COCO_TIE = 0, 5, 27


def test_default_model_finds_people_and_bus(default_detector, bus_jpg):
    dets = default_detector(bus_jpg)
    assert default_detector.info.name == "yolov3-tiny-coco" and len(default_detector.info.names) == 80
    people = dets[dets.class_id == COCO_PERSON]
    assert len(people) >= 3, dets
    assert COCO_BUS in dets.class_id.tolist(), dets
    assert dets.image_shape == (1080, 810)
    # boxes are in original-image pixels and inside the image
    assert dets.xyxy[:, 2].max() <= 810 and dets.xyxy[:, 3].max() <= 1080 and dets.xyxy.min() >= 0
    # the tallest person spans a good part of the 1080-pixel-high photo
    assert (people.xyxy[:, 3] - people.xyxy[:, 1]).max() > 400


def test_default_model_on_zidane(default_detector, zidane_jpg):
    dets = default_detector(zidane_jpg)
    assert (dets.class_id == COCO_PERSON).sum() >= 2, dets


def test_detect_function_and_list_input(default_model_path, bus_jpg, zidane_jpg):
    one = yolo_edge.detect(bus_jpg)
    both = yolo_edge.detect([bus_jpg, zidane_jpg])
    assert isinstance(one, Detections) and isinstance(both, list) and len(both) == 2
    assert one == both[0]


def test_batch_equals_single(default_detector, bus_jpg, zidane_jpg):
    assert default_detector.info.dynamic_batch and default_detector.backend.max_batch > 1
    batch, _ = default_detector.predict([bus_jpg, zidane_jpg, bus_jpg])
    for got, path in zip(batch, [bus_jpg, zidane_jpg, bus_jpg]):
        single = default_detector(path)
        assert len(got) == len(single)
        np.testing.assert_allclose(got.xyxy, single.xyxy, atol=0.05)
        np.testing.assert_allclose(got.confidence, single.confidence, atol=1e-4)


def test_channel_order_and_grayscale(default_detector, bus_jpg):
    bgr = cv2.imread(str(bus_jpg))
    assert default_detector(bgr) == default_detector(np.ascontiguousarray(bgr[..., ::-1]), channels="rgb")
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert (default_detector(gray).class_id == COCO_PERSON).sum() >= 2


def test_per_call_options(default_detector, bus_jpg):
    base = default_detector(bus_jpg, conf=0.1)
    assert len(default_detector(bus_jpg, conf=0.5)) < len(base)
    only_bus = default_detector(bus_jpg, conf=0.1, classes=[COCO_BUS])
    assert set(only_bus.class_id.tolist()) == {COCO_BUS}
    assert len(default_detector(bus_jpg, conf=0.1, max_det=2)) == 2
    with pytest.raises(ConfigError, match="conf"):
        default_detector(bus_jpg, conf=1.5)
    with pytest.raises(ConfigError, match="max_det"):
        default_detector(bus_jpg, max_det=0)


def test_thread_safe(default_detector, bus_jpg, zidane_jpg):
    frames = [cv2.imread(str(p)) for p in (bus_jpg, zidane_jpg)]
    expected = [default_detector(f) for f in frames]
    errors: list[str] = []

    def worker(i: int) -> None:
        for k in range(6):
            j = (i + k) % 2
            if default_detector(frames[j]) != expected[j]:
                errors.append(f"thread {i} iteration {k} differs")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bad_inputs_are_typed(default_detector):
    with pytest.raises(ImageDecodeError):
        default_detector(b"")
    with pytest.raises(ImageDecodeError):
        default_detector(b"\x89PNG not really")


def test_unknown_model_and_non_onnx(tmp_path):
    with pytest.raises(ModelNotFoundError, match="yolo-edge models list"):
        Detector("no-such-model")
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="yolo-edge export"):
        Detector(pt)


def test_timings_and_info(default_detector, bus_jpg):
    _, t = default_detector.predict([bus_jpg])
    assert t.inference_s > 0 and t.decode_s > 0 and t.total_s >= t.inference_s
    assert default_detector.info.to_dict()["sha256"] == default_detector.info.sha256
    assert "CPUExecutionProvider" in default_detector.backend.providers


def test_classes_by_name(default_model_path, default_detector, bus_jpg):
    only_bus = Detector("yolov3-tiny-coco", classes="bus")
    assert only_bus.classes == [5] and set(only_bus(bus_jpg).labels) == {"bus"}
    (persons,), _ = default_detector.predict([bus_jpg], classes=["Person"])
    assert set(persons.labels) == {"person"} and len(persons) >= 3
    with pytest.raises(ConfigError, match="unknown class 'buss'.*did you mean bus"):
        Detector("yolov3-tiny-coco", classes=["buss"])
    with pytest.raises(ConfigError, match="class id 80 is not one of yolov3-tiny-coco's classes"):
        Detector("yolov3-tiny-coco", classes=[80])
