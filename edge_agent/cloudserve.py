"""Start and stop a local ``bentoml serve`` of bentos.service as the cloud stand-in.

Used by the hybrid demo, the agent benchmark and the integration tests. Binds 127.0.0.1
unless told otherwise (the shaped-link tests bind an address inside a network namespace
they made, with ``launcher=("ip", "netns", "exec", NS)``); the server runs in its own
process group so it can be killed as a whole (the "cloud outage" of the tests).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from yolo_edge.errors import CloudUnavailableError

__all__ = ["LocalService", "free_port"]

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalService:
    """``with LocalService(threads=1) as svc: svc.url`` -- a real service on 127.0.0.1.

    ``stop()`` and ``start()`` may be called again (kill the cloud mid-run, bring it back
    on the same port).
    """

    def __init__(self, *, model: str | None = None, threads: int | None = 1, port: int | None = None,
                 log_dir: str | Path | None = None, env: dict[str, str] | None = None,
                 start_timeout_s: float = 120.0, cpus: set[int] | None = None, host: str = "127.0.0.1",
                 launcher: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.host = host
        #: a command prefix the server runs under, such as ``("ip", "netns", "exec", NS)``
        self.launcher = tuple(launcher)
        self.url = f"http://{host}:{self.port}"
        self.log_dir = Path(log_dir) if log_dir else Path(os.environ.get("TMPDIR", "/tmp"))
        self.start_timeout_s = start_timeout_s
        self.env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "YOLO_EDGE_WARMUP_RUNS": "3", **(env or {})}
        if model:
            self.env["YOLO_EDGE_MODEL"] = model
        if threads:
            self.env["YOLO_EDGE_THREADS"] = str(threads)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.log_dir / f"edge-agent-cloud-{self.port}.log"
        #: pin the service (and the workers it starts, which inherit it) to these cores, so a
        #: benchmark measures routing, not the agent and its cloud stand-in fighting for a core
        self.cpus = set(cpus) if cpus else None

    def start(self, wait: bool = True) -> "LocalService":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # bentos.serve: `bentoml serve` with a metrics directory of its own, so several
            # local services (and the user's) keep their own /metrics
            cpus = self.cpus
            self.proc = subprocess.Popen(
                [*self.launcher, sys.executable, "-m", "bentos.serve", "--host", self.host, "--port", str(self.port)],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise CloudUnavailableError(f"bentoml serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise CloudUnavailableError(f"the local service was not ready within {self.start_timeout_s:.0f} s; "
                                    f"see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil  # a bentoml dependency

        # bentoml's workers run in sessions of their own, so a signal to our process group
        # misses them; a SIGKILL must reach each one or the port keeps answering
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, sig)
        if sig == signal.SIGKILL:
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(children, timeout=5)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> "LocalService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
