"""Importing any yolo_edge module pulls in no GPU or heavy runtime (CPU CI, edge image)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorrt", "torch", "torchvision", "onnx2torch", "ultralytics", "bentoml", "cuda", "pycuda")

CODE = f"""
import importlib, json, pkgutil, sys
import yolo_edge
names = sorted(m.name for m in pkgutil.walk_packages(yolo_edge.__path__, "yolo_edge."))
for name in names:
    importlib.import_module(name)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"modules": names, "heavy": heavy}}))
"""


def test_no_module_imports_a_gpu_package(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "YOLO_EDGE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", CODE], check=True, capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The GPU modules are really among those imported (a rename must not make this vacuous).
    for name in ("tensorrt", "torch", "select", "gpu_preprocess", "trt_build", "cuda_runtime"):
        assert f"yolo_edge.backends.{name}" in result["modules"]
    assert "yolo_edge.cli_engine" in result["modules"]
    assert result["heavy"] == [], f"imported at module level: {result['heavy']}"
