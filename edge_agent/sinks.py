"""Where finished frames go: JSON Lines file, stdout, HTTP webhook, annotated images.

Sinks receive FrameResults in frame order from one thread. A sink that fails logs and
counts the failure; it never stops the agent.

>>> sink = make_sink("jsonl:/tmp/edge-agent-doctest.jsonl")
>>> type(sink).__name__
'JsonlSink'
>>> sink.close()
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from pathlib import Path
from typing import IO

from yolo_edge.errors import ConfigError

from .frames import FrameResult
from .protocols import Sink

__all__ = ["Sink", "JsonlSink", "StdoutSink", "WebhookSink", "AnnotatedSink", "make_sink"]

logger = logging.getLogger(__name__)


class JsonlSink:
    wants_images = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = self.path.open("w", encoding="utf-8")

    def emit(self, result: FrameResult) -> None:
        self._f.write(json.dumps(result.to_dict()) + "\n")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class StdoutSink:
    wants_images = False

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def emit(self, result: FrameResult) -> None:
        stream = self._stream or sys.stdout
        stream.write(json.dumps(result.to_dict()) + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class WebhookSink:
    """POSTs each result as JSON from a background thread; a full queue drops deliveries (counted)."""

    wants_images = False

    def __init__(self, url: str, *, timeout: float = 2.0, max_queue: int = 1000, session=None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook sink needs an http(s) URL, got {url!r}")
        import requests

        self.url = url
        self.timeout = timeout
        self.failed = 0
        self.overflowed = 0
        self._session = session or requests.Session()
        self._q: queue.Queue = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._loop, name="edge-agent-webhook", daemon=True)
        self._thread.start()

    def emit(self, result: FrameResult) -> None:
        try:
            self._q.put_nowait(result.to_dict())
        except queue.Full:
            self.overflowed += 1

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            try:
                self._session.post(self.url, json=item, timeout=self.timeout).raise_for_status()
            except Exception as exc:  # a webhook outage must not stop detection
                self.failed += 1
                logger.warning("webhook %s failed: %s", self.url, exc)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=self.timeout + 1)


class AnnotatedSink:
    """Writes ``<seq>.jpg`` with boxes drawn for answered frames (the runner keeps images for it)."""

    wants_images = True

    def __init__(self, directory: str | Path, *, quality: int = 85) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quality = quality

    def emit(self, result: FrameResult) -> None:
        if result.image is None or result.detections is None:
            return
        import cv2

        canvas = result.detections.draw(result.image)
        label = f"#{result.seq} {result.outcome} {1000 * result.latency_s:.0f} ms"
        cv2.putText(canvas, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(canvas, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imwrite(str(self.dir / f"{result.seq:06d}.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, self.quality])

    def close(self) -> None:
        pass


def make_sink(spec: str) -> Sink:
    """``stdout`` | ``jsonl:PATH`` | ``webhook:URL`` | ``annotated:DIR``."""
    kind, _, arg = spec.partition(":")
    if kind == "stdout" and not arg:
        return StdoutSink()
    if kind == "jsonl" and arg:
        return JsonlSink(arg)
    if kind == "webhook" and arg:
        return WebhookSink(arg)
    if kind == "annotated" and arg:
        return AnnotatedSink(arg)
    raise ConfigError(f"bad sink {spec!r}: use stdout, jsonl:PATH, webhook:URL or annotated:DIR")
