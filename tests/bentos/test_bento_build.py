"""A real, offline `bentoml build` of the service: a v2 Bento with a coherent GPU image.

The build runs as the README says (`python -m bentos.bake`, then `bentoml build -f
bentos/bentofile.yaml .`) in a copy of the build context, with BENTOML_HOME in a tmp dir
and no package index (PIP_NO_INDEX, UV_OFFLINE), so it cannot lock or download anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from serving_probe import serving_model

from bentos import image
from bentos.bake import bake
from yolo_edge.models.registry import MODELS

pytestmark = pytest.mark.integration  # real bentoml builds

try:
    import tomllib
except ImportError:  # Python 3.10: bentoml depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]

#: PyPI's onnxruntime-gpu wheels and the CUDA major they are built for, read from their own
#: metadata (the `cuda` extra requires nvidia-cuda-runtime-cu12 up to 1.26.0 and -cu13 from
#: 1.27.0 on; 1.19-1.20 are CUDA 12 builds too, without those extras). All use cuDNN 9.
ORT_GPU_CUDA12 = (Version("1.19.0"), Version("1.27.0"))  # [first, first-after)


@pytest.fixture(scope="module")
def built(tmp_path_factory, default_model_path):
    """(build output, path of the built Bento) for a build in a copy of the build context."""
    ctx = tmp_path_factory.mktemp("bento-ctx")
    shutil.copytree(REPO / "bentos", ctx / "bentos", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "yolo_edge", ctx / "yolo_edge", ignore=shutil.ignore_patterns("__pycache__"))
    bake("yolov3-tiny-coco", ctx / "build" / "model_home")  # what `python -m bentos.bake` does
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "PIP_NO_INDEX": "1", "UV_OFFLINE": "1", "NO_COLOR": "1"}
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    run = subprocess.run([str(bentoml_cli), "build", "-f", "bentos/bentofile.yaml", "."], cwd=ctx, env=env,
                         capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    (bento,) = [p for p in (home / "bentos" / "yolo-edge").iterdir() if p.is_dir()]
    return output, bento


def test_build_is_v2_without_fallback_or_ignored_options(built):
    output, bento = built
    assert "Successfully built Bento" in output
    for warning in ("fallback to bento v1", "not supported by bento v2", "will be ignored", "Locking PyPI"):
        assert warning not in output, output
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["image"]["base_image"] == image.BASE_IMAGE  # the v2 format carries the image
    assert "docker" not in info and "python" not in info  # the v1 sections
    (svc,) = info["services"]
    assert svc["config"]["resources"]["gpu"] == 1


def test_bento_carries_the_model_and_the_code(built):
    _, bento = built
    assert (bento / "src" / "build" / "model_home" / "models" / "yolov3-tiny-coco" / "model.onnx").is_file()
    assert (bento / "src" / "bentos" / "service.py").is_file() and (bento / "src" / "yolo_edge" / "detector.py").is_file()
    assert not list((bento / "src").rglob("__pycache__"))


def test_the_service_in_the_bento_loads_the_baked_model(built, default_model_path):
    _, bento = built
    baked = bento / "src" / "build" / "model_home" / "models" / "yolov3-tiny-coco" / "model.onnx"
    served = serving_model(bento / "src", "yolov3-tiny-coco")  # the Bento's own bentos and yolo_edge
    assert (served["path"], served["origin"]) == (str(baked), "BENTO")
    assert baked != default_model_path and served["sha256"] == MODELS["yolov3-tiny-coco"].onnx_sha256


def test_image_pins_cuda_cudnn_and_onnxruntime_gpu_to_each_other(built):
    _, bento = built
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu22\.04", base)
    assert m, f"expected NVIDIA's CUDA runtime image with cuDNN, got {base}"
    cuda_major = int(m.group(1))
    reqs = [Requirement(line) for line in (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]
    by_name = {r.name: r for r in reqs}
    assert "onnxruntime" not in by_name  # never next to onnxruntime-gpu: they share a module
    (pin,) = by_name["onnxruntime-gpu"].specifier
    assert pin.operator == "==", "onnxruntime-gpu must be pinned exactly: its CUDA major changed at 1.27"
    ort = Version(pin.version)
    assert cuda_major == 12 and ORT_GPU_CUDA12[0] <= ort < ORT_GPU_CUDA12[1], (base, ort)
    assert image.CUDNN_MAJOR == 9  # NVIDIA's "cudnn" tags of CUDA 12.3+ carry cuDNN 9, as ORT >= 1.18.1 needs
    # the Dockerfile can make its Python environment: the base image has no pip of its own
    assert dockerfile.index("python3-pip") < dockerfile.index("pip install --no-cache-dir --require-hashes")


def test_extras_pin_the_same_cuda_generation():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (gpu,) = [Requirement(r) for r in extras["gpu"]]
    assert Version(image.ONNXRUNTIME_GPU) in gpu.specifier  # the Bento's pin is one the extra allows
    assert not any(Version(v) in gpu.specifier for v in ("1.18.1", "1.27.0", "1.31.1"))  # CUDA 11 / 13 builds
    for name in ("trt", "jetson"):
        (cuda_python,) = [Requirement(r) for r in extras[name]]
        assert cuda_python.name == "cuda-python"
        assert Version("12.6.2.post1") in cuda_python.specifier  # JetPack 6.1/6.2: CUDA 12.6
        assert not any(Version(v) in cuda_python.specifier for v in ("13.0.0", "13.4.4", "11.8.7"))
