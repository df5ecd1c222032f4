"""One adaptive batch of frames from several requests, through the Detector, frame by frame isolated.

Frames arrive here already validated (``bentos/intake.py``). A frame whose deadline has
passed when its batch starts is answered ``expired`` and never computed: under overload
the model's time goes to frames that can still make it. The others are grouped by
options so that each group is one ``Detector.predict`` call. Should a group still fail
(a runtime error, a bug), its frames are run again one by one, so that only the frame
that really fails gets an ``error`` result: a failure never reaches another request's
frames, and the batch itself never raises (which would fail every request in it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from yolo_edge.detector import StageTimings
from yolo_edge.types import Detections
from yolo_edge.wire import DetectOptions, FrameResult, FrameStatus, FrameTiming, ModelRef

from .intake import Frame

__all__ = ["run_batch", "doomed", "Predictor"]

logger = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, images: Sequence[np.ndarray], **options: Any) -> tuple[list[Detections], StageTimings]: ...


def run_batch(
    detector: Predictor,
    frames: Sequence[Frame],
    model: ModelRef,
    *,
    observe_compute: Callable[[float], None] = lambda seconds: None,
    clock: Callable[[], float] = time.perf_counter,
    start: float | None = None,
) -> list[FrameResult]:
    """Detect in every frame; one result per frame, in order, each with its own status.

    ``start`` is when the batch started (default: now, on ``clock``): frames whose
    deadline is not after it are answered EXPIRED without being computed.
    """
    start = clock() if start is None else start
    results: list[FrameResult | None] = [None] * len(frames)
    live = [i for i, frame in enumerate(frames) if not _expired(frame, start)]
    for i in sorted(set(range(len(frames))) - set(live)):
        late_ms = (start - frames[i].deadline) * 1e3  # type: ignore[operator] # expired: it has one
        results[i] = FrameResult(
            status=FrameStatus.EXPIRED, model=model, timing=_timing(frames[i], start, 0.0, start, 0),
            error=f"its deadline passed {late_ms:.1f} ms before its batch started: not computed")
    groups: dict[DetectOptions, list[int]] = {}
    for i in live:
        groups.setdefault(frames[i].options, []).append(i)
    size = len(live)
    for options, indices in groups.items():
        try:
            _run_group(detector, frames, indices, options, results, start, size, model, observe_compute, clock)
        except Exception:  # noqa: BLE001 - isolate: find the frame(s) that fail, spare the others
            logger.exception("a batch group of %d frame(s) failed; running its frames one by one", len(indices))
            for i in indices:
                try:
                    _run_group(detector, frames, [i], options, results, start, size, model, observe_compute, clock)
                except Exception as exc:  # noqa: BLE001 - this frame's own failure, reported in its result
                    logger.error("frame %d of the batch failed: %r", i, exc)
                    results[i] = FrameResult(
                        status=FrameStatus.ERROR, model=model, timing=_timing(frames[i], start, 0.0, clock(), size),
                        error=f"the service could not process this image ({type(exc).__name__}); see its log")
    return [r for r in results if r is not None]


def doomed(frames: Sequence[Frame], results: Sequence[FrameResult], start: float) -> int:
    """How many frames were computed although their deadline had passed at ``start``: 0 by construction.

    Counted from the results, apart from the drop itself, so that the service's metric
    would show any path that computes doomed work.
    """
    return sum(1 for frame, result in zip(frames, results)
               if result.status is not FrameStatus.EXPIRED and _expired(frame, start))


def _expired(frame: Frame, start: float) -> bool:
    return frame.deadline is not None and frame.deadline <= start


def _run_group(detector: Predictor, frames: Sequence[Frame], indices: list[int], options: DetectOptions,
               results: list[FrameResult | None], start: float, batch_frames: int, model: ModelRef,
               observe_compute: Callable[[float], None], clock: Callable[[], float]) -> None:
    dets, timings = detector.predict([frames[i].image for i in indices], **options.kwargs())
    if len(dets) != len(indices):
        raise RuntimeError(f"the detector returned {len(dets)} results for {len(indices)} frames")
    compute_s = timings.preprocess_s + timings.inference_s + timings.postprocess_s
    observe_compute(compute_s)
    done = clock()
    for i, det in zip(indices, dets):
        results[i] = FrameResult(status=FrameStatus.OK, model=model, detections=det,
                                 timing=_timing(frames[i], start, compute_s, done, batch_frames))


def _timing(frame: Frame, start: float, compute_s: float, done: float, batch_frames: int) -> FrameTiming:
    return FrameTiming(queue_ms=(start - frame.received) * 1e3, decode_ms=frame.decode_s * 1e3,
                       inference_ms=compute_s * 1e3, server_ms=(done - frame.received) * 1e3,
                       batch_frames=batch_frames)
