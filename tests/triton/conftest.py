"""Model repositories written by ``export_triton`` and the real Triton server that serves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_edge.triton.export import export_triton

#: what the Triton server loads at start: the default model with FP16 on the wire, and the
#: fall model (static batch 1 in its ONNX, made dynamic by the export) with FP32
SERVED = {"yolo": dict(model=None, input_dtype="fp16"), "fall": dict(model="yolov8s-fall", input_dtype="fp32")}


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory, default_model_path: Path, fall_model_path: Path) -> Path:
    """A repository with the served models (platform python) and an onnxruntime export of the default model."""
    repo = tmp_path_factory.mktemp("model_repository")
    for name, opts in SERVED.items():
        export_triton(opts["model"], repo, name=name, platform="python", input_dtype=opts["input_dtype"],
                      max_queue_delay_us=5000)
    export_triton(None, repo, name="yolo_ort", platform="onnxruntime", device="cpu")
    return repo


@pytest.fixture(scope="module")
def triton(triton_repo: Path, tmp_path_factory):
    from triton_server import TritonServer

    with TritonServer(triton_repo, models=list(SERVED), workdir=tmp_path_factory.mktemp("triton")) as server:
        yield server
