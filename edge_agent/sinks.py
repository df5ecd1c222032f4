"""Where finished frames go: JSON Lines file, stdout, HTTP webhook, annotated images.

Sinks receive FrameResults in frame order from one thread. A sink never raises into the
agent and never loses a result silently: each one counts what became of every result it
was given (:class:`~edge_agent.core.delivery.SinkReport`: delivered, spooled, rejected, lost),
live through :meth:`Sink.report` (``/metrics``) and finally from :meth:`Sink.close` (the
summary and the exit code).

A sink is given as ``KIND[,OPTION[=VALUE]...][:TARGET]``:

    stdout
    jsonl:PATH                 appends to PATH, one result per line, written through
    jsonl,overwrite:PATH       starts PATH afresh
    webhook:URL                POSTs each result; undelivered ones wait in a spool file
    webhook,spool=PATH,timeout_s=2,drain_s=30:URL     (options: see WebhookOptions)
    webhook,spool="/data/cam 1,2/hook.jsonl":URL      a value with commas or colons, in double quotes
                                                      (a quote inside it written twice: "")
    annotated:DIR              DIR/<seq>.jpg with the boxes drawn, for answered frames

>>> import tempfile
>>> path = tempfile.mkdtemp() + "/results.jsonl"
>>> for run in range(2):  # a second run appends to the first one's results
...     sink = make_sink(f"jsonl:{path}")
...     sink.emit(FrameResult(seq=0, outcome="local", route="local", released_at=0.05))
...     print(sink.close().delivered, len(open(path).read().splitlines()))
1 1
1 2
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Iterable

from yolo_edge.errors import ConfigError

from .core.delivery import SinkReport
from .core.frames import FrameResult
from .protocols import Sink
from .sinkspec import split_spec, unquote
from .spool import write_line
from .webhook import WebhookOptions, WebhookSink, default_spool

__all__ = ["Sink", "SinkReport", "JsonlSink", "StdoutSink", "WebhookSink", "WebhookOptions", "AnnotatedSink",
           "SinkSpec", "make_sink", "open_webhook", "close_sinks"]

logger = logging.getLogger(__name__)

_SPECS = "stdout, jsonl[,overwrite]:PATH, webhook[,spool=PATH,...]:URL or annotated:DIR"


class _Counted:
    """Counts for the simple synchronous sinks; errors are logged once, then every 1000th."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._n = {"received": 0, "delivered": 0, "lost": 0, "skipped": 0}

    def _count(self, outcome: str) -> int:
        """One more result received, and what became of it; returns that outcome's count."""
        with self._lock:
            self._n["received"] += 1
            self._n[outcome] += 1
            return self._n[outcome]

    def _lose(self, result: FrameResult, exc: BaseException) -> None:
        n = self._count("lost")
        if n == 1 or n % 1000 == 0:
            logger.error("%s: result %d LOST: %s (%d lost so far)", self.name, result.seq, exc, n)

    def report(self) -> SinkReport:
        with self._lock:
            return SinkReport(name=self.name, **self._n)


