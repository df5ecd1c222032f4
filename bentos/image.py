"""The Bento's container image: CUDA, cuDNN and onnxruntime-gpu pinned to one another.

BentoML 1.4 takes the image from the service definition (``@bentoml.service(image=IMAGE)``,
its "runtime environment" API); the bentofile keeps only what belongs to the build
context (include, exclude, labels, envs). ``bentoml build`` then writes a v2 Bento, with
no "fallback to bento v1" warning (the old ``docker.cuda_version`` key caused it).

The versions that must agree, and why they do:

- ``nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04``: the CUDA 12.6 runtime and cuDNN 9
  (``libcudnn9-cuda-12``), from NVIDIA's own image. Python 3.11 comes from uv, which the
  Bento's Dockerfile uses to make its virtual environment.
- ``onnxruntime-gpu==1.26.0``: the newest PyPI release built for CUDA 12.x and cuDNN 9.x.
  Its wheel metadata says so (its ``cuda`` extra requires ``nvidia-cuda-runtime-cu12``,
  its ``cudnn`` extra ``nvidia-cudnn-cu12~=9.0``); from 1.27.0 on, the PyPI wheels are
  CUDA 13 builds (``-cu13``) that find no CUDA 13 libraries here and silently run on the
  CPU. ONNX Runtime's CUDA 12 builds work with any CUDA 12.x runtime (minor-version
  compatibility), and cuDNN 8 and 9 are not interchangeable.
- The host's NVIDIA driver must run CUDA 12.6: 560 or newer, or 525.60.13 or newer
  through CUDA's minor-version compatibility.

``yolo_edge.Detector`` reports the providers really in use (``/metadata``), so a CPU
fallback shows even if these ever drift apart.
"""

from __future__ import annotations

import bentoml

__all__ = ["BASE_IMAGE", "CUDA_VERSION", "CUDNN_MAJOR", "IMAGE", "ONNXRUNTIME_GPU", "PYTHON_PACKAGES"]

CUDA_VERSION = "12.6.3"
CUDNN_MAJOR = 9
ONNXRUNTIME_GPU = "1.26.0"
PYTHON_VERSION = "3.11"
BASE_IMAGE = f"nvidia/cuda:{CUDA_VERSION}-cudnn-runtime-ubuntu22.04"

#: What the service imports. onnxruntime-gpu stands in for onnxruntime (never both in one
#: environment: they install the same module).
PYTHON_PACKAGES = (
    "numpy>=1.24",
    f"onnxruntime-gpu=={ONNXRUNTIME_GPU}",
    "opencv-python-headless>=4.8,<5",
    "prometheus-client>=0.20",
    "python-multipart>=0.0.9",
)

# lock_python_packages=False: locking resolves against PyPI with uv, and this project
# builds its Bento offline; the pins above carry the versions that matter.
# python3-pip: NVIDIA's image has no Python, and the Bento's Dockerfile pip-installs uv
# (which then makes the Python 3.11 environment). Ubuntu 22.04's pip may install into the
# system; 24.04's refuses (PEP 668), hence 22.04.
IMAGE = (
    bentoml.images.Image(base_image=BASE_IMAGE, python_version=PYTHON_VERSION, lock_python_packages=False)
    .run("apt-get install -q -y --no-install-recommends python3-pip")
    .python_packages(*PYTHON_PACKAGES)
)
