"""Choosing a backend: by name, or ``auto`` = the fastest one that really works here.

``auto`` tries, in order:

1. TensorRT, if the ``tensorrt`` package is importable and a CUDA device is present
   (a Jetson, a GPU server with TensorRT);
2. ONNX Runtime with the CUDA execution provider, if this onnxruntime build has it
   *and* the session really activates it (onnxruntime-gpu silently runs on CPU when
   the CUDA libraries are missing, so ``session.get_providers()`` decides, not
   ``get_available_providers()``);
3. ONNX Runtime on the CPU.

Each step that is skipped or fails is logged with its reason (WARNING when a GPU path
was expected to work, INFO when there simply is none), and the choice is kept on the
backend (:func:`describe_backend`) for the service metadata and the agent metrics. A
backend asked for by name never falls back: it works or raises a typed error.

Heavy packages (tensorrt, torch, cuda-python) are imported only inside the branch that
uses them; probing the machine imports none of them.

    >>> be = select_backend("model.onnx")              # doctest: +SKIP
    >>> describe_backend(be)["selected"]                # doctest: +SKIP
    'auto: onnxruntime on CPU (no TensorRT; onnxruntime has no CUDAExecutionProvider)'
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, YoloEdgeError
from .base import Backend
from .providers import CPU_EP, CUDA_EP, ort_providers

__all__ = ["select_backend", "describe_backend", "probe_environment", "GpuEnvironment", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
#: options each backend understands; anything else is a typo worth an error
_OPTION_NAMES = {"precision", "max_batch", "cache_dir", "device", "half", "prefer", "progress"}


@dataclass(frozen=True)
class GpuEnvironment:
    """What this machine offers, found without importing any GPU package."""

    tensorrt: bool  # the tensorrt package is installed
    cuda_devices: int  # CUDA devices the driver reports (0: none, or not asked: see probe_environment)
    ort_providers: tuple[str, ...]  # onnxruntime.get_available_providers()


def _cuda_device_count() -> int:
    """Ask the driver (libcuda) directly: works on x86 and Jetson, needs no Python package."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def probe_environment() -> GpuEnvironment:
    """Probe cheaply. The driver is asked for devices only when TensorRT is installed:
    ``cuInit`` in a process that later forks (a server's workers) breaks CUDA in the
    children, so we do not initialize CUDA unless a CUDA path is about to be taken.
    """
    try:
        import onnxruntime as ort

        available = tuple(ort.get_available_providers())
    except ImportError:
        available = ()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    return GpuEnvironment(tensorrt=has_trt, cuda_devices=_cuda_device_count() if has_trt else 0, ort_providers=available)


# -- factories (module-level so tests can replace them) ------------------------------------


def _make_tensorrt(path: Path, opts: dict[str, Any]) -> Backend:
    from .tensorrt import TensorRTBackend

    kwargs = {k: opts[k] for k in ("precision", "max_batch", "cache_dir", "progress") if k in opts}
    return TensorRTBackend(path, device=int(opts.get("device", 0)), **kwargs)


def _make_torch(path: Path, opts: dict[str, Any]) -> Backend:
    from .torch import TorchBackend

    device = opts.get("device")
    if device is None:
        import torch  # the backend imports it next anyway

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        device = f"cuda:{device}"
    half = opts.get("half", opts.get("precision", "fp32") == "fp16" and str(device).startswith("cuda"))
    return TorchBackend(path, device=str(device), half=bool(half), max_batch=int(opts.get("max_batch", 8)))


def _make_onnxruntime(path: Path, providers: Sequence[Any], threads: int | None) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, providers=list(providers), intra_op_threads=threads)


_FACTORIES: dict[str, Callable[..., Backend]] = {
    "tensorrt": _make_tensorrt,
    "torch": _make_torch,
    "onnxruntime": _make_onnxruntime,
}


def _ort_cache_dir(opts: dict[str, Any]) -> Path:
    if opts.get("cache_dir") is not None:
        return Path(opts["cache_dir"])
    from ..models.registry import cache_dir

    return cache_dir() / "engines"


def _chosen(backend: Backend, reason: str) -> Backend:
    try:
        backend.selected = reason  # type: ignore[attr-defined]
    except AttributeError:  # a backend with __slots__: the log line still tells
        pass
    log.info("backend %s", reason)
    return backend


