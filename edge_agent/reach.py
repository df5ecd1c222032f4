"""Can the agent reach its cloud? Said at once, repeated while it lasts, named in the summary.

A cloud that cannot be reached must not be silent: the device would quietly run everything
locally and drop the rest. :class:`Reachability` keeps, per endpoint, whether it was
reached, since when it is not, how many checks failed and why, and answers each fact with
the lines to print: the first failure at once (which URL, what failed, what the agent does
meanwhile), then a reminder every ``remind_every_s`` while it lasts, and one line when it
comes back. It reads no clock and touches no socket: :class:`ReachWatch` feeds it, from a
thread that opens a TCP connection to each endpoint every ``check_every_s`` (a connection
only, never an HTTP request, so a deployment scaled to zero is not woken by it), and the
agent's cloud client wrapper feeds it the outcome of each real request and wake.

>>> r = Reachability(["http://127.0.0.1:3999"], check_every_s=5, remind_every_s=30)
>>> r.failed(0, "connection refused", at=0.0)[0]
'cloud http://127.0.0.1:3999 cannot be reached: connection refused. Meanwhile every frame runs locally, and frames that local inference cannot finish within their budget are dropped; checking again every 5 s.'
>>> r.failed(0, "connection refused", at=10.0)   # rate-limited
[]
>>> r.failed(0, "connection refused", at=31.0)[0]
'cloud http://127.0.0.1:3999 still unreachable after 31 s (3 failed checks): connection refused; frames run locally meanwhile.'
>>> r.reached(0, at=40.0)[0]
'cloud http://127.0.0.1:3999 reachable again after 40 s; offloading can resume.'
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import urlsplit

__all__ = ["Reachability", "ReachWatch", "tcp_check"]

logger = logging.getLogger(__name__)


@dataclass
class _Endpoint:
    name: str
    reachable: bool | None = None  # None: not checked yet
    ever: bool = False
    down_since: float | None = None
    down_total_s: float = 0.0
    failures: int = 0  # failed checks and requests while unreachable, all told
    error: str = ""
    said_at: float = -math.inf


class Reachability:
    """Per endpoint: reached or not, since when, why; the lines to say about it (pure, thread-safe)."""

    def __init__(self, names: Sequence[str], *, check_every_s: float = 5.0, remind_every_s: float = 30.0) -> None:
        self._eps = [_Endpoint(n) for n in names]
        self.check_every_s = check_every_s
        self.remind_every_s = remind_every_s
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._eps)

    def _meanwhile(self, index: int) -> str:
        others = [e for i, e in enumerate(self._eps) if i != index and e.reachable is not False]
        if others:
            return "Meanwhile the other cloud endpoints take its frames"
        return ("Meanwhile every frame runs locally, and frames that local inference cannot finish within their "
                "budget are dropped")

    def failed(self, index: int, error: str, *, at: float) -> list[str]:
        """A check or a request found endpoint ``index`` unreachable; the lines to say now (maybe none)."""
        with self._lock:
            e = self._eps[index]
            e.failures += 1
            e.error = error
            if e.reachable is not False:
                e.reachable, e.down_since, e.said_at = False, at, at
                return [f"cloud {e.name} cannot be reached: {error}. {self._meanwhile(index)}; checking again every "
                        f"{self.check_every_s:g} s."]
            if at - e.said_at >= self.remind_every_s:
                e.said_at = at
                meanwhile = "the other endpoints take its frames" if "other" in self._meanwhile(index) \
                    else "frames run locally"
                return [f"cloud {e.name} still unreachable after {at - e.down_since:.0f} s ({e.failures} failed "
                        f"checks): {error}; {meanwhile} meanwhile."]
            return []

    def reached(self, index: int, *, at: float) -> list[str]:
        """Endpoint ``index`` answered (a connection, a request or a wake); the lines to say now (maybe none)."""
        with self._lock:
            e = self._eps[index]
            was_down = e.reachable is False
            e.reachable, e.ever = True, True
            if not was_down:
                return []
            down = at - e.down_since
            e.down_total_s += down
            e.down_since = None
            return [f"cloud {e.name} reachable again after {down:.0f} s; offloading can resume."]

    def never_reached(self) -> bool:
        """Every endpoint was found unreachable and none was ever reached (False without endpoints)."""
        with self._lock:
            return bool(self._eps) and all(not e.ever and e.reachable is False for e in self._eps)

    def summary(self, *, at: float) -> list[dict]:
        """One entry per endpoint that could not be reached at some point during the run."""
        with self._lock:
            out = []
            for e in self._eps:
                if not e.failures:
                    continue
                down = e.down_total_s + (at - e.down_since if e.down_since is not None else 0.0)
                out.append({"endpoint": e.name, "reachable_at_end": e.reachable is True, "ever_reached": e.ever,
                            "unreachable_s": round(down, 1), "failed_checks": e.failures, "error": e.error})
            return out

    def render(self, *, at: float) -> list[str]:
        """Lines for the summary printed at exit."""
        lines = []
        for s in self.summary(at=at):
            if not s["ever_reached"]:
                lines.append(f"  cloud {s['endpoint']} UNREACHABLE for the whole run ({s['failed_checks']} failed "
                             f"checks): {s['error']}; it took no frame")
            else:
                state = "reachable at the end" if s["reachable_at_end"] else "unreachable at the end"
                lines.append(f"  cloud {s['endpoint']} unreachable for {s['unreachable_s']:.0f} s of the run "
                             f"({s['failed_checks']} failed checks, {state}): {s['error']}")
        return lines


def tcp_check(url: str, timeout_s: float) -> str | None:
    """Open (and close) a TCP connection to the host and port of ``url``: None if it opened, else why not.

    Through an HTTP(S) proxy from the environment, the proxy is what is checked.
    """
    from yolo_edge.remote.endpoint import why_unreachable

    target = url[4:] if url.startswith("oip+") else url
    parts = urlsplit(target)
    import urllib.request

    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, what = via.hostname, via.port or 80, f" (the proxy {via.hostname}:{via.port or 80})"
    else:
        host, port, what = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), ""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{why_unreachable(exc)}{what}"


class ReachWatch:
    """Checks each endpoint every ``check_every_s`` on a thread and says what :class:`Reachability` answers.

    ``say`` prints one line (the CLI: on stderr); ``check(url, timeout_s)`` is :func:`tcp_check`.
    """

    def __init__(self, urls: Sequence[str], names: Sequence[str] | None = None, *,
                 say: Callable[[str], None] = logger.warning, check: Callable[[str, float], str | None] = tcp_check,
                 clock: Callable[[], float] = time.monotonic, check_every_s: float = 5.0,
                 remind_every_s: float = 30.0, connect_timeout_s: float = 3.0) -> None:
        self.urls = list(urls)
        self.state = Reachability(list(names) if names is not None else self.urls, check_every_s=check_every_s,
                                  remind_every_s=remind_every_s)
        self.say, self.check, self.clock = say, check, clock
        self.connect_timeout_s = connect_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ReachWatch":
        if self.urls and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edge-agent-reach", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout_s + 1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for i, url in enumerate(self.urls):
                problem = self.check(url, self.connect_timeout_s)
                if self._stop.is_set():
                    return
                if problem is None:
                    self._tell(self.state.reached(i, at=self.clock()))
                else:
                    self._tell(self.state.failed(i, problem, at=self.clock()))
            self._stop.wait(self.state.check_every_s)

    def _tell(self, lines: list[str]) -> None:
        for line in lines:
            self.say(line)

    # -- what the agent's requests and wakes found -----------------------------------
    def request_failed(self, index: int, error: str) -> None:
        self._tell(self.state.failed(index, error, at=self.clock()))

    def request_answered(self, index: int) -> None:
        self._tell(self.state.reached(index, at=self.clock()))
