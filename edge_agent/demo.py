"""The hybrid demo: a sample clip made from real photos, the local service as the cloud,
the agent at twice the local capacity, and the summary.

>>> import tempfile, os
>>> p = make_clip(os.path.join(tempfile.mkdtemp(), "c.avi"), frames=4, fps=10, size=(160, 120))
>>> p.stat().st_size > 0
True
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from yolo_edge.errors import ConfigError

__all__ = ["make_clip", "measure_local_fps", "photos"]

logger = logging.getLogger(__name__)


def photos() -> list[Path]:
    """The pinned sample photos (bus.jpg, zidane.jpg), fetched if missing."""
    from yolo_edge.models.fetch import sample_images

    return sample_images()


def make_clip(path: str | Path, *, frames: int = 240, fps: float = 30.0, size: tuple[int, int] = (960, 540),
              sources: Sequence[str | Path] | None = None) -> Path:
    """Write an MJPG/AVI clip panning and zooming slowly over real photos."""
    import cv2

    from yolo_edge.image import load_image

    w, h = size
    imgs = [load_image(p) for p in (sources or photos())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise ConfigError(f"cannot write {path}: OpenCV has no MJPG writer here")
    per = max(1, frames // len(imgs))
    try:
        for i in range(frames):
            img = imgs[min(len(imgs) - 1, i // per)]
            t = (i % per) / per
            ih, iw = img.shape[:2]
            zoom = 1.0 - 0.3 * t  # crop shrinks: a slow zoom-in while panning right
            cw, ch = int(iw * zoom), int(ih * zoom)
            x0 = int((iw - cw) * t)
            y0 = (ih - ch) // 2
            writer.write(cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA))
    finally:
        writer.release()
    return path


def measure_local_fps(detector, image: np.ndarray, runs: int = 15) -> float:
    """Frames per second one local worker sustains on ``image`` (after a warm-up call)."""
    detector(image)
    start = time.perf_counter()
    for _ in range(runs):
        detector(image)
    return runs / (time.perf_counter() - start)
