"""One adaptive batch of frames from several requests, through the Detector, frame by frame isolated.

Frames arrive here already validated (``bentos/intake.py``). A frame that cannot be
answered by its deadline is answered ``expired`` and never computed, so that under
overload the model's time goes to frames that can still make it:

- its deadline has passed when the batch starts, or
- it falls before the batch's expected end (:class:`ModelTime`: the model's recent time
  per frame, times the frames computed). Without this, a queue under overload settles at
  a wait close to the budget, and every frame computed starts with almost no time left
  and is answered late anyway. The fewest frames are dropped: the earliest deadlines go
  first, and each one dropped shortens the batch for the others.

The others are grouped by options so that each group is one ``Detector.predict`` call.
Should a group still fail (a runtime error, a bug), its frames are run again one by one,
so that only the frame that really fails gets an ``error`` result: a failure never
reaches another request's frames, and the batch itself never raises (which would fail
every request in it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from yolo_edge.detector import StageTimings
from yolo_edge.types import Detections
from yolo_edge.remote.wire import DetectOptions, FrameResult, FrameStatus, FrameTiming, ModelRef

from .intake import Frame

__all__ = ["run_batch", "doomed", "ModelTime", "Predictor"]

logger = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, images: Sequence[np.ndarray], **options: Any) -> tuple[list[Detections], StageTimings]: ...


class ModelTime:
    """The model's time per frame: an exponentially weighted mean over recent batches.

    Unknown (0 s) until the first batch. On a CPU the model's time grows with the frames
    in a batch; on a GPU it grows more slowly, so after large batches this underestimates
    small ones (then a frame may still be answered late, never dropped too early) and
    after small batches it overestimates large ones.
    """

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.per_frame_s: float | None = None
        self._lock = threading.Lock()

    def update(self, seconds: float, frames: int) -> None:
        if frames < 1 or not seconds >= 0:
            return
        with self._lock:
            sample = seconds / frames
            old = self.per_frame_s
            self.per_frame_s = sample if old is None else old + self.weight * (sample - old)

    def batch_s(self, frames: int) -> float:
        """The expected model time of ``frames`` frames."""
        per_frame = self.per_frame_s
        return 0.0 if per_frame is None else per_frame * frames


def run_batch(
    detector: Predictor,
    frames: Sequence[Frame],
    model: ModelRef,
    *,
    observe_compute: Callable[[float], None] = lambda seconds: None,
    clock: Callable[[], float] = time.perf_counter,
    start: float | None = None,
    model_time: ModelTime | None = None,
) -> list[FrameResult]:
    """Detect in every frame; one result per frame, in order, each with its own status.

    ``start`` is when the batch started (default: now, on ``clock``). Frames whose
    deadline is not after it, or not after the batch's expected end by ``model_time``
    (learnt here from each group's time), are answered EXPIRED without being computed.
    """
    start = clock() if start is None else start
    results: list[FrameResult | None] = [None] * len(frames)
    for i, frame in enumerate(frames):
        if _expired(frame, start):
            late_ms = (start - frame.deadline) * 1e3  # type: ignore[operator] # expired: it has one
            results[i] = _expired_result(frame, model, start, f"its deadline passed {late_ms:.1f} ms before its "
                                                              "batch started: not computed")
    live = [i for i, r in enumerate(results) if r is None]
    expected = model_time.batch_s if model_time is not None else (lambda n: 0.0)
    dropped = _cannot_make_it(frames, live, start, expected)
    with_it_ms = expected(len(live) - len(dropped) + 1) * 1e3
    for i in dropped:
        left_ms = (frames[i].deadline - start) * 1e3  # type: ignore[operator]
        results[i] = _expired_result(frames[i], model, start, f"{left_ms:.1f} ms were left to it when its batch "
                                     f"started, and with it the batch takes about {with_it_ms:.0f} ms: not computed")
    live = [i for i, r in enumerate(results) if r is None]
    groups: dict[DetectOptions, list[int]] = {}
    for i in live:
        groups.setdefault(frames[i].options, []).append(i)
    size = len(live)

    def observe(seconds: float, n: int) -> None:
        observe_compute(seconds)
        if model_time is not None:
            model_time.update(seconds, n)

    for options, indices in groups.items():
        try:
            _run_group(detector, frames, indices, options, results, start, size, model, observe, clock)
        except Exception:  # noqa: BLE001 - isolate: find the frame(s) that fail, spare the others
            logger.exception("a batch group of %d frame(s) failed; running its frames one by one", len(indices))
            for i in indices:
                try:
                    _run_group(detector, frames, [i], options, results, start, size, model, observe, clock)
                except Exception as exc:  # noqa: BLE001 - this frame's own failure, reported in its result
                    logger.error("frame %d of the batch failed: %r", i, exc)
                    results[i] = FrameResult(
                        status=FrameStatus.ERROR, model=model, timing=_timing(frames[i], start, 0.0, clock(), size),
                        error=f"the service could not process this image ({type(exc).__name__}); see its log")
    return [r for r in results if r is not None]


def _cannot_make_it(frames: Sequence[Frame], live: list[int], start: float,
                    expected: Callable[[int], float]) -> list[int]:
    """The fewest of ``live`` to drop so that every other deadline falls after the batch's expected end.

    Earliest deadlines first: dropping one shortens the batch, and a later deadline is
    easier to meet. Frames without a deadline are never dropped.
    """
    timed = sorted((i for i in live if frames[i].deadline is not None), key=lambda i: frames[i].deadline)  # type: ignore[arg-type,return-value]
    for k in range(len(timed) + 1):
        kept = len(live) - k
        if k == len(timed) or frames[timed[k]].deadline > start + expected(kept):  # type: ignore[operator]
            return timed[:k]
    return timed  # not reached


def _expired_result(frame: Frame, model: ModelRef, start: float, why: str) -> FrameResult:
    return FrameResult(status=FrameStatus.EXPIRED, model=model, timing=_timing(frame, start, 0.0, start, 0), error=why)


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
               observe: Callable[[float, int], None], clock: Callable[[], float]) -> None:
    dets, timings = detector.predict([frames[i].image for i in indices], **options.kwargs())
    if len(dets) != len(indices):
        raise RuntimeError(f"the detector returned {len(dets)} results for {len(indices)} frames")
    compute_s = timings.preprocess_s + timings.inference_s + timings.postprocess_s
    observe(compute_s, len(indices))
    done = clock()
    for i, det in zip(indices, dets):
        results[i] = FrameResult(status=FrameStatus.OK, model=model, detections=det,
                                 timing=_timing(frames[i], start, compute_s, done, batch_frames))


def _timing(frame: Frame, start: float, compute_s: float, done: float, batch_frames: int) -> FrameTiming:
    return FrameTiming(queue_ms=(start - frame.received) * 1e3, decode_ms=frame.decode_s * 1e3,
                       inference_ms=compute_s * 1e3, server_ms=(done - frame.received) * 1e3,
                       batch_frames=batch_frames)
