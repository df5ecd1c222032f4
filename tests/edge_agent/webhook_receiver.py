"""A real webhook receiver on 127.0.0.1 for the sink tests: records every POST it accepts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class Receiver:
    """Answers each POST after ``delay_s`` with ``answer(body, attempt)`` -> (status, headers); 204 by default.

    ``got`` holds (Idempotency-Key, body) of the accepted (2xx) POSTs in arrival order, ``hits``
    (monotonic time of arrival, seq, status) of every POST. A POST is taken in on arrival, as a
    receiver that processes first and answers after: a sender that dies before the answer
    comes will send it again.
    """

    def __init__(self, port: int = 0, *, delay_s: float = 0.0,
                 answer: Callable[[dict, int], tuple[int, dict]] | None = None) -> None:
        self.delay_s = delay_s
        self.answer = answer
        self.got: list[tuple[str, dict]] = []
        self.hits: list[tuple[float, int, int]] = []
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key", "")
                delay = outer.delay_s
                with outer._lock:
                    attempt = outer._attempts[key] = outer._attempts.get(key, 0) + 1
                    status, headers = outer.answer(body, attempt) if outer.answer else (204, {})
                    outer.hits.append((time.monotonic(), body["seq"], status))
                    if 200 <= status < 300:  # taken in on arrival, answered after the delay
                        outer.got.append((key, body))
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="test-webhook-receiver", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    @property
    def seqs(self) -> list[int]:
        with self._lock:
            return [body["seq"] for _, body in self.got]

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.got]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 120.0, what: str = "condition") -> None:
    """Poll ``predicate`` (generously: the machine may be loaded); fail the test if it never holds."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
