"""Frame sources: video files and image folders (paced replay), live streams and cameras.

Every source yields :class:`SourceFrame` items. A frame the agent could not take in time
is still yielded, with ``dropped_reason`` set, so the agent counts it instead of losing it
silently. OpenCV opens streams lazily, inside the source, never at import time.

>>> frames = list(open_source([np.zeros((4, 4, 3), np.uint8)] * 3, realtime=False))
>>> [f.index for f in frames]
[0, 1, 2]
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from yolo_edge.errors import ConfigError, ImageDecodeError

from .core.frames import Reason

__all__ = ["SourceFrame", "open_source", "replay", "is_live", "LiveSource", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mjpg", ".mjpeg", ".m4v"}


@dataclass
class SourceFrame:
    image: Any
    captured_at: float
    index: int
    dropped_reason: Reason | None = None


def replay(images: Iterator[np.ndarray], *, fps: float | None, realtime: bool = True, max_frames: int | None = None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
           ) -> Iterator[SourceFrame]:
    """Pace ``images`` at ``fps`` like a camera: frame i is 'captured' at start + i / fps.

    A consumer that falls behind gets frames whose capture time lies in the past, so their
    age (and the policy's ``expired`` drops) shows it; the pace never slows down to wait.
    """
    start = clock()
    for i, img in enumerate(images):
        if max_frames is not None and i >= max_frames:
            return
        if realtime and fps:
            due = start + i / fps
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            yield SourceFrame(img, due, i)
        else:
            yield SourceFrame(img, clock(), i)


def _video_frames(path: str, loop: bool) -> tuple[Iterator[np.ndarray], float | None]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ConfigError(f"cannot open video {path!r}: not a readable video file (try an .avi/.mp4 OpenCV can decode)")
    native = cap.get(cv2.CAP_PROP_FPS) or None

    def gen() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if ok:
                    yield frame
                    continue
                if not loop:
                    return
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return gen(), (native if native and native > 0 else None)


def _folder_frames(folder: Path, loop: bool) -> Iterator[np.ndarray]:
    from yolo_edge.image import load_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"image folder {folder} holds no {sorted(IMAGE_SUFFIXES)} files")
    while True:
        for p in files:
            try:
                yield load_image(p)
            except ImageDecodeError as exc:
                logger.warning("skipping %s: %s", p, exc)
        if not loop:
            return


def is_live(spec: str) -> bool:
    """Whether a source spec is a live stream or camera (served as it comes) rather than a recording."""
    return (spec.isdigit() or spec.startswith(("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "/dev/video"))
            or "!" in spec)  # a GStreamer pipeline (Jetson: nvarguscamerasrc ! ... ! appsink)


def open_source(spec: Any, *, fps: float | None = None, realtime: bool = True, loop: bool = False,
                max_frames: int | None = None, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[SourceFrame]:
    """A frame iterator for a video file, image folder, stream URL, camera index or GStreamer
    pipeline; or a list of arrays (tests)."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return replay(iter(spec), fps=fps or 30.0, realtime=realtime, max_frames=max_frames, clock=clock, sleep=sleep)
    spec = str(spec)
    if is_live(spec):
        return iter(LiveSource(spec, max_frames=max_frames, clock=clock))
    path = Path(spec)
    if path.is_dir():
        return replay(_folder_frames(path, loop), fps=fps or 10.0, realtime=realtime, max_frames=max_frames,
                      clock=clock, sleep=sleep)
    if path.is_file():
        frames, native = _video_frames(spec, loop)
        return replay(frames, fps=fps or native or 30.0, realtime=realtime, max_frames=max_frames, clock=clock,
                      sleep=sleep)
    raise ConfigError(f"source {spec!r} is neither a file, a folder, a camera index, a stream URL "
                      "(rtsp://, http://) nor a GStreamer pipeline")


class LiveSource:
    """A live stream read on its own thread, with reconnect and backoff.

    The reader keeps only the newest frames (``buffer``); a frame pushed out before the
    agent took it is yielded as dropped (``stale_source``), so a slow consumer shows up
    in the counts rather than as silently growing lag. ``capture_factory(spec)`` returns an
    object with ``read() -> (ok, frame)``, ``isOpened()`` and ``release()``
    (``cv2.VideoCapture`` by default).
    """

    def __init__(self, spec: str, *, buffer: int = 2, max_frames: int | None = None,
                 backoff_s: float = 0.5, max_backoff_s: float = 10.0, max_reconnects: int | None = None,
                 capture_factory: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.max_frames = max_frames
        self.backoff_s, self.max_backoff_s, self.max_reconnects = backoff_s, max_backoff_s, max_reconnects
        self.capture_factory = capture_factory or _opencv_capture
        self.clock = clock
        self.reconnects = 0
        self.stale = 0
        self._buf: deque[SourceFrame] = deque()
        self._reports: deque[SourceFrame] = deque()  # frames pushed out unseen, in order
        self._maxlen = max(1, buffer)
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._index = 0

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def __iter__(self) -> Iterator[SourceFrame]:
        reader = threading.Thread(target=self._read_loop, name="edge-agent-source", daemon=True)
        reader.start()
        try:
            while True:
                with self._cv:
                    while not self._buf and not self._reports and not self._done:
                        self._cv.wait(0.1)
                    if self._reports:
                        item = self._reports.popleft()
                    elif self._buf:
                        item = self._buf.popleft()
                    else:
                        return
                yield item
        finally:
            self.stop()
            reader.join(timeout=2.0)

    def _push(self, item: SourceFrame) -> None:
        with self._cv:
            if len(self._buf) >= self._maxlen:
                # the consumer fell behind: the oldest waiting frame is reported, not shown
                old = self._buf.popleft()
                self.stale += 1
                self._reports.append(SourceFrame(None, old.captured_at, old.index, Reason.STALE_SOURCE))
            self._buf.append(item)
            self._cv.notify_all()

    def _read_loop(self) -> None:
        delay = self.backoff_s
        try:
            while not self._stop.is_set():
                cap = self.capture_factory(self.spec)
                if cap is None or not cap.isOpened():
                    if not self._retry(delay, "cannot open"):
                        return
                    delay = min(self.max_backoff_s, delay * 2)
                    continue
                delay = self.backoff_s
                try:
                    while not self._stop.is_set():
                        ok, frame = cap.read()
                        if not ok:
                            break
                        self._push(SourceFrame(frame, self.clock(), self._index))
                        self._index += 1
                        if self.max_frames is not None and self._index >= self.max_frames:
                            return
                finally:
                    cap.release()
                if not self._retry(delay, "lost"):
                    return
                delay = min(self.max_backoff_s, delay * 2)
        finally:
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def _retry(self, delay: float, what: str) -> bool:
        if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
            logger.error("stream %s %s; giving up after %d reconnects", self.spec, what, self.reconnects)
            return False
        self.reconnects += 1
        logger.warning("stream %s %s; reconnecting in %.1f s", self.spec, what, delay)
        return not self._stop.wait(delay)


def _opencv_capture(spec: str) -> Any:
    import cv2

    if spec.isdigit():
        return cv2.VideoCapture(int(spec))
    if "!" in spec:
        return cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(spec)
