"""Prometheus metrics of the yolo-edge service, served on /metrics beside BentoML's own.

BentoML workers set ``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, so
``prometheus_client`` is imported and the metrics created on first use (in the worker),
never at import time; otherwise they would be invisible on /metrics.

BentoML's ``bentoml_service_adaptive_batch_size`` counts *requests* per batch; a request
may carry several images, so ``yolo_edge_batch_frames`` counts the frames the model saw
(frames answered ``expired`` at the batch's start are not among them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["ServiceMetrics", "get"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class ServiceMetrics:
    batch_frames: Any  # Histogram: frames per model batch
    inference_seconds: Any  # Histogram: model time per batch (letterbox + run + NMS)
    decode_seconds: Any  # Histogram: JPEG/PNG decode time per frame
    frames: Any  # Counter{outcome}: ok | invalid | too_large | unsupported | busy | error | expired
    doomed_computed: Any  # Counter: frames computed although their deadline had passed at batch start (stays 0)
    rejected: Any  # Counter{reason}: unauthorized | too_large | overloaded | not_ready | timeout | uploads
    model_info: Any  # Gauge{name, sha256, version} = 1
    requests_open: Any  # Gauge{stage}: uploads (body still arriving) | in_flight (body arrived)
    decoded_pixels: Any  # Gauge: pixels held by requests from decode to answer (the worker's budget)

    def set_model(self, name: str, sha256: str, version: str) -> None:
        self.model_info.labels(name=name, sha256=sha256, version=version).set(1)


@functools.lru_cache(maxsize=1)
def get() -> ServiceMetrics:
    """The worker's metrics, created on first call."""
    from prometheus_client import Counter, Gauge, Histogram

    return ServiceMetrics(
        batch_frames=Histogram("yolo_edge_batch_frames", "Frames per model batch",
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)),
        inference_seconds=Histogram("yolo_edge_inference_seconds",
                                    "Model time per batch: letterbox, run and NMS", buckets=_SECONDS),
        decode_seconds=Histogram("yolo_edge_decode_seconds", "Image decode time per frame", buckets=_SECONDS),
        frames=Counter("yolo_edge_frames", "Frames by outcome", ["outcome"]),
        doomed_computed=Counter("yolo_edge_doomed_frames_computed", "Frames computed although their deadline had "
                                "passed when their batch started (0 by design: such frames are answered expired)"),
        rejected=Counter("yolo_edge_rejected_requests", "Requests refused before inference, by reason", ["reason"]),
        # an info metric as a gauge: prometheus' multiprocess mode has no Info type
        model_info=Gauge("yolo_edge_model_info", "The model this service runs", ["name", "sha256", "version"],
                         multiprocess_mode="max"),
        requests_open=Gauge("yolo_edge_requests_open", "Detect requests open, by stage: uploads whose body is "
                            "still arriving, and requests in flight (body arrived)", ["stage"],
                            multiprocess_mode="livesum"),
        decoded_pixels=Gauge("yolo_edge_decoded_pixels", "Pixels held by requests from decode to answer",
                             multiprocess_mode="livesum"),
    )


def reject(reason: str) -> None:
    """Count a refused request (the Guard middleware's callback)."""
    get().rejected.labels(reason=reason).inc()


def decoded(pixels: int) -> None:
    """Set how many decoded pixels requests hold (the pixel budget's callback)."""
    get().decoded_pixels.set(pixels)


def count(stage: str, n: int) -> None:
    """Set how many detect requests are at ``stage`` (the Guard middleware's callback)."""
    get().requests_open.labels(stage=stage).set(n)
