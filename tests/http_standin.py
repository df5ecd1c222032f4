"""A scripted HTTP server on 127.0.0.1 for client tests: real sockets, answers from a script.

Used by tests/yolo_edge/remote/test_transport.py and test_cloud_limits.py.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from typing import Any


class Script:
    """What a scripted server answers, in order (the last answer repeats), and what it was asked.

    An answer is ``(status, headers, body[, delay_s])`` or a function of ``(method, path, body)`` giving one.
    """

    def __init__(self, *answers: tuple[int, dict[str, str], Any] | tuple[int, dict[str, str], Any, float]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, str, bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() when each request had arrived
        self.lock = threading.Lock()

    def next(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            self.seen.append((method, path, body))
            self.arrived.append(time.monotonic())
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if callable(answer):  # an answer made from the request
            answer = answer(method, path, body)
        status, headers, payload, *delay = answer
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return status, headers, raw, delay[0] if delay else 0.0


def _handler(script: Script) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, raw, delay = script.next(self.command, self.path, body)
            if delay:
                time.sleep(delay)
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            try:
                self.wfile.write(raw)
            except OSError:  # the client gave up waiting (a read-timeout test)
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class Server:
    """A threaded HTTP server on 127.0.0.1 answering ``script``; an existing listening socket may be given."""

    def __init__(self, script: Script, sock: socket.socket | None = None) -> None:
        self.script = script
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(script), bind_and_activate=sock is None)
        if sock is not None:
            self.httpd.socket.close()
            self.httpd.socket = sock
        self.httpd.daemon_threads = True
        self.port = self.httpd.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
