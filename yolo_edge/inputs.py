"""What ``yolo-edge detect`` reads: image files, folders, glob patterns and video files.

:func:`expand` turns command-line arguments into files (a folder gives its images and
videos, a pattern its matches, both sorted); :func:`frames` reads them one frame at a
time, a video every ``every``-th frame, and turns what cannot be read into an error item
instead of stopping the run.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for n in ("b.jpg", "a.png", "notes.txt"):
...     _ = (d / n).write_bytes(b"")
>>> [p.name for p in expand([str(d)])[0]]
['a.png', 'b.jpg']
>>> [p.name for p in expand([str(d / "*.jpg")])[0]], expand([str(d / "*.gif")])[1]
(['b.jpg'], [('...*.gif', 'no file matches this pattern')])
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import ImageDecodeError, YoloEdgeError
from .image import load_image

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Frame", "expand", "frames", "count_frames"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass(frozen=True)
class Frame:
    """One image to detect on (``image``), or why a file could not be read (``error``)."""

    source: Path
    index: int | None = None  # frame number in a video; None for an image file
    time_s: float | None = None  # position in a video
    image: np.ndarray | None = None
    error: YoloEdgeError | None = None

    @property
    def stem(self) -> str:
        """A file name stem unique per frame: ``bus``, or ``clip_000042`` for a video frame."""
        return self.source.stem if self.index is None else f"{self.source.stem}_{self.index:06d}"


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def expand(args: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by ``args``, in order, and ``(argument, problem)`` for those naming none."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
            if not found:
                problems.append((arg, f"folder has no image or video files ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"))
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(arg):  # quoted, or a shell that does not expand patterns
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(arg), recursive=True) if Path(p).is_file())
            if not found:
                problems.append((arg, "no file matches this pattern"))
            files += found
        else:
            problems.append((arg, "no such file or folder"))
    return files, problems


def count_frames(files: Sequence[Path], every: int = 1) -> int:
    """How many frames :func:`frames` will give (video frame counts are the container's own)."""
    import cv2

    total = 0
    for f in files:
        if f.suffix.lower() in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(str(f))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            cap.release()
            total += max(1, -(-n // every))
        else:
            total += 1
    return total


def frames(files: Sequence[str | os.PathLike], *, every: int = 1) -> Iterator[Frame]:
    """Each image file once, and every ``every``-th frame of each video file.

    A generator: files are read as it is iterated (by :meth:`yolo_edge.Detector.stream`,
    in its decoding thread), and a video is released when the generator is closed.
    """
    for path in map(Path, files):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video(path, every)
            continue
        try:
            yield Frame(path, image=load_image(path))
        except YoloEdgeError as exc:
            yield Frame(path, error=exc)


def _video(path: Path, every: int) -> Iterator[Frame]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            yield Frame(path, error=ImageDecodeError(
                f"cannot open video {path}: OpenCV could not read it (unsupported codec or a damaged file)"))
            return
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        index = 0
        produced = False
        while True:
            if index % every:
                if not cap.grab():  # skipped frames are not decoded
                    break
            else:
                ok, image = cap.read()
                if not ok:
                    break
                produced = True
                yield Frame(path, index=index, time_s=round(index / fps, 3) if fps > 0 else None, image=image)
            index += 1
        if not produced:
            yield Frame(path, error=ImageDecodeError(f"video {path} has no readable frames"))
    finally:
        cap.release()
