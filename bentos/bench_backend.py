"""BENCHMARK TOOL ONLY: a backend that runs no model, so the serving path can be timed alone.

``YOLO_EDGE_BENCH_NO_INFERENCE=1`` makes the service answer every frame at once with no
boxes: the model's output is all zeros, of the shapes the real model gives, so
everything around the model (HTTP, the Guard, multipart, header checks, decode,
letterbox, batching, NMS, JSON) still runs. ``benchmarks/service_bench.py`` uses it to
measure the service's own cost per request; a deployment must never set it (the service
logs a warning and reports the backend as ``no-inference (benchmark)`` on /metadata).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from yolo_edge.backends.base import Backend

__all__ = ["NoInference", "ENV"]

#: The environment variable that selects this backend in the service.
ENV = "YOLO_EDGE_BENCH_NO_INFERENCE"


class NoInference:
    """Wraps a real backend for its shapes and metadata; ``run`` returns zeros at once."""

    name = "no-inference (benchmark)"

    def __init__(self, real: Backend) -> None:
        self._real = real
        self.input_shape = real.input_shape
        self.metadata: dict[str, Any] = dict(getattr(real, "metadata", {}) or {})
        self.output_shapes = getattr(real, "output_shapes", [[None, None, None]])
        # one real run learns the per-image output shapes (their axes may be named, not sized)
        _, c, h, w = (d if d is not None else 1 for d in real.input_shape)
        outputs = real.run(np.zeros((1, c, h, w), np.float32))
        self._per_image = [(o.shape[1:], o.dtype) for o in outputs]

    @property
    def providers(self) -> Sequence[str]:
        return self._real.providers

    @property
    def max_batch(self) -> int:
        return self._real.max_batch

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.zeros((len(batch), *shape), dtype) for shape, dtype in self._per_image]

    def close(self) -> None:
        self._real.close()
