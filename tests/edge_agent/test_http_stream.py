"""A real network stream: OpenCV's FFmpeg reader on an MJPEG IP camera served on 127.0.0.1.

The server plays the camera the way most MJPEG cameras serve (``multipart/x-mixed-replace``
over HTTP) and ends each connection after a set number of frames, like a camera dropping
its stream, so the reconnects below are real ones too.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from edge_agent.cli import main
from edge_agent.sources import LiveSource
from yolo_edge.image import load_image


class MjpegCamera:
    """``with MjpegCamera(jpegs, per_connection=8) as cam: cam.url`` -- serves frames in turn."""

    def __init__(self, jpegs: list[bytes], *, per_connection: int, fps: float = 50.0) -> None:
        self.jpegs, self.per_connection, self.interval = jpegs, per_connection, 1.0 / fps
        self.connections = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(camera.per_connection):
                        jpg = camera.jpegs[i % len(camera.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        time.sleep(camera.interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader went away: a normal end for a camera

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def __enter__(self) -> "MjpegCamera":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def photos(sample_photos) -> list[np.ndarray]:
    return [cv2.resize(load_image(p), (640, 480)) for p in sample_photos]


@pytest.fixture(scope="module")
def jpegs(photos) -> list[bytes]:
    return [cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for p in photos]


def test_stream_drops_are_reconnected_and_every_frame_arrives(photos, jpegs):
    with MjpegCamera(jpegs, per_connection=8) as cam:
        src = LiveSource(cam.url, buffer=100, backoff_s=0.05, max_reconnects=2)
        frames = list(src)
    assert cam.connections == 3 and src.reconnects == 2  # two drops, two reconnects, then it gave up
    assert len(frames) == 24 and all(f.dropped_reason is None for f in frames)
    assert [f.index for f in frames] == list(range(24))
    for k, f in enumerate(frames):
        # FFmpeg's JPEG decoder, not OpenCV's: the same picture to within rounding
        assert f.image.shape == photos[0].shape
        assert np.abs(f.image.astype(np.int16) - photos[(k % 8) % len(photos)]).mean() < 3.0


def test_agent_runs_on_a_live_http_camera(tmp_path, capsys, jpegs, default_model_path):
    out = tmp_path / "res.jsonl"
    with MjpegCamera(jpegs, per_connection=5, fps=10) as cam:
        code = main(["run", "--source", cam.url, "--max-frames", "8", "--latency-budget-ms", "3000",
                     "--sink", f"jsonl:{out}", "--summary-json", str(tmp_path / "s.json")])
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(8))  # across one camera drop, in order
    assert cam.connections == 2
    answered = [x for x in lines if x["outcome"] == "local"]
    assert answered and {x["outcome"] for x in lines} <= {"local", "late", "dropped"}
    labels = {d["label"] for x in answered for d in x["detections"]}
    assert "person" in labels  # real photos through a real stream and the real model
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 8
