"""Build TensorRT engines from ONNX with the TensorRT 10 API (and keep working on 11).

- ``builder.create_network(0)``: networks are explicit-batch in 10.x (the
  EXPLICIT_BATCH flag is deprecated) and strongly typed in 11.x.
- FP16 through ``BuilderFlag.FP16`` where it exists (10.x). TensorRT 11 removed weak
  typing and that flag with it: there an FP32 ONNX builds an FP32 engine, with a
  warning that says how to get FP16 (convert the ONNX with ModelOpt AutoCast).
- A dynamic batch axis gets one optimization profile: min 1, opt ``max_batch // 2``
  (the batch a busy service usually sees), max ``max_batch``.
- Progress through ``IProgressMonitor`` (TensorRT >= 8.6) when a callback is given.

Everything takes the ``tensorrt`` module as a parameter, so the decisions (precision
fallback, profile, error reporting) are tested with a fake on machines without a GPU.

    >>> plan = build_serialized_engine(trt, "model.onnx", precision="fp16",   # doctest: +SKIP
    ...                                 profile=((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640)))
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Protocol

from ..errors import BackendError, ConfigError, UnsupportedModelError
from .engine_cache import PRECISIONS, Profile
from .onnx_info import OnnxInfo

__all__ = [
    "BuildProgress",
    "build_serialized_engine",
    "effective_precision",
    "make_profile",
    "make_trt_logger",
]

logger = logging.getLogger(__name__)


class BuildProgress(Protocol):
    """What a progress display implements (see ``yolo_edge.cli_engine``). Must be thread-safe."""

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None: ...
    def step_complete(self, phase: str, step: int) -> bool: ...  # False cancels the build
    def phase_finish(self, phase: str) -> None: ...


def effective_precision(trt: Any, requested: str) -> str:
    """The precision a build will really have: "fp16" falls back to "fp32" on TensorRT 11."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        logger.warning(
            "TensorRT %s has no FP16 builder flag (weak typing was removed in 11.x): building FP32. "
            "For FP16, convert the ONNX to mixed precision first (python -m modelopt.onnx.autocast) "
            "and build that file",
            getattr(trt, "__version__", "?"),
        )
        return "fp32"
    return requested


def make_profile(info: OnnxInfo, max_batch: int) -> Profile | None:
    """(min, opt, max) input shapes for a dynamic batch axis; None for a static model."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    _, c, h, w = info.input_shape
    if None in (c, h, w):
        raise UnsupportedModelError(
            f"input shape {info.input_shape}: only the batch axis may be dynamic for TensorRT; "
            "export with a fixed imgsz"
        )
    if not info.dynamic_batch:
        return None
    opt = max(1, max_batch // 2)
    return ((1, c, h, w), (opt, c, h, w), (max_batch, c, h, w))


def make_trt_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT's messages to :mod:`logging`."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,  # TensorRT's INFO is very chatty
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            logger.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


def _make_monitor(trt: Any, progress: BuildProgress) -> Any | None:
    if not hasattr(trt, "IProgressMonitor"):
        logger.info("TensorRT %s has no IProgressMonitor: building without progress", getattr(trt, "__version__", "?"))
        return None
    lock = threading.Lock()  # TensorRT calls the monitor from its own threads

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with lock:
                progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with lock:
                return bool(progress.step_complete(phase_name, step))

        def phase_finish(self, phase_name: str) -> None:
            with lock:
                progress.phase_finish(phase_name)

    return _Monitor()


def build_serialized_engine(
    trt: Any,
    onnx_path: str | os.PathLike,
    *,
    precision: str,
    profile: Profile | None,
    input_name: str,
    trt_logger: Any | None = None,
    progress: BuildProgress | None = None,
    workspace_bytes: int | None = None,
) -> bytes:
    """Parse ``onnx_path`` and return a serialized engine (the bytes to cache).

    ``precision`` must already be :func:`effective_precision`'s answer.
    """
    trt_logger = trt_logger if trt_logger is not None else make_trt_logger(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    # parse_from_file (not parse(bytes)) so external weight files next to the ONNX are found
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise UnsupportedModelError(f"TensorRT cannot parse {os.fspath(onnx_path)}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(input_name, *profile)
        config.add_optimization_profile(opt_profile)
    monitor = _make_monitor(trt, progress) if progress is not None else None
    if monitor is not None:
        config.progress_monitor = monitor
    logger.info(
        "building TensorRT %s engine for %s (%s, profile %s); this takes minutes on a Jetson",
        getattr(trt, "__version__", "?"),
        os.path.basename(os.fspath(onnx_path)),
        precision,
        profile,
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(
            f"TensorRT failed to build an engine for {os.fspath(onnx_path)} ({precision}); "
            "the TensorRT errors logged above say why (out of memory: lower max_batch)"
        )
    data = bytes(plan)
    if not data:
        raise BackendError(f"TensorRT returned an empty engine for {os.fspath(onnx_path)}")
    return data
