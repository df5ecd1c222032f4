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
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from yolo_edge.errors import ConfigError

__all__ = ["make_clip", "measure_local_fps", "photos", "result_lines", "lost_to"]

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


def lost_to(summary: dict) -> tuple[int, str]:
    """How many frames were not answered within budget, and why: ``(38, "cloud_waking 20, late (deadline) 18")``."""
    reasons = Counter(summary["drops"])
    reasons.update({f"late ({why})": n for why, n in summary["late"].items()})
    lost = summary["outcomes"]["dropped"] + summary["outcomes"]["late"]
    return lost, ", ".join(f"{why} {n}" for why, n in reasons.most_common()) or "nothing"


def result_lines(summary: dict, *, fps: float, local_fps: float) -> list[str]:
    """The demo's last lines, read like a result: local alone X%, hybrid Y%, what the cloud carried, what was lost.

    >>> s = {"frames": 400, "within_budget_share": 0.75, "outcomes": {"local": 190, "cloud": 110, "late": 10,
    ...      "dropped": 90}, "drops": {"local_busy": 90}, "late": {"deadline": 10}, "budget_ms": 500.0,
    ...      "baseline": {"within_budget_share": 0.5, "within_budget": 200, "gain_frames": 100, "gain_points": 25.0}}
    >>> print("\\n".join(result_lines(s, fps=20.0, local_fps=10.0)))
    result: 400 frames at 20.0 fps (2.0x the local capacity of 10.0 fps), budget 500 ms
      local alone 50.0%, hybrid 75.0%: +100 frames (+25.0 points) within budget
      the cloud carried 110 frames; 100 frames lost to local_busy 90, late (deadline) 10
    """
    base = summary["baseline"]
    lost, why = lost_to(summary)
    head = (f"result: {summary['frames']} frames at {fps:.1f} fps ({fps / local_fps:.1f}x the local capacity of "
            f"{local_fps:.1f} fps), budget {summary['budget_ms']:.0f} ms")
    if "within_budget_share" not in base:  # no local inference measured: nothing to compare with
        alone = f"  local alone: not known ({base.get('unavailable', 'no baseline')}); hybrid " \
                f"{summary['within_budget_share']:.1%} within budget"
    else:
        alone = (f"  local alone {base['within_budget_share']:.1%}, hybrid {summary['within_budget_share']:.1%}: "
                 f"{base['gain_frames']:+d} frames ({base['gain_points']:+.1f} points) within budget")
    lines = [head, alone, f"  the cloud carried {summary['outcomes']['cloud']} frames; {lost} frames lost to {why}"]
    fast = base.get("at_measured_capacity")
    if fast and base.get("local_service_p50_ms"):  # the local worker was slower during the run than alone
        lines.append(f"  (local inference took {base['local_service_p50_ms']:.0f} ms p50 during the run, beside the "
                     f"cloud client; at the {fast['local_service_ms']:.0f} ms measured before it, local alone: "
                     f"{fast['within_budget_share']:.1%})")
    return lines
