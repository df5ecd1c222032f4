"""Input checks shared by the GPU backends: typed errors for a caller's mistakes."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["check_batch", "check_shape"]


def check_batch(batch: np.ndarray, input_shape: tuple, max_batch: int) -> None:
    """Raise :class:`ConfigError` unless ``batch`` is float32 ``[1..max_batch, C, H, W]`` fitting ``input_shape``.

    >>> check_batch(np.zeros((2, 3, 8, 8), np.float32), (None, 3, 8, 8), 4)
    """
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32 or batch.ndim != 4:
        raise ConfigError(
            f"expected a float32 [B, 3, H, W] numpy batch, got "
            f"{type(batch).__name__} {getattr(batch, 'dtype', '')} {getattr(batch, 'shape', '')}"
        )
    check_shape(tuple(batch.shape), input_shape, max_batch)


def check_shape(shape: tuple[int, ...], input_shape: tuple, max_batch: int) -> None:
    """The shape part of :func:`check_batch` (also for device tensors)."""
    if len(shape) != 4:
        raise ConfigError(f"expected a [B, 3, H, W] batch, got shape {shape}")
    for axis, (want, got) in enumerate(zip(input_shape[1:], shape[1:]), start=1):
        if want is not None and want != got:
            raise ConfigError(f"batch axis {axis} is {got}, the model expects {want} (input shape {input_shape})")
    if not 1 <= shape[0] <= max_batch:
        raise ConfigError(f"batch size {shape[0]} is outside 1..{max_batch}: split it (Detector does this)")
    if input_shape[0] is not None and shape[0] != input_shape[0]:
        raise ConfigError(f"this static-batch model takes exactly {input_shape[0]} image(s), got {shape[0]}")
