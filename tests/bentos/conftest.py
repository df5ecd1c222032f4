"""A real ``bentoml serve`` of bentos.service on 127.0.0.1, started once per session.

Each fixture starts the server in its own process group on a free port, records what
/readyz and /detect answered while the model was still warming up, waits (bounded) for
/readyz, and always terminates the whole group at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    log: Path
    #: (/readyz status, /detect status, /detect Retry-After, /detect body) seen while warming up
    warming: list[tuple[int, int, str | None, str]] = field(default_factory=list)
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # the YOLO_EDGE_* settings it runs with

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _start(tmp: Path, env_extra: dict[str, str], warm_probe: bytes) -> Served:
    port = _free_port()
    log = tmp / f"serve-{port}.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true", **env_extra}
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(bentoml_cli), "serve", "bentos.service:YoloEdge", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log, token=env_extra.get("YOLO_EDGE_TOKEN"), env=dict(env_extra))
    try:
        return _wait_ready(served, warm_probe)
    except BaseException:  # never leave a server behind, whatever went wrong
        _stop(served)
        raise


def _wait_ready(served: Served, warm_probe: bytes) -> Served:
    proc = served.proc
    headers = {"Authorization": f"Bearer {served.token}"} if served.token else {}
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{served.log_tail()}")
        try:
            ready = requests.get(served.url + "/readyz", timeout=5).status_code
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still loading the model
            time.sleep(0.05)
            continue
        if ready == 200:
            return served
        r = requests.post(served.url + "/detect", files=[("images", ("p.jpg", warm_probe, "image/jpeg"))],
                          headers=headers, timeout=10)
        served.warming.append((ready, r.status_code, r.headers.get("Retry-After"), r.text))
        time.sleep(0.1)
    raise RuntimeError(f"the service was not ready within {START_TIMEOUT_S:.0f} s:\n{served.log_tail()}")


def _stop(served: Served) -> None:
    if served.proc.poll() is not None:
        return
    pgid = os.getpgid(served.proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        served.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        served.proc.wait(timeout=5)


def _model_env(default_model_path: Path) -> dict[str, str]:
    # .../<home>/models/<name>/model.onnx -> <home>: the fetched, pinned model
    return {"YOLO_EDGE_HOME": str(default_model_path.parents[2]), "YOLO_EDGE_MODEL": "yolov3-tiny-coco"}


#: The body timeout of the default test service: short enough for the slow-client tests to
#: see their 408s soon, far longer than a body on 127.0.0.1 takes to arrive.
BODY_TIMEOUT_S = 10


@pytest.fixture(scope="session")
def service(tmp_path_factory, default_model_path, bus_jpg):
    """The service as deployed by default (no auth, default limits), with a short body timeout."""
    env = {**_model_env(default_model_path), "YOLO_EDGE_WARMUP_RUNS": "25", "YOLO_EDGE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    served = _start(tmp_path_factory.mktemp("svc"), env, bus_jpg.read_bytes())
    yield served
    _stop(served)


SMALL_UPLOAD_LIMIT = 2_000_000


@pytest.fixture(scope="session")
def secured_service(tmp_path_factory, default_model_path, bus_jpg):
    """Auth on, a small upload limit and only 2 requests in flight."""
    env = {**_model_env(default_model_path), "YOLO_EDGE_TOKEN": "test-token-123", "YOLO_EDGE_WARMUP_RUNS": "1",
           "YOLO_EDGE_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD_LIMIT), "YOLO_EDGE_MAX_IN_FLIGHT": "2"}
    served = _start(tmp_path_factory.mktemp("secured"), env, bus_jpg.read_bytes())
    yield served
    _stop(served)
