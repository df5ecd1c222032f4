"""TensorRT backend (TensorRT 10 API, as JetPack 6 ships it; runs on 11 too).

Given an ONNX file it builds (once per GPU model, TensorRT version, model, precision
and batch profile; see :mod:`~yolo_edge.backends.engine_cache`) and caches a
serialized engine, deserializes it and runs it with named I/O tensors:
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on device buffers
allocated once at the largest batch. Given an ``.engine``/``.plan`` file it loads that
directly. A null engine from ``deserialize_cuda_engine`` (built for another GPU or
TensorRT version, or a damaged file) is an error, never a crash later; a cached one is
rebuilt once.

Device memory comes from cuda-python (see :mod:`~yolo_edge.backends.cuda_runtime` for
why not torch). One execution context serves all threads under a lock: a Jetson's GPU
is saturated by one stream, and per-thread contexts would multiply the activation
memory by the thread count.

    >>> be = TensorRTBackend("yolov8s.onnx", precision="fp16", max_batch=8)   # doctest: +SKIP
    >>> be.providers                                                           # doctest: +SKIP
    ('TensorRT', 'cuda:0')
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, ConfigError, UnsupportedModelError
from ..models.fetch import sha256_file
from .checks import check_batch
from .cuda_runtime import CudaRuntime, DeviceBuffer
from .engine_cache import EngineCache, EngineKey
from .onnx_info import read_onnx_info
from .trt_build import BuildProgress, build_serialized_engine, effective_precision, make_profile, make_trt_logger

__all__ = ["TensorRTBackend", "ENGINE_SUFFIXES", "default_engine_dir", "import_tensorrt", "engine_key_for"]

logger = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); "
            "on x86 install it from NVIDIA's index (pip install tensorrt --extra-index-url "
            "https://pypi.nvidia.com) - or use backend='onnxruntime'"
        ) from exc
    return tensorrt


def default_engine_dir() -> Path:
    from ..models.registry import cache_dir

    return cache_dir() / "engines"


def engine_key_for(
    trt: Any, rt: CudaRuntime, onnx_path: str | os.PathLike, *, precision: str, max_batch: int, device: int
) -> tuple[EngineKey, Any]:
    """The cache key of the engine this machine would build, and the ONNX interface."""
    info = read_onnx_info(onnx_path)
    gpu_name, cc = rt.device_info(device)
    key = EngineKey(
        gpu_name=gpu_name,
        compute_capability=cc,
        trt_version=str(trt.__version__),
        onnx_sha256=sha256_file(onnx_path),
        precision=effective_precision(trt, precision),
        profile=make_profile(info, max_batch),
    )
    return key, info


class TensorRTBackend:
    """Run a YOLO ONNX model (or a prebuilt engine) with TensorRT on GPU ``device``.

    ``precision``: "fp16" (default; FP32 where TensorRT 11 has no FP16 flag) or "fp32".
    ``max_batch``: the profile's largest batch for dynamic-batch models.
    ``cache_dir``: engine cache (default ``$YOLO_EDGE_HOME/engines``).
    ``progress``: build progress callbacks (the CLI passes a tqdm display).
    ``trt`` / ``cuda``: the tensorrt module and a :class:`CudaRuntime`, for tests.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        precision: str = "fp16",
        max_batch: int = 8,
        cache_dir: str | os.PathLike | None = None,
        device: int = 0,
        progress: BuildProgress | None = None,
        workspace_bytes: int | None = None,
        trt: Any | None = None,
        cuda: CudaRuntime | None = None,
    ) -> None:
        self._closed = True  # until fully constructed, run() refuses
        self._buffers: list[DeviceBuffer] = []
        self._stream = None
        self._lock = threading.Lock()
        trt = trt if trt is not None else import_tensorrt()
        rt = cuda if cuda is not None else CudaRuntime.load()
        if not isinstance(device, int) or device < 0:
            raise ConfigError(f"device must be a CUDA device index >= 0, got {device!r}")
        count = rt.device_count()
        if device >= count:
            raise BackendError(f"CUDA device {device} not found ({count} visible): no NVIDIA GPU or driver here")
        rt.set_device(device)
        self._trt, self._rt, self._device = trt, rt, device
        self.gpu_name, self.compute_capability = rt.device_info(device)
        self._trt_logger = make_trt_logger(trt)
        self._runtime = trt.Runtime(self._trt_logger)
        path = Path(model_path)
        if path.suffix.lower() in ENGINE_SUFFIXES:
            engine = self._load_engine_file(path)
            self.precision, self.engine_path, info = "unknown (prebuilt engine)", path, None
        else:
            engine, info = self._engine_from_onnx(path, precision, max_batch, cache_dir, progress, workspace_bytes)
        try:
            self._setup(engine, info)
        except BaseException:
            self._release()
            raise
        self._closed = False
        logger.info(
            "tensorrt backend: %s on cuda:%d (%s, sm%d%d), TensorRT %s, %s, max batch %d",
            self.engine_path.name,
            device,
            self.gpu_name,
            *self.compute_capability,
            trt.__version__,
            self.precision,
            self._max_batch,
        )

    # -- loading ---------------------------------------------------------------------------

    def _deserialize(self, data: bytes) -> Any | None:
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # some versions raise instead of returning None
            logger.warning("deserialize_cuda_engine raised: %s", exc)
            return None

    def _load_engine_file(self, path: Path) -> Any:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BackendError(f"cannot read engine file {path}: {exc}") from exc
        engine = self._deserialize(data) if data else None
        if engine is None:
            raise BackendError(
                f"TensorRT {self._trt.__version__} could not load {path}: engines only run on the GPU model and "
                f"TensorRT version that built them (this is {self.gpu_name}, sm{''.join(map(str, self.compute_capability))}); "
                "rebuild it here with `yolo-edge build-engine`"
            )
        return engine

    def _engine_from_onnx(self, path, precision, max_batch, cache_dir, progress, workspace_bytes) -> tuple[Any, Any]:
        key, info = engine_key_for(self._trt, self._rt, path, precision=precision, max_batch=max_batch, device=self._device)
        stem = path.parent.name if path.stem == "model" else path.stem  # registry files are all model.onnx
        cache = EngineCache(cache_dir if cache_dir is not None else default_engine_dir(), stem=stem)

        def build() -> bytes:
            return build_serialized_engine(
                self._trt,
                path,
                precision=key.precision,
                profile=key.profile,
                input_name=info.input_name,
                trt_logger=self._trt_logger,
                progress=progress,
                workspace_bytes=workspace_bytes,
            )

        engine = self._deserialize(cache.get_or_build(key, build))
        if engine is None:
            # A file the cache's checksums accept but TensorRT refuses (e.g. a driver update):
            # rebuild once; a second refusal means this TensorRT cannot run what it builds.
            logger.warning("TensorRT refused cached engine %s; rebuilding it", cache.path_for(key))
            cache.invalidate(key)
            engine = self._deserialize(cache.get_or_build(key, build))
            if engine is None:
                raise BackendError(
                    f"TensorRT {self._trt.__version__} built an engine for {path} it cannot load on {self.gpu_name}; "
                    "check that the driver, CUDA and TensorRT versions match (JetPack) - or use backend='onnxruntime'"
                )
        self.precision, self.engine_path = key.precision, cache.path_for(key)
        return engine, info

    def _setup(self, engine: Any, info: Any | None) -> None:
        trt = self._trt
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self._outputs:
            raise UnsupportedModelError(f"expected one image input and some outputs, the engine has inputs {inputs}")
        self._input = inputs[0]
        shape = tuple(int(d) for d in engine.get_tensor_shape(self._input))
        if len(shape) != 4 or any(d < 0 for d in shape[1:]):
            raise UnsupportedModelError(f"engine input shape {shape}: expected [B, 3, H, W] with fixed H and W")
        if shape[0] < 0:
            self._max_batch = int(engine.get_tensor_profile_shape(self._input, 0)[2][0])
        else:
            self._max_batch = shape[0]
        self.input_name = self._input
        self.input_shape = tuple(None if d < 0 else d for d in shape)
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        # Allocate once at the largest batch; smaller batches use a prefix of each buffer.
        self._context.set_input_shape(self._input, (self._max_batch, *shape[1:]))
        max_shapes = {self._input: (self._max_batch, *shape[1:])}
        for n in self._outputs:
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(n))
            if any(d < 0 for d in out_shape):
                raise UnsupportedModelError(f"output {n} has data-dependent shape {out_shape}; not supported")
            max_shapes[n] = out_shape
        for n in names:
            buf = DeviceBuffer(self._rt, math.prod(max_shapes[n]) * self._dtypes[n].itemsize)
            self._buffers.append(buf)
            if not self._context.set_tensor_address(n, buf.ptr):
                raise BackendError(f"TensorRT rejected the device address for tensor {n}")
        self._buffer_of = dict(zip(names, self._buffers))
        self._stream = self._rt.stream_create()
        self.output_names = list(self._outputs)
        if info is not None:
            self.output_shapes = info.output_shapes
            self.metadata = info.metadata
        else:
            self.output_shapes = [[None if i == 0 and shape[0] < 0 else d for i, d in enumerate(max_shapes[n])] for n in self._outputs]
            self.metadata = {}

    # -- Backend protocol --------------------------------------------------------------------

    @property
    def providers(self) -> tuple[str, ...]:
        return () if self._closed else ("TensorRT", f"cuda:{self._device}")

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._closed:
            raise BackendError("this TensorRTBackend is closed")
        check_batch(batch, self.input_shape, self._max_batch)
        rt, ctx, stream = self._rt, self._context, self._stream
        with self._lock:
            # The current device is per host thread: set it for whichever thread calls us.
            rt.set_device(self._device)
            x = np.ascontiguousarray(batch, dtype=self._dtypes[self._input])
            if not ctx.set_input_shape(self._input, x.shape):
                raise BackendError(f"TensorRT rejected input shape {x.shape} (profile max batch {self._max_batch})")
            rt.htod(self._buffer_of[self._input].ptr, x, stream)
            outs = [np.empty(tuple(int(d) for d in ctx.get_tensor_shape(n)), self._dtypes[n]) for n in self._outputs]
            if not ctx.execute_async_v3(_stream_handle(stream)):
                raise BackendError(f"TensorRT execute_async_v3 failed on a batch of shape {x.shape}")
            for n, out in zip(self._outputs, outs):
                rt.dtoh(out, self._buffer_of[n].ptr, stream)
            rt.stream_sync(stream)
        return [o.astype(np.float32, copy=False) for o in outs]

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._release()

    def _release(self) -> None:
        for buf in self._buffers:
            buf.free()
        self._buffers = []
        if self._stream is not None:
            self._rt.stream_destroy(self._stream)
            self._stream = None
        # Context before engine before runtime: TensorRT's documented destruction order.
        self._context = None
        self._engine = None
        self._runtime = None


def _stream_handle(stream: Any) -> int:
    """cuda-python's ``cudaStream_t`` -> the integer handle TensorRT's binding takes."""
    return int(stream)
