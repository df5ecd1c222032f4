"""PyTorch backend: the ONNX graph itself, converted to ``torch.nn`` by onnx2torch.

Runs where TensorRT is not installed but PyTorch with CUDA is (a cloud GPU box, a dev
workstation), so the GPU path can be checked against the CPU answer on any CUDA
machine. Converting the ONNX file, rather than re-exporting TorchScript from
Ultralytics, means the exact same graph and weights as every other backend, for
Ultralytics exports and Darknet conversions alike, and no AGPL package at run time.

onnx2torch 1.5 converts both model families the registry ships (checked: YOLOv8s
export, Conv/Split/Slice/Softmax/Resize...; YOLOv3-tiny from Darknet, including its
asymmetric-padding MaxPool and nearest Resize) with outputs within 5e-4 of
onnxruntime on CPU.

    >>> be = TorchBackend("model.onnx", device="cuda", half=True)   # doctest: +SKIP
    >>> [o.shape for o in be.run(batch)]                             # doctest: +SKIP
    [(1, 6, 8400)]
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import types
from typing import Iterator

import numpy as np

from ..errors import BackendError, ConfigError, UnsupportedModelError
from .checks import check_batch, check_shape
from .onnx_info import read_onnx_info

__all__ = ["TorchBackend"]

logger = logging.getLogger(__name__)

#: ONNX ops whose onnx2torch converters need the real torchvision
_TORCHVISION_OPS = frozenset({"NonMaxSuppression", "RoiAlign"})


class TorchBackend:
    """Run an ONNX model through PyTorch on ``device`` ("cuda", "cuda:1" or "cpu").

    ``half=True`` runs the network in FP16 (inputs are cast on the device, outputs come
    back as float32). ``max_batch`` bounds a batch for dynamic-batch models; a
    static-batch export accepts exactly its own batch size.
    """

    name = "torch"

    def __init__(self, onnx_path: str | os.PathLike, *, device: str = "cuda", half: bool = False, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        info = read_onnx_info(onnx_path)
        needs_tv = info.op_types & _TORCHVISION_OPS
        torch = _import_torch()
        self._device = _check_device(torch, device)
        if half and self._device.type == "cpu":
            raise ConfigError("half=True needs a CUDA device: FP16 convolutions on CPU are slow or unsupported; use half=False")
        onnx2torch = _import_onnx2torch(allow_stub=not needs_tv)
        import onnx

        try:
            module = onnx2torch.convert(onnx.load(os.fspath(onnx_path)))
        except Exception as exc:  # onnx2torch raises NotImplementedError / KeyError for unknown ops
            raise UnsupportedModelError(
                f"onnx2torch cannot convert {os.fspath(onnx_path)}: {exc}; use backend='onnxruntime'"
            ) from exc
        module = module.eval().to(self._device)
        self._dtype = torch.float16 if half else torch.float32
        if half:
            module = module.half()
        self._module = module
        self._torch = torch
        self._lock = threading.Lock()
        self.input_name = info.input_name
        self.input_shape = info.input_shape
        self.output_names = info.output_names
        self.output_shapes = info.output_shapes
        self.metadata = info.metadata
        self._max_batch = max_batch if info.dynamic_batch else int(info.input_shape[0])
        logger.info(
            "torch backend: %s on %s (%s), max batch %d",
            os.path.basename(os.fspath(onnx_path)),
            self._device_label(),
            "fp16" if half else "fp32",
            self._max_batch,
        )

    def _device_label(self) -> str:
        if self._device.type == "cuda":
            return f"{self._device} ({self._torch.cuda.get_device_name(self._device)})"
        return str(self._device)

    @property
    def providers(self) -> tuple[str, ...]:
        """The torch device really in use, e.g. ``("cuda:0",)`` or ``("cpu",)``."""
        if self._module is None:
            return ()
        return (str(self._device),)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._module is None:
            raise BackendError("this TorchBackend is closed")
        check_batch(batch, self.input_shape, self._max_batch)
        torch = self._torch
        # One forward at a time: GPU work is serialized on the stream anyway, and the lock
        # keeps concurrent callers from interleaving host<->device copies.
        with self._lock, torch.inference_mode():
            try:
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, non_blocking=True).to(self._dtype)
                out = self._module(x)
                outs = out if isinstance(out, (list, tuple)) else [out]
                return [o.float().cpu().numpy() for o in outs]
            except RuntimeError as exc:  # CUDA OOM, shape errors inside the graph
                raise BackendError(f"torch failed on a batch of shape {batch.shape}: {exc}") from exc

    def run_tensor(self, x) -> list[np.ndarray]:
        """Run a ``[B, 3, H, W]`` float tensor already on this device (GPU letterbox output).

        Skips the host-to-device copy that :meth:`run` makes; same checks and outputs.
        """
        if self._module is None:
            raise BackendError("this TorchBackend is closed")
        torch = self._torch
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.device != self._device:
            raise ConfigError(
                f"expected a float torch tensor on {self._device}, got {type(x).__name__} "
                f"{getattr(x, 'dtype', '')} on {getattr(x, 'device', '')}"
            )
        check_shape(tuple(x.shape), self.input_shape, self._max_batch)
        with self._lock, torch.inference_mode():
            try:
                out = self._module(x.to(self._dtype))
            except RuntimeError as exc:
                raise BackendError(f"torch failed on a batch of shape {tuple(x.shape)}: {exc}") from exc
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [o.float().cpu().numpy() for o in outs]

    def close(self) -> None:
        if self._module is None:
            return
        self._module = None  # type: ignore[assignment]
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendError("the torch backend needs PyTorch: pip install 'yolo-edge[torch]'") from exc
    return torch


def _check_device(torch, device: str):
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(
                f"device={device!r} but PyTorch sees no CUDA GPU (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); use device='cpu' or install a CUDA build of torch"
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def _import_onnx2torch(*, allow_stub: bool):
    """Import onnx2torch, tolerating a missing or broken torchvision where that is safe.

    onnx2torch imports torchvision at import time, but uses it only to convert the
    NonMaxSuppression and RoiAlign ops, which YOLO detection graphs do not contain. A
    torchvision built for another torch (common: a CUDA torchvision next to CPU torch,
    or none at all on a Jetson) would otherwise make the whole backend unusable.
    """
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        import onnx2torch
    except ImportError as exc:
        if getattr(exc, "name", "") == "onnx2torch":
            raise BackendError("the torch backend needs onnx2torch: pip install 'yolo-edge[torch]'") from exc
        if not allow_stub:
            raise BackendError(f"onnx2torch failed to import ({exc}) and this model needs torchvision") from exc
        problem: Exception = exc
    except RuntimeError as exc:  # "operator torchvision::nms does not exist": mismatched builds
        if not allow_stub:
            raise BackendError(f"onnx2torch failed to import ({exc}) and this model needs torchvision") from exc
        problem = exc
    else:
        return onnx2torch
    logger.info("torchvision unusable (%s); importing onnx2torch without it (YOLO graphs do not need it)", problem)
    with _torchvision_stub():
        import onnx2torch
    return onnx2torch


@contextlib.contextmanager
def _torchvision_stub() -> Iterator[None]:
    """Put an empty ``torchvision`` in ``sys.modules`` for one import, then restore exactly."""
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    for k in saved:
        del sys.modules[k]
    stub = types.ModuleType("torchvision")
    stub_ops = types.ModuleType("torchvision.ops")

    def _missing(*_a, **_k):
        raise BackendError("torchvision is not usable in this environment")

    stub_ops.roi_align = _missing  # type: ignore[attr-defined]
    stub_ops.nms = _missing  # type: ignore[attr-defined]
    stub.ops = stub_ops  # type: ignore[attr-defined]
    sys.modules["torchvision"] = stub
    sys.modules["torchvision.ops"] = stub_ops
    try:
        yield
    finally:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules.update(saved)
