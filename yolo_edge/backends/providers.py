"""Which ONNX Runtime execution providers to ask for, with which options (pure).

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` and ``TensorrtExecutionProvider`` as
*available* whether or not the CUDA, cuDNN and TensorRT libraries can be loaded; when
they cannot, session creation logs an error and silently runs on the CPU. So the list
we request (:func:`ort_providers`) and the list really in use
(``session.get_providers()``) must be compared (:func:`check_fallback`), and a
fallback must be loud.

    >>> ort_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], prefer=None,
    ...               cache_dir=None, fp16=False, device_id=0)
    [('CUDAExecutionProvider', {'device_id': 0, 'cudnn_conv_algo_search': 'HEURISTIC'}), 'CPUExecutionProvider']
    >>> check_fallback(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    ['CUDAExecutionProvider']
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Union

from ..errors import ConfigError

__all__ = ["ort_providers", "check_fallback", "provider_name", "ALIASES", "TRT_EP", "CUDA_EP", "CPU_EP"]

logger = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"

#: short names accepted in ``prefer`` (full provider names are accepted too)
ALIASES = {"tensorrt": TRT_EP, "trt": TRT_EP, "cuda": CUDA_EP, "cpu": CPU_EP}
#: order used when the caller states no preference
DEFAULT_PREFERENCE = (TRT_EP, CUDA_EP, CPU_EP)

ProviderSpec = Union[str, tuple[str, dict]]


def provider_name(spec: ProviderSpec) -> str:
    """``"X"`` or ``("X", {...})`` -> ``"X"``."""
    return spec[0] if isinstance(spec, tuple) else spec


def _resolve(name: str) -> str:
    full = ALIASES.get(name.lower(), name)
    if full not in (TRT_EP, CUDA_EP, CPU_EP) and not full.endswith("ExecutionProvider"):
        raise ConfigError(
            f"unknown execution provider {name!r}: use one of {sorted(ALIASES)} "
            f"or a full onnxruntime provider name such as {CUDA_EP!r}"
        )
    return full


def ort_providers(
    available: Sequence[str],
    *,
    prefer: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    fp16: bool = False,
    device_id: int = 0,
) -> list[ProviderSpec]:
    """Ordered providers with options for ``ort.InferenceSession(..., providers=...)``.

    ``available``: ``ort.get_available_providers()``. ``prefer``: names or aliases
    (``"tensorrt"``, ``"cuda"``, ``"cpu"``) in order of preference; default TensorRT,
    CUDA, CPU. Preferred providers this build of onnxruntime lacks are skipped with a
    warning. CPU always comes last, so a session can be created on any machine.
    ``cache_dir``: where the TensorRT EP keeps engines and timing caches (recommended:
    a first TensorRT EP session builds for minutes). ``fp16``: allow FP16 kernels in
    the TensorRT EP (the CUDA EP runs the graph's own types).
    """
    if device_id < 0:
        raise ConfigError(f"device_id must be >= 0, got {device_id}")
    wanted = [_resolve(n) for n in (prefer if prefer is not None else DEFAULT_PREFERENCE)]
    available_set = set(available)
    result: list[ProviderSpec] = []
    for name in dict.fromkeys(wanted):  # de-duplicate, keep order
        if name == CPU_EP:
            continue  # appended last below
        if name not in available_set:
            if prefer is not None:  # asked for by name: say why it is not used
                logger.warning(
                    "execution provider %s requested but this onnxruntime build lacks it (available: %s); "
                    "install onnxruntime-gpu (alone, not next to onnxruntime) for CUDA/TensorRT",
                    name,
                    ", ".join(available) or "none",
                )
            continue
        result.append((name, _options(name, cache_dir=cache_dir, fp16=fp16, device_id=device_id)))
    result.append(CPU_EP)
    return result


def _options(name: str, *, cache_dir: Path | None, fp16: bool, device_id: int) -> dict:
    if name == TRT_EP:
        opts: dict = {"device_id": device_id, "trt_fp16_enable": bool(fp16)}
        if cache_dir is not None:
            # Engines depend on GPU and TensorRT version; the EP keys its cache files on
            # both plus the model, so one directory can be shared.
            cache = str(Path(cache_dir) / "ort-trt")
            opts.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=cache,
                trt_timing_cache_enable=True,
                trt_timing_cache_path=cache,
            )
        return opts
    if name == CUDA_EP:
        # HEURISTIC: near-EXHAUSTIVE speed for YOLO convs without seconds of benchmarking
        # on the first call of every new input shape.
        return {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def check_fallback(requested: Sequence[ProviderSpec], active: Sequence[str]) -> list[str]:
    """Requested providers that are not active; logs a WARNING naming them.

    ``requested``: what was passed to the session (names or ``(name, options)``).
    ``active``: ``session.get_providers()``. An empty list means no fallback.
    """
    active_set = set(active)
    fell_back = [provider_name(s) for s in requested if provider_name(s) not in active_set]
    if fell_back:
        logger.warning(
            "onnxruntime fell back: requested %s but %s not active (running on %s); "
            "check the CUDA/cuDNN/TensorRT libraries match this onnxruntime-gpu build",
            ", ".join(provider_name(s) for s in requested),
            ", ".join(fell_back),
            ", ".join(active) or "nothing",
        )
    return fell_back
