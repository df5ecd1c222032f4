"""The small interface every inference backend implements.

A backend takes a float32 NCHW batch in [0, 1] (already letterboxed, RGB) and returns
the model's raw output arrays. Everything else (decoding, NMS, scaling) is the
Detector's job, so backends stay tiny and interchangeable.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """``run(batch) -> outputs``; safe to call from several threads at once."""

    #: short name: "onnxruntime", "tensorrt", "torch", ...
    name: str
    #: input shape as (batch, channels, height, width); None where the axis is dynamic
    input_shape: tuple[int | None, int | None, int | None, int | None]

    @property
    def providers(self) -> Sequence[str]:
        """The execution providers / devices really in use (not merely available)."""
        ...

    @property
    def max_batch(self) -> int:
        """Largest batch one ``run`` accepts (1 for a static-batch model)."""
        ...

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run float32 ``[B, 3, H, W]`` and return the raw outputs, batch first."""
        ...

    def close(self) -> None:
        """Release sessions and device memory. Idempotent."""
        ...
