"""A real Triton Inference Server on 127.0.0.1 for the tests.

The ``tritonserver`` binary and its Python backend come from the ``nvidia-pytriton``
wheel installed in ``.venv-triton`` by ``make triton`` (its own environment: the wheel
pins numpy<2). The server runs in its own process group on free HTTP, GRPC and metrics
ports, in explicit model-control mode, and is stopped with SIGINT (Triton then unloads
its models and removes the Python backend's shared-memory regions), SIGKILL if it hangs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest
import requests

from edge_agent.cloudserve import free_port

REPO = Path(__file__).resolve().parents[2]
TRITON_VENV = Path(os.environ.get("YOLO_EDGE_TRITON_VENV", REPO / ".venv-triton"))


@dataclass(frozen=True)
class TritonDist:
    binary: Path
    libs: Path  # the wheel's bundled shared libraries
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for the venv's Python
    venv_bin: Path

    @property
    def python(self) -> Path:
        return self.venv_bin / "python"


def find_triton() -> TritonDist:
    """The pytriton distribution in .venv-triton, or a test failure saying how to install it."""
    sites = sorted(TRITON_VENV.glob("lib/python3.*/site-packages/pytriton"))
    if not sites:
        pytest.fail(f"no Triton server in {TRITON_VENV}: run `make triton` (or `make test`) first", pytrace=False)
    pytriton = sites[-1]
    version = pytriton.parent.parent.name.removeprefix("python")
    dist = TritonDist(
        binary=pytriton / "tritonserver" / "bin" / "tritonserver",
        libs=pytriton.parent / "nvidia_pytriton.libs",
        python_backend=pytriton / "tritonserver" / "backends" / "python",
        stub=pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
        venv_bin=TRITON_VENV / "bin",
    )
    missing = [p for p in (dist.binary, dist.libs, dist.python_backend, dist.stub) if not p.exists()]
    if missing:
        pytest.fail(f"the nvidia-pytriton install in {TRITON_VENV} lacks {missing}: run `make clean triton`", pytrace=False)
    return dist


class TritonServer:
    """``with TritonServer(repo, models=[...], workdir=tmp) as ts: ts.oip_url("yolo")``."""

    def __init__(self, repository: Path, *, models: Sequence[str], workdir: Path, start_timeout_s: float = 180.0):
        self.repository, self.models, self.workdir = Path(repository), list(models), Path(workdir)
        self.start_timeout_s = start_timeout_s
        self.dist = find_triton()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "tritonserver.log"
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def oip_url(self, model: str) -> str:
        return f"oip+{self.base}/v2/models/{model}"

    def start(self) -> "TritonServer":
        backends = self.workdir / "backends"
        shutil.copytree(self.dist.python_backend, backends / "python", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(self.dist.stub, backends / "python" / "triton_python_backend_stub")
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.http_port, self.grpc_port, self.metrics_port = sorted(ports)
        cmd = [str(self.dist.binary), "--model-repository", str(self.repository), "--backend-directory", str(backends),
               "--model-control-mode", "explicit", *[f"--load-model={m}" for m in self.models],
               "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
               "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
               "--allow-gpu-metrics", "false", "--exit-timeout-secs", "10"]
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.dist.libs),
               # the Python backend's stub runs the python found first on PATH: the venv's
               "PATH": f"{self.dist.venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.workdir)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(self.models)
        while pending:
            if self.proc.poll() is not None:
                pytest.fail(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"models {pending} not ready after {self.start_timeout_s:.0f} s:\n{self.log_tail()}",
                            pytrace=False)
            try:
                if requests.get(f"{self.base}/v2/models/{pending[0]}/ready", timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except requests.RequestException:
                pass
            time.sleep(0.25)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGINT)  # graceful: unloads models, removes the stubs' shared memory
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    # -- what the server says about itself -------------------------------------------
    def stats(self, model: str) -> dict:
        return requests.get(f"{self.base}/v2/models/{model}/stats", timeout=5).json()["model_stats"][0]

    def pending_requests(self, model: str) -> float:
        """Triton's gauge of requests queued or running for ``model`` (from /metrics)."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("nv_inference_pending_request_count") and f'model="{model}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def load(self, model: str) -> requests.Response:
        return requests.post(f"{self.base}/v2/repository/models/{model}/load", timeout=120)
