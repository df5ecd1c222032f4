"""A pipelined stream of frames through one :class:`~yolo_edge.Detector`.

``Detector.stream(frames)`` runs three stages at once, so that a camera or a folder is
detected at the model's rate instead of at decode + letterbox + model + NMS::

    prepare thread     next(frames), decode, letterbox        --queue-->
    inference thread   backend.run(blob)                       --queue-->
    your thread        decode boxes + NMS, yield the result

Both queues hold at most ``queue_size`` frames and each thread one more, so at most
``2 * queue_size + 2`` frames are taken from ``frames`` ahead of the last result you got:
a fast source cannot fill memory.
Results come out in input order and equal ``detector(frame)`` on each frame exactly
(the same batch-of-one model call, the same pure letterbox and NMS).

Errors:

- a frame that cannot be read (:class:`~yolo_edge.errors.ImageError`, or the error an
  :class:`yolo_edge.inputs.Frame` carries) is raised at its place in the order, after
  the results of every earlier frame, and ends the stream (``errors="raise"``, the
  default, as ``detector(frame)`` would); with ``errors="yield"`` it comes as a
  :class:`StreamResult` whose ``error`` is set and ``detections`` is None, and the
  stream goes on (a folder with one damaged file);
- anything else (the model failing, the ``frames`` iterable itself raising) is raised
  to the consumer at its place, and ends the stream.

The stream is a generator: leaving the loop early (``break``, an exception, dropping it)
closes it, which stops and joins its two threads; ``close()`` (or
``contextlib.closing``) does it at a point of your choosing. ``frames`` is iterated in
the prepare thread, and a generator given as ``frames`` is closed there, so a video
opened inside it is released.

``inference_cpus`` / ``prepare_cpus`` pin the two threads to CPU cores (Linux): with a
``Detector(threads=1)`` the model then has a core of its own and decoding happens on the
others. onnxruntime runs a single-thread session entirely in the calling thread; with more
intra-op threads its pool threads keep the affinity they were created with.

>>> from yolo_edge import Detector, samples
>>> photos = [samples.path("bus.jpg"), b"not an image", samples.path("zidane.jpg")]
>>> for r in Detector().stream(photos, errors="yield"):
...     print(r.index, r.detections if r.ok else type(r.error).__name__)
0 Detections(5: 4 person, 1 bus)
1 ImageDecodeError
2 Detections(5: 3 person, 2 tie)
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator, Literal

import numpy as np

from .errors import ConfigError, ImageError, YoloEdgeError
from .image import Channels, load_image
from .inputs import Frame
from .postprocess import postprocess
from .preprocess import LetterboxParams, make_batch
from .remote.wire import short_repr
from .types import Detections

if TYPE_CHECKING:
    from .detector import Detector, StageTimings

__all__ = ["StreamResult", "ErrorMode", "run_stream", "THREAD_PREFIX"]

log = logging.getLogger(__name__)

ErrorMode = Literal["raise", "yield"]
#: Names of the stream's threads start with this.
THREAD_PREFIX = "yolo-edge-stream"
#: How long ``close()`` waits for the prepare thread stuck in a slow ``next(frames)``.
_JOIN_TIMEOUT_S = 5.0
#: How often a blocked thread looks whether the stream was closed.
_POLL_S = 0.05


@dataclass(frozen=True)
class StreamResult:
    """One frame's outcome: its detections, or why it could not be read.

    ``index`` is the frame's position in the input, ``source`` the item as given (a path,
    bytes, an array, an :class:`yolo_edge.inputs.Frame`), ``image`` the BGR frame as
    decoded (None when it could not be read), ``timings`` this frame's stage times.
    """

    index: int
    source: Any
    detections: Detections | None
    image: np.ndarray | None
    timings: "StageTimings"
    error: YoloEdgeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Options:
    conf: float
    iou: float
    max_det: int
    classes: list[int] | None


class _Item:
    """A frame on its way through the pipeline (mutable: each stage fills in its part)."""

    __slots__ = ("index", "source", "image", "blob", "params", "pred", "error", "decode_s", "prepare_s", "infer_s")

    def __init__(self, index: int, source: Any) -> None:
        self.index, self.source = index, source
        self.image: np.ndarray | None = None
        self.blob: np.ndarray | None = None
        self.params: LetterboxParams | None = None
        self.pred: np.ndarray | None = None
        self.error: YoloEdgeError | None = None
        self.decode_s = self.prepare_s = self.infer_s = 0.0


@dataclass(frozen=True)
class _Failed:
    """An exception that ends the stream, carried to the consumer at its place in the order."""

    exc: BaseException


_END = object()

# Pipelines whose threads run. At interpreter exit a thread still inside onnxruntime would
# abort the process, so an exit hook (registered on first use, never at import) closes
# the pipelines of streams still held, never exhausted nor closed.
_live: "weakref.WeakSet[_Pipeline]" = weakref.WeakSet()
_live_lock = threading.Lock()
_exit_hook = False


def _close_live() -> None:
    with _live_lock:
        pipelines = list(_live)
    for p in pipelines:
        p.close()


def check_cpus(cpus: Any, name: str) -> frozenset[int] | None:
    """None, or ids of CPUs of this machine (Linux only; the cpuset is checked when a thread is pinned)."""
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError(f"{name} pins a thread to CPU cores, which needs Linux (os.sched_setaffinity); leave it None here")
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Collection) or not cpus or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in cpus):
        raise ConfigError(f"{name} must be a non-empty set of CPU ids like {{0}} or [2, 3], got {short_repr(cpus)}")
    chosen = frozenset(int(c) for c in cpus)
    count = os.cpu_count() or 1
    if not all(0 <= c < count for c in chosen):
        raise ConfigError(f"{name} {sorted(chosen)} names CPUs this machine does not have: it has CPUs 0..{count - 1}")
    return chosen


class _Pipeline:
    """The two threads and their queues. Holds no reference to the consumer's generator,
    so dropping the generator closes it (and with it the pipeline)."""

    def __init__(self, detector: "Detector", frames: Iterable[Any], options: _Options, *, channels: Channels,
                 queue_size: int, inference_cpus: frozenset[int] | None, prepare_cpus: frozenset[int] | None) -> None:
        self.backend, self.imgsz, self.max_pixels = detector.backend, detector.info.imgsz, detector.max_pixels
        self.source = iter(frames)  # nothing runs yet: a generator's body runs in the prepare thread
        self.channels = channels
        self.prepared: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.results: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._prepare_loop, args=(prepare_cpus,), name=f"{THREAD_PREFIX}-prepare", daemon=True),
            threading.Thread(target=self._infer_loop, args=(inference_cpus,), name=f"{THREAD_PREFIX}-infer", daemon=True),
        ]

    def start(self) -> None:
        global _exit_hook
        with _live_lock:
            if not _exit_hook:
                atexit.register(_close_live)
                _exit_hook = True
            _live.add(self)
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Stop both threads and wait for them (the model's current run finishes first)."""
        self.stop.set()
        with _live_lock:
            _live.discard(self)
        for q in (self.prepared, self.results):  # free the frames held, and wake a blocked put at once
            _drain(q)
        me = threading.current_thread()
        for t in self.threads:
            if t is me or not t.is_alive():
                continue
            t.join(_JOIN_TIMEOUT_S)
            if t.is_alive():
                log.warning("%s is still inside a call to the frame source or the model after %.0f s; it ends "
                            "when that call returns", t.name, _JOIN_TIMEOUT_S)

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    def _prepare_loop(self, cpus: frozenset[int] | None) -> None:
        source = self.source
        try:
            _pin(cpus)
            index = 0
            while not self.stop.is_set():
                try:
                    item = next(source)
                except StopIteration:
                    break
                if not self._put(self.prepared, self._prepare(index, item)):
                    return
                index += 1
            self._put(self.prepared, _END)
        except BaseException as exc:  # noqa: BLE001 - the source or letterbox failed: the consumer raises it
            self._put(self.prepared, _Failed(exc))
        finally:
            if isinstance(source, Generator):
                source.close()  # its finally blocks (a video's release) run here, in the thread that ran it

    def _prepare(self, index: int, source: Any) -> _Item:
        item = _Item(index, source)
        t0 = time.perf_counter()
        try:
            if isinstance(source, Frame):  # yolo_edge.inputs: read already, or failed to read
                if source.error is not None:
                    raise source.error
                image = load_image(source.image, max_pixels=self.max_pixels)
            else:
                image = load_image(source, channels=self.channels, max_pixels=self.max_pixels)
        except ImageError as exc:
            item.error = exc
            return item
        except YoloEdgeError as exc:
            if not isinstance(source, Frame):
                raise
            item.error = exc  # a Frame's own error: that file, not the stream
            return item
        t1 = time.perf_counter()
        blob, (params,) = make_batch([image], self.imgsz)
        item.image, item.blob, item.params = image, blob, params
        item.decode_s, item.prepare_s = t1 - t0, time.perf_counter() - t1
        return item

    def _infer_loop(self, cpus: frozenset[int] | None) -> None:
        try:
            _pin(cpus)
            run = self.backend.run
            while True:
                item = self._get(self.prepared)
                if isinstance(item, _Item) and item.blob is not None:
                    t0 = time.perf_counter()
                    item.pred = run(item.blob)[0][0]
                    item.blob = None  # the float blob is not needed past the model
                    item.infer_s = time.perf_counter() - t0
                if not self._put(self.results, item) or not isinstance(item, _Item):
                    return  # closed, the end, or a failure passed on
        except BaseException as exc:  # noqa: BLE001 - the model failed: the consumer raises it
            self._put(self.results, _Failed(exc))


