"""One adaptive batch, frame by frame isolated: a failing frame never fails the others, an expired one is not computed."""

from __future__ import annotations

import numpy as np
import pytest

from bentos.batch import ModelTime, doomed, run_batch
from bentos.intake import Frame
from yolo_edge.detector import StageTimings
from yolo_edge.types import Detections
from yolo_edge.remote.wire import DetectOptions, FrameStatus, ModelRef

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


def frame(value: int, options: DetectOptions = DetectOptions(), deadline: float | None = None) -> Frame:
    return Frame(np.full((4, 4, 3), value, np.uint8), options, received=0.0, decode_s=0.002, deadline=deadline)


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


def test_frames_whose_deadline_passed_before_the_batch_started_are_expired_not_computed():
    det = FakeDetector()
    opts = DetectOptions(conf=0.4)
    # the batch starts at t=1.0: deadlines at or before it have passed
    frames = [frame(1, opts, deadline=2.0), frame(2, opts, deadline=0.5), frame(3), frame(4, opts, deadline=1.0),
              frame(5, DetectOptions(classes=[1]), deadline=0.9)]
    results = run_batch(det, frames, MODEL, clock=lambda: 1.0)
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK, FrameStatus.EXPIRED,
                                           FrameStatus.EXPIRED]
    # only the two live frames reached the model, one call per options group
    assert sorted(det.calls, key=lambda c: c[1]["conf"] or 0) == [(1, DetectOptions().kwargs()), (1, opts.kwargs())]
    assert [int(results[i].detections.class_id[0]) for i in (0, 2)] == [1, 3]
    late = results[1]
    assert late.detections is None and late.model == MODEL and "500.0 ms before its batch started" in late.error
    assert late.timing.queue_ms == 1000.0 and late.timing.inference_ms == 0 and late.timing.batch_frames == 0
    assert results[0].timing.batch_frames == 2  # the model batch held the live frames only
    assert doomed(frames, results, start=1.0) == 0


def test_a_batch_of_expired_frames_never_runs_the_model():
    det = FakeDetector()
    results = run_batch(det, [frame(1, deadline=0.1), frame(13, deadline=0.2)], MODEL, start=5.0)
    assert [r.status for r in results] == [FrameStatus.EXPIRED] * 2 and det.calls == []


def test_doomed_counts_frames_computed_after_their_deadline():
    """The metric's check, independent of the drop: results computed for frames already late at start."""
    frames = [frame(1, deadline=0.5), frame(2, deadline=3.0), frame(3)]
    computed = run_batch(FakeDetector(), frames, MODEL, start=0.0)  # nothing late at 0.0: all computed
    assert [r.status for r in computed] == [FrameStatus.OK] * 3
    assert doomed(frames, computed, start=0.0) == 0
    assert doomed(frames, computed, start=1.0) == 1  # had the batch started at 1.0, frame 0 was doomed work


def test_model_time_is_a_weighted_mean_per_frame():
    t = ModelTime(weight=0.5)
    assert t.batch_s(8) == 0.0  # unknown until the first batch: only past deadlines are dropped
    t.update(0.4, 8)  # 50 ms a frame
    assert t.batch_s(2) == pytest.approx(0.1)
    t.update(0.1, 1)
    assert t.per_frame_s == pytest.approx(0.075)
    t.update(1.0, 0)  # nothing computed: nothing learnt
    assert t.per_frame_s == pytest.approx(0.075)


def test_frames_that_cannot_make_their_deadline_in_this_batch_are_not_computed():
    det = FakeDetector()
    model_time = ModelTime()
    model_time.update(0.1, 1)  # 100 ms a frame
    # at t=1.0, four frames: 400 ms of model time; dropping the earliest deadline leaves 300 ms (1.25 is still
    # before 1.3), dropping the next leaves 200 ms, which 1.5 and the frame without a deadline both get
    frames = [frame(1, deadline=1.15), frame(2, deadline=1.25), frame(3, deadline=1.5), frame(4)]
    results = run_batch(det, frames, MODEL, start=1.0, model_time=model_time)
    assert [r.status for r in results] == [FrameStatus.EXPIRED, FrameStatus.EXPIRED, FrameStatus.OK, FrameStatus.OK]
    assert det.calls == [(2, DetectOptions().kwargs())]
    assert "150.0 ms were left to it" in results[0].error and "about 300 ms: not computed" in results[0].error
    assert results[2].timing.batch_frames == 2
    assert doomed(frames, results, start=1.0) == 0
    assert model_time.per_frame_s == pytest.approx(0.1 + 0.2 * (0.012 / 2 - 0.1))  # learnt from this batch


def test_frames_without_a_deadline_are_never_dropped_for_the_estimate():
    model_time = ModelTime()
    model_time.update(100.0, 1)
    results = run_batch(FakeDetector(), [frame(1), frame(2, deadline=50.0)], MODEL, start=1.0, model_time=model_time)
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.EXPIRED]
