"""A yolo-edge service stand-in over real HTTP on 127.0.0.1, serving a model it is told.

It speaks the service's wire (``GET /readyz``, ``GET /metadata``, ``POST /detect`` with
multipart images, answers encoded by :mod:`yolo_edge.remote.wire`), so the real CloudClient, the
EndpointPool and the agent talk to it through their own HTTP code; only the detector is
replaced by fixed detections, and each answer takes ``delay_s``. Much faster to start than
``bentoml serve`` (tests/yolo_edge/remote/test_pool_services.py runs the real one), so a test can
run several, one per model.

    with StandIn(sha256=A_SHA, detections=person_and_bus) as a:
        yolo_edge.detect(frame, endpoint=[a.url, ...])
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from yolo_edge.types import Detections
from yolo_edge.remote.wire import FrameResult, FrameStatus, FrameTiming, ModelRef, ServiceInfo

__all__ = ["StandIn", "fixed_detections"]


def fixed_detections(names: dict[int, str], class_ids: list[int]) -> Detections:
    """``len(class_ids)`` boxes of those classes, in a 32x32 image."""
    n = len(class_ids)
    xyxy = np.array([[i, i, i + 4, i + 4] for i in range(n)], np.float32).reshape(n, 4)
    return Detections(xyxy, np.full(n, 0.9, np.float32), np.array(class_ids, np.int64), names, image_shape=(32, 32))


class StandIn:
    """One service on a free 127.0.0.1 port serving model ``name`` (``sha256``); counts what it is asked."""

    def __init__(self, *, name: str, sha256: str, detections: Detections, delay_s: float = 0.0) -> None:
        self.name, self.sha256, self.detections, self.delay_s = name, sha256, detections, delay_s
        self.lock = threading.Lock()
        self.detect_requests = 0
        self.frames = 0
        self.metadata_requests = 0
        #: per /detect request: time.monotonic() when it arrived (its headers read, before its
        #: body, as the service's guard stamps it) and the budgets_s it carried (None: none)
        self.arrivals: list[tuple[float, list[float] | None]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: the test reads the counters
                pass

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                if self.path in ("/readyz", "/livez"):
                    self._answer(200, "ok")
                elif self.path == "/metadata":
                    with stand_in.lock:
                        stand_in.metadata_requests += 1
                    self._answer(200, stand_in.info().to_dict())
                else:
                    self._answer(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                budgets = re.search(rb'name="budgets_s"\r\n\r\n(.*?)\r\n--', body, re.DOTALL)
                with stand_in.lock:
                    stand_in.arrivals.append((arrived, json.loads(budgets.group(1)) if budgets else None))
                if self.path != "/detect":
                    self._answer(404, {"error": f"no route {self.path}"})
                    return
                images = body.count(b'name="images"')
                time.sleep(stand_in.delay_s)
                with stand_in.lock:
                    stand_in.detect_requests += 1
                    stand_in.frames += images
                model = ModelRef(stand_in.name, stand_in.sha256)
                self._answer(200, [FrameResult(status=FrameStatus.OK, model=model, detections=stand_in.detections,
                                               timing=FrameTiming(server_ms=stand_in.delay_s * 1e3)).to_dict()
                                   for _ in range(images)])

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def info(self) -> ServiceInfo:
        return ServiceInfo(name=self.name, sha256=self.sha256, names=self.detections.names, imgsz=(416, 416),
                           max_batch=8)

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