def _pin(cpus: frozenset[int] | None) -> None:
    if cpus is None:
        return
    try:
        os.sched_setaffinity(0, cpus)  # Linux: pid 0 is the calling thread, not the process
    except OSError as exc:  # a CPU outside this container's cpuset, say
        raise ConfigError(f"could not pin {threading.current_thread().name} to CPUs {sorted(cpus)}: {exc}; "
                          f"this thread may use {sorted(os.sched_getaffinity(0))}") from exc


def _drain(q: queue.Queue[Any]) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def run_stream(detector: "Detector", frames: Iterable[Any], options: _Options, *, channels: Channels,
               errors: ErrorMode, queue_size: int, inference_cpus: frozenset[int] | None,
               prepare_cpus: frozenset[int] | None) -> Iterator[StreamResult]:
    """The generator behind :meth:`Detector.stream` (arguments checked there)."""
    from .detector import StageTimings

    pipeline = _Pipeline(detector, frames, options, channels=channels, queue_size=queue_size,
                         inference_cpus=inference_cpus, prepare_cpus=prepare_cpus)
    names, fmt = detector.info.names, detector.info.output_format
    pipeline.start()
    try:
        while True:
            item = pipeline.results.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            if item.error is not None:
                if errors == "raise":
                    raise item.error
                yield StreamResult(item.index, item.source, None, None, StageTimings(decode_s=item.decode_s), item.error)
                continue
            t0 = time.perf_counter()
            xyxy, score, cls = postprocess(item.pred, fmt, item.params, conf=options.conf, iou=options.iou,
                                           max_det=options.max_det, classes=options.classes)
            dets = Detections(xyxy, score, cls, names, item.params.orig_shape)
            timings = StageTimings(item.decode_s, item.prepare_s, item.infer_s, time.perf_counter() - t0)
            yield StreamResult(item.index, item.source, dets, item.image, timings)
    finally:
        pipeline.close()
