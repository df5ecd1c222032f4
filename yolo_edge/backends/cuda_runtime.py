"""The few CUDA runtime calls the TensorRT backend needs, through ``cuda-python``.

Why cuda-python rather than torch or pycuda: it is NVIDIA's own thin binding of the
runtime API (a few MB, pip-installable, on Jetson too), whereas torch for Jetson is a
separate 800 MB wheel from NVIDIA's index and pycuda must compile against the local
toolkit. The edge image then carries TensorRT + cuda-python and nothing else.

Every call returns a tuple whose first item is a ``cudaError_t``; :func:`_call` turns
failures into :class:`~yolo_edge.errors.BackendError`.

    >>> rt = CudaRuntime.load()          # doctest: +SKIP
    >>> rt.device_info(0)                # doctest: +SKIP
    ('Orin', (8, 7))
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..errors import BackendError

__all__ = ["CudaRuntime", "DeviceBuffer"]


def _import_cudart() -> Any:
    # cuda-python >= 12.6 moved the runtime to cuda.bindings; older ones have cuda.cudart.
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendError("the TensorRT backend needs cuda-python for device memory: pip install 'yolo-edge[trt]'")


class CudaRuntime:
    """Wrapper over a cudart module (real, or a fake in tests)."""

    def __init__(self, cudart: Any) -> None:
        self._rt = cudart

    @classmethod
    def load(cls) -> "CudaRuntime":
        return cls(_import_cudart())

    def _call(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            try:
                msg = self._rt.cudaGetErrorString(err)[1]
                msg = msg.decode() if isinstance(msg, bytes) else str(msg)
            except Exception:  # noqa: BLE001 - the original error matters more than its text
                msg = str(err)
            raise BackendError(f"CUDA {what} failed: {msg}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else tuple(rest)

    def device_count(self) -> int:
        try:
            return int(self._call(self._rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        except BackendError:
            return 0  # no driver / no device: that is an answer, not an error
        except RuntimeError:  # cuda-python 12.6+ without libcuda.so.1: "Failed to dlopen libcuda.so.1"
            return 0

    def set_device(self, device: int) -> None:
        self._call(self._rt.cudaSetDevice(device), f"cudaSetDevice({device})")

    def device_info(self, device: int) -> tuple[str, tuple[int, int]]:
        """(GPU name, (major, minor) compute capability)."""
        props = self._call(self._rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = props.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip(), (int(props.major), int(props.minor))

    def stream_create(self) -> Any:
        return self._call(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        self._call(self._rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def stream_sync(self, stream: Any) -> None:
        self._call(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr), "cudaFree")

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        src = np.ascontiguousarray(src)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync H2D")

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        if not dst.flags.c_contiguous:
            raise BackendError("internal: device-to-host copy needs a contiguous host array")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync D2H")


class DeviceBuffer:
    """``nbytes`` of device memory, freed by :meth:`free` (idempotent)."""

    def __init__(self, rt: CudaRuntime, nbytes: int) -> None:
        self._rt = rt
        self.nbytes = int(nbytes)
        self.ptr = rt.malloc(self.nbytes)

    def free(self) -> None:
        if self.ptr:
            self._rt.free(self.ptr)
            self.ptr = 0
