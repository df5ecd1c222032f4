"""The webhook sink: POST each result as JSON, in order, and never lose one.

Every result is first appended to a local spool file (:mod:`edge_agent.spool`), then
delivered from there by a background thread: the spool is the queue, so memory stays
bounded however long the receiver is slow or down, and a SIGKILL of the agent loses
nothing it had emitted. A failed POST (connection error, timeout, 5xx, 429, 401/403/404)
is retried with exponential backoff and jitter, or after the receiver's ``Retry-After``;
the results behind it wait their turn. At close the sink keeps delivering for up to
``drain_s``; what is left stays in the spool, and the next run with the same spool (or
``edge-agent replay-spool``) delivers it first, in order. A result the receiver refuses
as invalid (400, 413, 422) goes to ``<spool>.rejected.jsonl`` and is counted.

Each POST carries ``Idempotency-Key: <run>-<seq>``: after a crash the one result whose
delivery was under way is sent again, and a receiver can recognise it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import random
import shlex
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from yolo_edge.remote import transport
from yolo_edge.errors import ConfigError

from .core.delivery import SinkReport
from .core.frames import FrameResult
from .sinkspec import quote_value
from .spool import Spool, SpoolEntry, write_line

__all__ = ["WebhookOptions", "WebhookSink", "backoff_delay", "parse_retry_after", "public_url"]

logger = logging.getLogger(__name__)

#: answers that say this one result is bad; anything else may pass on a later try
REJECT_STATUSES = frozenset({400, 413, 422})
#: the statuses whose Retry-After is honoured
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: how often a receiver that stays down is reported in the log
_NAG_EVERY_S = 30.0


@dataclass(frozen=True, kw_only=True)
class WebhookOptions:
    """Settings of one webhook sink (``webhook,NAME=VALUE,...:URL`` on the command line)."""

    spool: str | None = None  # the spool file; make_sink's default: <spool_dir>/webhook-<host>-<port>-<hash>.jsonl
    timeout_s: float = 5.0  # per POST
    backoff_s: float = 0.5  # first retry delay, doubled per consecutive failure
    max_backoff_s: float = 30.0
    drain_s: float = 10.0  # at close: keep delivering for up to this long, then leave the rest spooled
    max_spool_mb: float = 512.0  # undelivered results kept on disk at most; beyond it results are lost (counted)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_s", "max_backoff_s", "max_spool_mb"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"webhook option {name} must be > 0, got {getattr(self, name)!r}")
        if not self.drain_s >= 0:
            raise ConfigError(f"webhook option drain_s must be >= 0, got {self.drain_s!r}")


class Attempt(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver may take it later
    REJECTED = "rejected"  # the receiver refuses this result for good


@dataclass(frozen=True)
class _Answer:
    attempt: Attempt
    detail: str = ""
    status: int | None = None
    retry_after_s: float | None = None


def backoff_delay(failures: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``failures`` (>= 1): the SDK transport's capped, jittered backoff.

    >>> backoff_delay(1, 0.5, 30.0, random.Random(0)) <= 0.5 <= backoff_delay(10, 0.5, 30.0) * 2
    True
    """
    return transport.backoff_delay(base_s, min(failures - 1, 30), max_s, rand=(rng or random).random())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (the SDK transport's reading: delta-seconds or an HTTP date),
    at most an hour; None if absent or unreadable.

    >>> parse_retry_after("2"), parse_retry_after("soon"), parse_retry_after("99999")
    (2.0, None, 3600.0)
    """
    seconds = transport.parse_retry_after(value, now=now)
    return None if seconds is None else min(3600.0, seconds)


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment (safe in logs and metrics labels).

    >>> public_url("https://user:secret@hooks.example.com:8443/in?token=abc")
    'https://hooks.example.com:8443/in'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookSink:
    """POSTs each result as JSON to ``url`` through a spool; see the module docstring."""

    wants_images = False

    def __init__(self, url: str, options: WebhookOptions, *, session=None) -> None:
        if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
            raise ConfigError(f"webhook sink needs an http(s) URL with a host, got {url!r}")
        if not options.spool:
            raise ConfigError("webhook sink needs a spool file for what it cannot deliver: pass spool=PATH "
                              "(webhook,spool=PATH:URL) or a spool directory (--spool-dir)")
        import requests  # only the webhook sink needs it at import

        self.url = url
        self.options = options
        self.name = f"webhook:{public_url(url)}"
        self._spool = Spool(options.spool, max_pending_bytes=int(options.max_spool_mb * (1 << 20)))
        self._rejected_path = self._spool.path.with_name(self._spool.path.stem + ".rejected.jsonl")
        self._rejected_fd: int | None = None
        self._own_session = session is None
        self._session = session or requests.Session()
        self._run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._cv = threading.Condition()
        self._closing = self._closed = False
        self._deadline = 0.0
        self._last_nag = 0.0
        self._earlier = self._spool.pending  # spooled by earlier runs: delivered first
        self._received = self._delivered = self._replayed = self._rejected = self._lost = self._retries = 0
        if self._earlier:
            logger.warning("%s: %d result(s) from an earlier run wait in spool %s; delivering them first",
                           self.name, self._earlier, self._spool.path)
        self._thread = threading.Thread(target=self._loop, name="edge-agent-webhook", daemon=True)
        self._thread.start()

    # -- producer side -----------------------------------------------------------------
    def emit(self, result: FrameResult) -> None:
        try:
            stored = self._spool.append({"key": f"{self._run}-{result.seq}", "result": result.to_dict()})
        except (TypeError, ValueError):  # a result that is not JSON-serialisable (a custom meta value)
            logger.exception("%s: result %d cannot be written as JSON", self.name, result.seq)
            stored = False
        with self._cv:
            self._received += 1
            if stored:
                self._cv.notify_all()
                return
            self._lost += 1
            lost = self._lost
        if lost == 1 or lost % 1000 == 0:
            logger.error("%s: result %d LOST: the spool %s is closed, full (max_spool_mb=%g) or not writable "
                         "(%d lost so far)", self.name, result.seq, self._spool.path, self.options.max_spool_mb, lost)

    def report(self) -> SinkReport:
        with self._cv:
            return SinkReport(name=self.name, received=self._received, delivered=self._delivered,
                              replayed=self._replayed, spooled=self._spool.pending, rejected=self._rejected,
                              lost=self._lost, retries=self._retries, spool=str(self._spool.path),
                              rejected_file=str(self._rejected_path) if self._rejected else None)

    def close(self) -> SinkReport:
        """Deliver for up to ``drain_s``, keep the rest in the spool, and say what became of everything."""
        with self._cv:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + self.options.drain_s
                self._cv.notify_all()
            waiting = self._spool.pending
        if waiting and self._thread.is_alive():
            logger.info("%s: delivering %d waiting result(s) for up to %g s", self.name, waiting, self.options.drain_s)
        self._thread.join(self.options.drain_s + self.options.timeout_s + 1.0)
        with self._cv:
            already = self._closed
            self._closed = True  # a POST still under way is not recorded: its result stays spooled
            self._cv.notify_all()
        if already:
            return self.report()
        left = self._spool.close()
        if self._rejected_fd is not None:
            os.fsync(self._rejected_fd)
            os.close(self._rejected_fd)
        if self._own_session:
            self._session.close()
        if left:
            url = self.url if public_url(self.url) == self.url else "URL"  # never print a secret
            spec = shlex.quote(f"webhook,spool={quote_value(str(self._spool.path))}:{url}")
            logger.warning("%s: %d result(s) not delivered; kept in spool %s. The next run with this sink "
                           "delivers them first, or run: edge-agent replay-spool %s",
                           self.name, left, self._spool.path, spec)
        return self.report()

    # -- delivery thread ---------------------------------------------------------------
    def _loop(self) -> None:
        failures = 0
        while (entry := self._next_entry()) is not None:
            answer = self._post(entry)
            if answer.attempt is Attempt.RETRY:
                failures += 1
                if not self._retry_later(answer, failures):
                    return
                continue
            if not self._settle(entry, answer):
                return
            self._spool.compact()  # outside our lock: emit goes on while a backlog's file is rewritten
            if failures:
                logger.warning("%s: delivering again after %d failed attempt(s); %d waiting", self.name, failures,
                               self._spool.pending)
            failures = 0

    def _next_entry(self) -> SpoolEntry | None:
        """The next result to deliver, waiting for one; None when it is time to stop."""
        with self._cv:
            while True:
                if self._closed or (self._closing and time.monotonic() >= self._deadline):
                    return None
                entry = self._spool.peek()
                if entry is not None:
                    return entry
                if self._closing:  # drained
                    return None
                self._cv.wait()

    def _retry_later(self, answer: _Answer, failures: int) -> bool:
        """Count a failed attempt and wait out its backoff; False when closing means stopping now."""
        with self._cv:
            if self._closed:
                return False
            self._retries += 1
            now = time.monotonic()
            if failures == 1 or now - self._last_nag >= _NAG_EVERY_S:
                self._last_nag = now
                logger.warning("%s: delivery failed (%s, attempt %d); retrying with backoff, %d result(s) waiting "
                               "in spool %s", self.name, answer.detail, failures, self._spool.pending, self._spool.path)
            delay = answer.retry_after_s
            if delay is None:
                delay = backoff_delay(failures, self.options.backoff_s, self.options.max_backoff_s)
            wake = now + delay
            while not self._closed:
                if self._closing and wake > self._deadline:  # the retry would come after the drain time
                    return False
                left = wake - time.monotonic()
                if left <= 0:
                    return True
                self._cv.wait(left)
            return False

    def _settle(self, entry: SpoolEntry, answer: _Answer) -> bool:
        """Count a delivered or refused result and take it off the spool; False once closed."""
        with self._cv:
            if self._closed:  # close() gave up waiting for this POST: its result stays spooled
                return False
            if answer.attempt is Attempt.DELIVERED:
                self._delivered += 1
            elif self._keep_rejected(entry, answer):
                self._rejected += 1
                logger.error("%s: the receiver refused a result for good (%s); kept in %s", self.name,
                             answer.detail, self._rejected_path)
            else:
                self._lost += 1
            if self._earlier:
                self._earlier -= 1
                self._replayed += answer.attempt is Attempt.DELIVERED
            self._spool.ack(entry)
            return True

    def _keep_rejected(self, entry: SpoolEntry, answer: _Answer) -> bool:
        record = entry.record or {"raw": entry.raw.decode("utf-8", "replace")}
        line = json.dumps({**record, "status": answer.status, "error": answer.detail}) + "\n"
        try:
            if self._rejected_fd is None:
                self._rejected_fd = os.open(self._rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            write_line(self._rejected_fd, line.encode())
            return True
        except OSError as exc:
            logger.error("%s: result LOST: cannot write %s: %s", self.name, self._rejected_path, exc)
            return False

    def _post(self, entry: SpoolEntry) -> _Answer:
        record = entry.record
        if record is None or not isinstance(record.get("key"), str) or not isinstance(record.get("result"), dict):
            return _Answer(Attempt.REJECTED, "spool line is not a {key, result} record (damaged file?)")
        try:
            resp = self._session.post(self.url, data=json.dumps(record["result"]).encode(),
                                      headers={"Content-Type": "application/json", "Idempotency-Key": record["key"]},
                                      timeout=self.options.timeout_s, allow_redirects=False)
        except Exception as exc:  # requests' errors, or anything a custom session raises: retry later
            return _Answer(Attempt.RETRY, f"{type(exc).__name__}: {exc}")
        status = resp.status_code
        text = resp.text[:200] if status >= 300 else ""
        resp.close()
        if 200 <= status < 300:
            return _Answer(Attempt.DELIVERED, status=status)
        if status in REJECT_STATUSES:
            return _Answer(Attempt.REJECTED, f"HTTP {status}: {text}", status)
        retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES else None
        return _Answer(Attempt.RETRY, f"HTTP {status}", status, retry_after)


def default_spool(spool_dir: str | Path, url: str) -> Path:
    """Where a webhook's spool lives when its spec names none: one file per URL under ``spool_dir``."""
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return Path(spool_dir) / f"webhook-{parts.hostname}-{parts.port or parts.scheme}-{digest}.jsonl"
