"""One adaptive batch, frame by frame isolated: a failing frame never fails the others."""

from __future__ import annotations

import numpy as np

from bentos.batch import run_batch
from bentos.intake import Frame
from yolo_edge.detector import StageTimings
from yolo_edge.types import Detections
from yolo_edge.wire import DetectOptions, FrameStatus, ModelRef

MODEL = ModelRef("m", "ab" * 32)


class FakeDetector:
    """Finds one box per frame, labelled with the frame's fill value; fails on frames filled with 13."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def predict(self, images, **options):
        self.calls.append((len(images), options))
        if any(int(img[0, 0, 0]) == 13 for img in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        dets = [Detections([[0, 0, 1, 1]], [0.9], [int(img[0, 0, 0])], {}, img.shape[:2]) for img in images]
        return dets, StageTimings(preprocess_s=0.001, inference_s=0.01, postprocess_s=0.001)


def frame(value: int, options: DetectOptions = DetectOptions()) -> Frame:
    return Frame(np.full((4, 4, 3), value, np.uint8), options, received=0.0, decode_s=0.002)


def test_frames_are_grouped_by_options_and_answered_in_order():
    det = FakeDetector()
    a, b = DetectOptions(conf=0.5), DetectOptions(classes=[1])
    frames = [frame(1, a), frame(2, b), frame(3, a)]
    results = run_batch(det, frames, MODEL, clock=lambda: 1.0)
    assert [int(r.detections.class_id[0]) for r in results] == [1, 2, 3]
    assert sorted(det.calls, key=lambda c: c[0]) == [(1, b.kwargs()), (2, a.kwargs())]
    assert all(r.ok and r.model == MODEL and r.timing.batch_frames == 3 for r in results)
    assert results[0].timing.queue_ms == 1000.0 and results[0].timing.inference_ms == 12.0


def test_one_failing_frame_fails_alone():
    det = FakeDetector()
    opts = DetectOptions(conf=0.3)
    results = run_batch(det, [frame(1, opts), frame(13, opts), frame(3, opts), frame(4)], MODEL)
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.ERROR, FrameStatus.OK, FrameStatus.OK]
    assert "RuntimeError" in results[1].error and results[1].detections is None
    assert [int(r.detections.class_id[0]) for r in (results[0], results[2], results[3])] == [1, 3, 4]


def test_a_detector_returning_too_few_results_fails_its_frames_not_the_batch():
    class Short(FakeDetector):
        def predict(self, images, **options):
            dets, t = super().predict(images, **options)
            return dets[:-1], t

    results = run_batch(Short(), [frame(1), frame(2)], MODEL)
    assert [r.status for r in results] == [FrameStatus.ERROR, FrameStatus.ERROR]