class JsonlSink(_Counted):
    """One JSON object per result and line. Appends by default (``overwrite=True`` starts afresh).

    Each line goes to the file with one ``write()`` as it is emitted (a SIGKILL of the agent
    loses nothing that was emitted), and the file is fsync-ed at close.
    """

    wants_images = False

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        super().__init__(f"jsonl:{path}")
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, flags, 0o644)
            size = os.fstat(self._fd).st_size
            if size and not self._ends_clean(size):
                write_line(self._fd, b"\n")  # an earlier run's torn last line stays a line of its own
        except OSError as exc:
            raise ConfigError(f"cannot open {self.path} for results: {exc}") from exc

    def _ends_clean(self, size: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def emit(self, result: FrameResult) -> None:
        if self._fd is None:
            self._lose(result, RuntimeError("sink already closed"))
            return
        try:
            write_line(self._fd, (json.dumps(result.to_dict()) + "\n").encode())
        except (OSError, TypeError, ValueError) as exc:  # disk trouble, or a result JSON cannot hold
            self._lose(result, exc)
        else:
            self._count("delivered")

    def close(self) -> SinkReport:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError as exc:
                logger.error("%s: fsync at close failed: %s", self.name, exc)
            os.close(fd)
        return self.report()


class StdoutSink(_Counted):
    wants_images = False

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__("stdout")
        self._stream = stream

    def emit(self, result: FrameResult) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write(json.dumps(result.to_dict()) + "\n")
            stream.flush()
        except (OSError, TypeError, ValueError) as exc:  # a closed pipe or stream, or a result JSON cannot hold
            self._lose(result, exc)
        else:
            self._count("delivered")

    def close(self) -> SinkReport:
        return self.report()


class AnnotatedSink(_Counted):
    """Writes ``<seq>.jpg`` with boxes drawn for answered frames; dropped frames are skipped (counted).

    Drawing and JPEG encoding take milliseconds, so they run on the sink's own thread: the
    agent hands a frame over and moves on. Annotated frames are a viewing aid, so when the
    writer falls ``max_queue`` frames behind, further frames are skipped (counted, logged once).
    """

    wants_images = True

    def __init__(self, directory: str | Path, *, quality: int = 85, max_queue: int = 64) -> None:
        super().__init__(f"annotated:{directory}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quality = quality
        self._q: queue.Queue = queue.Queue(max_queue)
        self._warned = False
        self._thread = threading.Thread(target=self._loop, name="edge-agent-annotate", daemon=True)
        self._thread.start()

    def emit(self, result: FrameResult) -> None:
        if result.image is None or result.detections is None:
            self._count("skipped")
            return
        try:
            self._q.put_nowait((result, result.image))  # the agent drops its reference once emitted
        except queue.Full:
            self._count("skipped")
            if not self._warned:
                self._warned = True
                logger.warning("%s: the writer is %d frames behind; skipping annotated frames until it catches up",
                               self.name, self._q.maxsize)

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            self._write(*item)

    def _write(self, result: FrameResult, image) -> None:
        import cv2

        path = self.dir / f"{result.seq:06d}.jpg"
        try:
            canvas = result.detections.draw(image)
            label = f"#{result.seq} {result.outcome.value} {1000 * result.latency_s:.0f} ms"
            cv2.putText(canvas, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(canvas, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
            written = cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        except (cv2.error, OSError, ValueError) as exc:
            self._lose(result, exc)
            return
        if written:
            self._count("delivered")
        else:
            self._lose(result, OSError(f"cv2.imwrite could not write {path}"))

    def close(self) -> SinkReport:
        self._q.put(None)
        self._thread.join(timeout=60)
        return self.report()


@dataclass(frozen=True)
class SinkSpec:
    """``KIND[,OPTION[=VALUE]...][:TARGET]`` taken apart (options before the first colon).

    >>> SinkSpec.parse("webhook,spool=/var/spool/hook.jsonl,timeout_s=2:http://127.0.0.1:9000/in")
    SinkSpec(kind='webhook', target='http://127.0.0.1:9000/in', options=(('spool', '/var/spool/hook.jsonl'), ('timeout_s', '2')))
    """

    kind: str
    target: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "SinkSpec":
        """Options end at the first colon outside double quotes; a quoted value may hold commas and colons.

        >>> SinkSpec.parse('webhook,spool="/data/cam 1,2/hook.jsonl":http://127.0.0.1:9000/in').options
        (('spool', '/data/cam 1,2/hook.jsonl'),)
        >>> SinkSpec.parse('webhook,spool="/a/say ""hi"".jsonl":http://h/in').options  # "" is one quote
        (('spool', '/a/say "hi".jsonl'),)
        """
        if not isinstance(spec, str):
            raise ConfigError(f"a sink is a string like {_SPECS}, got {spec!r}")
        parts, target = split_spec(spec)
        kind, *opts = parts
        pairs = []
        for opt in opts:
            name, eq, value = opt.partition("=")
            if not name:
                raise ConfigError(f"bad sink {spec!r}: empty option; use {_SPECS}")
            pairs.append((name, unquote(spec, value) if eq else "true"))
        return cls(kind, target, tuple(pairs))

    def typed(self, cls: type, **extra: object):
        """The options as ``cls`` (a frozen dataclass), each converted to its field's type."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, object] = dict(extra)
        for name, raw in self.options:
            if name not in known:
                raise ConfigError(f"unknown {self.kind} sink option {name!r}; known: {sorted(known)}")
            values[name] = _convert(self.kind, name, raw, str(known[name].type))
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad {self.kind} sink options: {exc}") from exc


def _convert(kind: str, name: str, raw: str, type_name: str) -> object:
    if type_name == "bool":
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{kind} sink option {name} takes true or false, got {raw!r}")
    if type_name in ("float", "int"):
        try:
            return float(raw) if type_name == "float" else int(raw)
        except ValueError:
            raise ConfigError(f"{kind} sink option {name} takes a number, got {raw!r}") from None
    if not raw:
        raise ConfigError(f"{kind} sink option {name} needs a value ({name}=...)")
    return raw


@dataclass(frozen=True, kw_only=True)
class JsonlOptions:
    overwrite: bool = False  # start the file afresh instead of appending


def make_sink(spec: str, *, spool_dir: str | Path | None = None) -> Sink:
    """A sink from its spec (see the module docstring); ``spool_dir`` holds webhook spools not named in the spec."""
    s = SinkSpec.parse(spec)
    if s.kind == "stdout" and not s.target and not s.options:
        return StdoutSink()
    if s.kind == "jsonl" and s.target:
        return JsonlSink(s.target, overwrite=s.typed(JsonlOptions).overwrite)
    if s.kind == "webhook" and s.target:
        return open_webhook(s, spool_dir=spool_dir)
    if s.kind == "annotated" and s.target and not s.options:
        return AnnotatedSink(s.target)
    raise ConfigError(f"bad sink {spec!r}: use {_SPECS}")


def open_webhook(spec: SinkSpec, *, spool_dir: str | Path | None = None, **changes: float) -> WebhookSink:
    """The webhook sink of ``spec``, its spool defaulting to one per URL under ``spool_dir``;
    ``changes`` override options (``edge-agent replay-spool --drain-s``)."""
    if spec.kind != "webhook" or not spec.target:
        raise ConfigError(f"{spec.kind}:{spec.target}: only webhook sinks have a spool; use webhook[,spool=PATH]:URL")
    options = dataclasses.replace(spec.typed(WebhookOptions), **changes)
    if options.spool is None and spool_dir is not None:
        options = dataclasses.replace(options, spool=str(default_spool(spool_dir, spec.target)))
    return WebhookSink(spec.target, options)


def close_sinks(sinks: Iterable[Sink]) -> list[SinkReport]:
    """Close every sink, even if one fails; a sink that raises is reported with its error."""
    reports = []
    for s in sinks:
        try:
            reports.append(s.close())
        except Exception as exc:  # a sink of someone else's making: its counts cannot be trusted now
            logger.exception("closing sink %s failed", s.name)
            reports.append(SinkReport(name=s.name, error=f"{type(exc).__name__}: {exc}"))
    return reports
