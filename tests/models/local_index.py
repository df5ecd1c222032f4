"""A real package index on 127.0.0.1, serving files already in the local artifact cache.

It speaks the simple API the way PyPI does: ``/simple/<project>/`` answers PEP 691 JSON
when the client asks for it and PEP 503 HTML otherwise, with ``#sha256=`` on every link;
``/files/<name>`` serves the file. Tests use it to exercise the real download path
without leaving the machine. ``advertise`` and ``serve`` let a test lie about a file's
hash or its bytes; ``require_auth`` answers 401 to every request.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LocalIndex:
    def __init__(self, files: dict[str, Path], *, require_auth: bool = False) -> None:
        """``files`` maps a project name to the artifact file it should list."""
        self.files = {self.normalize(p): Path(f) for p, f in files.items()}
        self.advertise: dict[str, str] = {}  # filename -> sha256 to list instead of the real one
        self.serve: dict[str, bytes] = {}  # filename -> bytes to send instead of the file
        self.require_auth = require_auth
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def normalize(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def __enter__(self) -> "LocalIndex":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloaded(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for p in self.requests if p.startswith("/files/")]

    def _sha(self, path: Path) -> str:
        return self.advertise.get(path.name) or hashlib.sha256(path.read_bytes()).hexdigest()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                index.requests.append(self.path)
                if index.require_auth:
                    return self._send(401, b"credentials needed", "text/plain")
                m = re.fullmatch(r"/simple/([^/]+)/", self.path)
                if m and m.group(1) in index.files:
                    path = index.files[m.group(1)]
                    if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                        body = json.dumps({"meta": {"api-version": "1.0"}, "name": m.group(1), "files": [
                            {"filename": path.name, "url": f"../../files/{path.name}",
                             "hashes": {"sha256": index._sha(path)}}]}).encode()
                        return self._send(200, body, "application/vnd.pypi.simple.v1+json")
                    link = f'<a href="../../files/{html.escape(path.name)}#sha256={index._sha(path)}">{path.name}</a>'
                    return self._send(200, f"<!DOCTYPE html><html><body>{link}</body></html>".encode(), "text/html")
                m = re.fullmatch(r"/files/([^/]+)", self.path)
                by_name = {p.name: p for p in index.files.values()}
                if m and m.group(1) in by_name:
                    name = m.group(1)
                    return self._send(200, index.serve.get(name) or by_name[name].read_bytes(),
                                      "application/octet-stream")
                self._send(404, b"not found", "text/plain")

        return Handler