def select_backend(
    onnx_path: str | os.PathLike,
    *,
    backend: str = "auto",
    threads: int | None = None,
    providers: Sequence[Any] | None = None,
    env: GpuEnvironment | None = None,
    **opts: Any,
) -> Backend:
    """Create the backend named ``backend`` ("auto", "tensorrt", "onnxruntime", "torch").

    ``threads``: CPU threads for onnxruntime. ``providers``: explicit onnxruntime
    providers (implies ``onnxruntime``). ``opts``: ``precision`` ("fp16"/"fp32"),
    ``max_batch``, ``cache_dir`` (engines), ``device`` (GPU index, or a torch device
    string), ``half`` (torch), ``prefer`` (onnxruntime provider preference),
    ``progress`` (TensorRT build callbacks). ``env`` overrides the machine probe (tests).
    """
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
    unknown = set(opts) - _OPTION_NAMES
    if unknown:
        raise ConfigError(f"unknown backend option(s) {sorted(unknown)}: expected some of {sorted(_OPTION_NAMES)}")
    name = backend.lower()
    path = Path(onnx_path)
    if name == "auto" and providers is not None:
        name = "onnxruntime"  # explicit providers are an onnxruntime choice
    env = env if env is not None else probe_environment()
    fp16 = opts.get("precision", "fp16") == "fp16"
    device_id = opts.get("device", 0) if isinstance(opts.get("device", 0), int) else 0

    if name == "tensorrt":
        return _chosen(_FACTORIES["tensorrt"](path, opts), "tensorrt (requested)")
    if name == "torch":
        be = _FACTORIES["torch"](path, opts)
        return _chosen(be, f"torch on {', '.join(be.providers)} (requested)")
    if name == "onnxruntime":
        requested = list(providers) if providers is not None else ort_providers(
            env.ort_providers, prefer=opts.get("prefer"), cache_dir=_ort_cache_dir(opts), fp16=fp16, device_id=device_id
        )
        be = _FACTORIES["onnxruntime"](path, requested, threads)  # warns itself on fallback
        return _chosen(be, f"onnxruntime on {', '.join(be.providers)} (requested)")
    return _auto(path, env, threads, opts, fp16=fp16, device_id=device_id)


def _auto(path: Path, env: GpuEnvironment, threads: int | None, opts: dict[str, Any], *, fp16: bool, device_id: int) -> Backend:
    # 1. TensorRT
    if env.tensorrt and env.cuda_devices:
        try:
            be = _FACTORIES["tensorrt"](path, opts)
            return _chosen(be, f"auto: tensorrt (TensorRT installed, {env.cuda_devices} CUDA device(s))")
        except YoloEdgeError as exc:
            log.warning("auto: TensorRT is installed but failed (%s); trying onnxruntime", exc)
        why_not_trt = "TensorRT failed"
    else:
        why_not_trt = "no TensorRT" if not env.tensorrt else "TensorRT installed but no CUDA device"
        log.info("auto: skipping TensorRT: %s", why_not_trt)
    # 2. onnxruntime + CUDA, if it really activates
    if CUDA_EP in env.ort_providers:
        requested = ort_providers(env.ort_providers, prefer=("cuda", "cpu"), cache_dir=None, fp16=fp16, device_id=device_id)
        be = _FACTORIES["onnxruntime"](path, requested, threads)
        if CUDA_EP in be.providers:
            return _chosen(be, f"auto: onnxruntime on {CUDA_EP} ({why_not_trt})")
        # The backend already logged a WARNING naming what fell back. The session already works on CPU: keep it rather than loading the model twice.
        return _chosen(be, f"auto: onnxruntime on CPU ({why_not_trt}; {CUDA_EP} failed to activate)")
    # 3. CPU
    be = _FACTORIES["onnxruntime"](path, [CPU_EP], threads)
    return _chosen(be, f"auto: onnxruntime on CPU ({why_not_trt}; onnxruntime has no {CUDA_EP})")


def describe_backend(backend: Backend) -> dict[str, Any]:
    """JSON-able facts about a backend for service metadata and agent metrics.

    >>> class B:
    ...     name, input_shape, providers, max_batch = "onnxruntime", (1, 3, 8, 8), ("CPUExecutionProvider",), 1
    >>> describe_backend(B())["providers"]
    ['CPUExecutionProvider']
    """
    info: dict[str, Any] = {
        "name": backend.name,
        "providers": list(backend.providers),
        "max_batch": int(backend.max_batch),
        "selected": getattr(backend, "selected", None),
    }
    for attr in ("precision", "gpu_name"):
        value = getattr(backend, attr, None)
        if value is not None:
            info[attr] = value
    if getattr(backend, "engine_path", None) is not None:
        info["engine"] = Path(backend.engine_path).name  # type: ignore[attr-defined]
    return info

