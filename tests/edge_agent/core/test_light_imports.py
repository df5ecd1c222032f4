"""The device core is pure logic: importing it loads no OpenCV, model runtime or HTTP
client, and it runs with OpenCV absent (an edge install needs cv2 only for its sources
and upload encoding)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("cv2", "onnxruntime", "onnx", "requests", "urllib3", "bentoml", "torch", "tqdm")


def _fresh(code: str) -> None:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("module", ["edge_agent", "edge_agent.core", "edge_agent.core.policy", "edge_agent.core.events"])
def test_core_modules_load_nothing_heavy(module):
    _fresh(f"import sys\nimport {module}\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy")


def test_the_core_runs_without_opencv():
    # sys.modules[name] = None makes `import name` raise ImportError: as if it were not installed
    _fresh("import sys\nsys.modules['cv2'] = None\nsys.modules['onnxruntime'] = None\nsys.modules['requests'] = None\n"
           "from edge_agent.core import CoreConfig, DeviceCore, FrameCaptured\n"
           "actions = DeviceCore(CoreConfig(), cloud=False).handle(FrameCaptured(at=0.0, seq=0))\n"
           "assert repr(actions) == '[RunLocal(seq=0)]', actions")
