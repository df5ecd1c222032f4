"""Letterbox and batching: pure functions of their inputs, identical to Ultralytics.

The geometry (scale, rounding of the resized size, split of the padding) follows
``ultralytics.data.augment.LetterBox`` exactly, so that boxes match the reference
implementation to the pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

__all__ = ["LetterboxParams", "letterbox_params", "letterbox", "to_blob", "make_batch"]

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxParams:
    """How one image was placed on the model's canvas; used to map boxes back."""

    orig_shape: tuple[int, int]  # (h, w) of the source image
    new_unpad: tuple[int, int]  # (w, h) after resizing, before padding
    top: int
    bottom: int
    left: int
    right: int

    @property
    def gain(self) -> tuple[float, float]:
        """(gain_x, gain_y): resized / original, per axis (rounding makes them differ)."""
        return self.new_unpad[0] / self.orig_shape[1], self.new_unpad[1] / self.orig_shape[0]


def letterbox_params(
    orig_shape: tuple[int, int], new_shape: tuple[int, int], *, scaleup: bool = True
) -> LetterboxParams:
    """Where an image of ``orig_shape`` (h, w) lands on a ``new_shape`` (h, w) canvas.

    >>> letterbox_params((1080, 810), (640, 640))
    LetterboxParams(orig_shape=(1080, 810), new_unpad=(480, 640), top=0, bottom=0, left=80, right=80)
    """
    h, w = orig_shape
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (max(round(w * r), 1), max(round(h * r), 1))
    dw = (new_shape[1] - new_unpad[0]) / 2
    dh = (new_shape[0] - new_unpad[1]) / 2
    return LetterboxParams(
        orig_shape=(h, w),
        new_unpad=new_unpad,
        top=round(dh - 0.1),
        bottom=round(dh + 0.1),
        left=round(dw - 0.1),
        right=round(dw + 0.1),
    )


def letterbox(image: np.ndarray, new_shape: tuple[int, int], *, scaleup: bool = True) -> tuple[np.ndarray, LetterboxParams]:
    """Resize keeping aspect ratio and pad with gray (114) to ``new_shape`` (h, w)."""
    p = letterbox_params(image.shape[:2], new_shape, scaleup=scaleup)
    if (image.shape[1], image.shape[0]) != p.new_unpad:
        image = cv2.resize(image, p.new_unpad, interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(image, p.top, p.bottom, p.left, p.right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, p


_SCALE = np.float32(1.0 / 255.0)


def to_blob(images: Sequence[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR uint8 frames -> float32 ``[B, 3, H, W]`` RGB in [0, 1]."""
    h, w = images[0].shape[:2]
    out = np.empty((len(images), 3, h, w), np.float32)
    for i, img in enumerate(images):
        _planes_into(img, out[i])
    return out


def _planes_into(bgr: np.ndarray, dst: np.ndarray) -> None:
    # cv2.split de-interleaves with SIMD, then one multiply per contiguous plane straight
    # into the output swaps BGR->RGB, moves HWC->CHW and scales: about 2x faster than
    # multiplying the strided channel views, and 4x faster than cv2.dnn.blobFromImages.
    planes = cv2.split(bgr)
    for c in range(3):
        np.multiply(planes[2 - c], _SCALE, out=dst[c], casting="unsafe")


def make_batch(
    images: Sequence[np.ndarray], new_shape: tuple[int, int]
) -> tuple[np.ndarray, list[LetterboxParams]]:
    """Letterbox each BGR frame to ``new_shape`` and stack them into one model input.

    Equal to ``to_blob([letterbox(img)[0] for img in images])``, but the resized pixels
    go straight into the float batch and only the padding strips are filled, skipping
    the padded uint8 copy.
    """
    out = np.empty((len(images), 3, *new_shape), np.float32)
    params = []
    pad = np.float32(PAD_VALUE) * _SCALE
    for i, img in enumerate(images):
        p = letterbox_params(img.shape[:2], new_shape)
        if (img.shape[1], img.shape[0]) != p.new_unpad:
            img = cv2.resize(img, p.new_unpad, interpolation=cv2.INTER_LINEAR)
        w, h = p.new_unpad
        dst = out[i]
        dst[:, : p.top] = pad
        dst[:, p.top + h :] = pad
        dst[:, p.top : p.top + h, : p.left] = pad
        dst[:, p.top : p.top + h, p.left + w :] = pad
        _planes_into(img, dst[:, p.top : p.top + h, p.left : p.left + w])
        params.append(p)
    return out, params
