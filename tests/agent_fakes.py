"""Honest fakes for the agent's I/O: a detector and a cloud that take real (short) time."""

from __future__ import annotations

import threading
import time

from yolo_edge import Detections
from yolo_edge.errors import CloudModelMismatchError, CloudUnavailableError


class SlowDetector:
    """One frame at a time (like a 1-thread backend), ``service_s`` each."""

    def __init__(self, service_s: float = 0.02) -> None:
        self.service_s = service_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, image):
        with self._lock:
            time.sleep(self.service_s)
            self.calls += 1
        return Detections([[0, 0, 1, 1]], [0.9], [0], {0: "local"}, image_shape=image.shape[:2])


class FakeCloud:
    def __init__(self, rtt_s: float = 0.03, *, wake_s: float = 0.0, mismatch: bool = False) -> None:
        self.rtt_s = rtt_s
        self.wake_s = wake_s
        self.mismatch = mismatch
        self.down = False
        self.expected_sha256 = None
        self.frames = 0
        self.requests = 0
        self.wakes = 0
        self.max_concurrent = 0
        self.budgets = []
        self._in = 0
        self._lock = threading.Lock()

    def wake(self, wait_s: float = 0) -> bool:
        self.wakes += 1
        time.sleep(min(self.wake_s, wait_s))
        return not self.down and self.wake_s <= wait_s

    def detect_frames(self, images, budgets_s=None):
        """The protocol the agent calls: one wire result per frame (expired when its budget is gone)."""
        from yolo_edge.remote.wire import FrameResult, FrameStatus, ModelRef

        dets, metas = self.detect_many(images, return_meta=True)
        self.budgets.append(list(budgets_s or []))
        model = ModelRef("fake", "aaaa")
        return [FrameResult(status=FrameStatus.OK, model=model, detections=d) for d in dets]

    def detect_many(self, images, return_meta=False):
        with self._lock:
            self._in += 1
            self.max_concurrent = max(self.max_concurrent, self._in)
        try:
            if self.down:
                time.sleep(0.002)
                raise CloudUnavailableError("connection refused (fake)")
            if self.mismatch:
                raise CloudModelMismatchError("service runs sha256 bbbb, expected aaaa (fake)")
            time.sleep(self.rtt_s)
            with self._lock:
                self.frames += len(images)
                self.requests += 1
            dets = [Detections([[0, 0, 2, 2]], [0.8], [1], {1: "cloud"}, image_shape=im.shape[:2]) for im in images]
            metas = [{"model": {"name": "fake", "sha256": "aaaa"}, "timing": {"roundtrip_ms": 1000 * self.rtt_s}}
                     for _ in images]
            return (dets, metas) if return_meta else dets
        finally:
            with self._lock:
                self._in -= 1


class SlowerEdge:
    """The real detector, with every call padded to ``service_s`` (an edge device slower than this machine)."""

    def __init__(self, detector, service_s: float) -> None:
        self.detector, self.service_s = detector, service_s

    def __call__(self, image):
        start = time.perf_counter()
        dets = self.detector(image)
        time.sleep(max(0.0, self.service_s - (time.perf_counter() - start)))
        return dets


class ListSink:
    """Keeps every released result and when it arrived (the agent's clock)."""

    name = "list"
    wants_images = False

    def __init__(self) -> None:
        self.results = []
        self.received_at = []

    def emit(self, r) -> None:
        self.results.append(r)
        self.received_at.append(time.monotonic())

    def report(self):
        from edge_agent.core.delivery import SinkReport

        return SinkReport(name=self.name, received=len(self.results), delivered=len(self.results))

    def close(self):
        return self.report()
