"""Write a Triton model repository for a yolo-edge model (``yolo-edge export-triton``).

    DIR/<name>/config.pbtxt        platform, max_batch_size, I/O, instance_group,
                                   dynamic_batching with a REJECT queue policy, parameters
    DIR/<name>/1/model.onnx        platform onnxruntime (and python): batch axis dynamic
    DIR/<name>/1/model.plan        platform tensorrt: built here, for this GPU and TensorRT
    DIR/<name>/1/model.py          platform python: onnxruntime inside Triton's Python backend

``parameters`` carry the model's identity: ``sha256`` is the local model's (what
``Detector(model).info.sha256`` says, and what :class:`~yolo_edge.remote.oip.OipClient`
checks), ``served_sha256`` the file Triton loads (they differ when the batch axis had to
be made dynamic, after :func:`~yolo_edge.triton.onnx_batch.check_same_outputs` proved the
two compute the same), and ``metadata`` the names/imgsz/stride in the form Ultralytics'
Triton client reads.

>>> export_triton("yolov8s-fall", "model_repository")           # doctest: +SKIP
TritonExport(model_dir=PosixPath('model_repository/yolov8s-fall'), ...)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BackendError, ConfigError, UnsupportedModelError
from ..models.fetch import sha256_file
from ..models.resolve import ResolvedModel, resolve_model
from .config import PLATFORMS, DynamicBatching, TensorSpec, TritonModelConfig, render_config

__all__ = ["TritonExport", "export_triton"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ONNX_TYPES = {1: "FP32", 10: "FP16"}  # onnx.TensorProto.FLOAT, FLOAT16
_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote."""

    model_dir: Path
    config_path: Path
    model_file: Path
    config: TritonModelConfig
    sha256: str
    served_sha256: str


def export_triton(
    model: str | os.PathLike | ResolvedModel | None,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    platform: str = "onnxruntime",
    max_batch: int = 8,
    preferred_batch_sizes: Sequence[int] = (4, 8),
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    device: str | None = None,
    input_dtype: str | None = None,
    precision: str = "fp16",
    force: bool = False,
    root: str | os.PathLike | None = None,
    trt: Any | None = None,
) -> TritonExport:
    """Write ``out/<name>/`` (``name`` defaults to the model's) for Triton's ``platform``.

    ``platform`` is ``"onnxruntime"`` (``onnxruntime_onnx``), ``"tensorrt"``
    (``tensorrt_plan``, needs TensorRT here: ``trt`` is the module, for tests) or
    ``"python"`` (Triton builds without the ONNX Runtime backend). ``device`` is ``"gpu"``
    (default for onnxruntime/tensorrt) or ``"cpu"`` (default, and the only choice, for
    python). ``input_dtype`` ``"fp16"`` halves the upload; only the python platform can
    take FP16 in front of an FP32 ONNX (it casts).
    """
    if platform not in PLATFORMS:
        raise ConfigError(f"platform must be one of {sorted(PLATFORMS)}, got {platform!r}")
    kind = _instance_kind(platform, device)
    if not 1 <= int(max_batch) <= 1024:
        raise ConfigError(f"max_batch must be within 1..1024, got {max_batch!r}")
    batching = DynamicBatching(preferred_batch_size=tuple(int(b) for b in preferred_batch_sizes),
                               max_queue_delay_microseconds=int(max_queue_delay_us))
    batching.check(int(max_batch))
    if int(instances) < 1:
        raise ConfigError(f"instances must be >= 1, got {instances!r}")
    if platform == "tensorrt":
        trt = _tensorrt(trt)
    resolved = resolve_model(model, root)
    name = name or resolved.name
    if not _NAME.match(name):
        raise ConfigError(f"Triton model name {name!r}: use letters, digits, '_', '.' and '-' (it is a directory)")
    repo = Path(out)
    model_dir = repo / name
    if model_dir.exists() and not force:
        raise ConfigError(f"{model_dir} already exists: choose another --name or --out, or pass --force to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=repo) as tmp:
        staged = Path(tmp) / name
        (staged / "1").mkdir(parents=True)
        static_batch, (input_type, *output_types) = _io(resolved)
        wire_type = _wire_type(platform, input_type, input_dtype)
        onnx_path = _dynamic_onnx(resolved, staged / "1" / "model.onnx", static_batch, max_batch)
        model_file = staged / "1" / _FILES[platform]
        if platform == "tensorrt":
            _build_plan(trt, onnx_path, model_file, precision=precision, max_batch=int(max_batch))
        elif platform == "python":
            shutil.copyfile(Path(__file__).with_name("python_model.py"), model_file)
        served_sha = sha256_file(model_file if platform == "tensorrt" else onnx_path)
        config = _config(resolved, name, platform, kind, onnx_path, wire_type, output_types, served_sha,
                         max_batch=int(max_batch), instances=int(instances), batching=batching,
                         extra={"precision": precision} if platform == "tensorrt" else {})
        if platform == "tensorrt":
            onnx_path.unlink()  # Triton loads the plan only
        (staged / "config.pbtxt").write_text(render_config(config))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staged.rename(model_dir)
    logger.info("wrote Triton model %s (%s, max batch %d) to %s", name, config.platform, max_batch, model_dir)
    return TritonExport(model_dir=model_dir, config_path=model_dir / "config.pbtxt",
                        model_file=model_dir / "1" / _FILES[platform], config=config,
                        sha256=resolved.sha256, served_sha256=served_sha)


def _instance_kind(platform: str, device: str | None) -> str:
    device = device or ("cpu" if platform == "python" else "gpu")
    if device not in ("cpu", "gpu"):
        raise ConfigError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if platform == "tensorrt" and device == "cpu":
        raise ConfigError("a TensorRT plan runs on a GPU only: drop --device cpu, or use --platform onnxruntime")
    if platform == "python" and device == "gpu":
        raise ConfigError("the python platform runs onnxruntime on the CPU: use --platform onnxruntime "
                          "or tensorrt for a GPU")
    return "KIND_GPU" if device == "gpu" else "KIND_CPU"


def _tensorrt(trt: Any | None) -> Any:
    if trt is not None:
        return trt
    from ..backends.tensorrt import import_tensorrt

    try:
        return import_tensorrt()
    except BackendError as exc:
        raise BackendError(f"--platform tensorrt builds the engine here, with TensorRT, for this GPU "
                           f"(use the TensorRT version of the Triton server that will load it): {exc}. "
                           "Without TensorRT, export --platform onnxruntime (Triton's ONNX Runtime backend "
                           "can still use TensorRT through its execution accelerators)") from exc


def _io(resolved: ResolvedModel) -> tuple[bool, list[str]]:
    """(whether the batch axis is static, datatypes of the input then each output)."""
    onnx = _import_onnx()
    proto = onnx.load(os.fspath(resolved.path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"{resolved.path}: expected one image input, found {len(inputs)}")
    types = [_ONNX_TYPES.get(v.type.tensor_type.elem_type) for v in (*inputs, *proto.graph.output)]
    if None in types:
        raise UnsupportedModelError(f"{resolved.path}: inputs and outputs must be float32 or float16 tensors")
    return inputs[0].type.tensor_type.shape.dim[0].HasField("dim_value"), types  # type: ignore[return-value]


def _dynamic_onnx(resolved: ResolvedModel, dst: Path, static_batch: bool, max_batch: int) -> Path:
    """Copy the model to ``dst`` with a dynamic batch axis, proved to compute the same."""
    from .onnx_batch import check_same_outputs, make_batch_dynamic

    if not static_batch:
        shutil.copyfile(resolved.path, dst)
        return dst
    make_batch_dynamic(resolved.path, dst)
    batch = min(max_batch, 8)
    worst = check_same_outputs(resolved.path, dst, batch=batch)
    logger.info("the batch-dynamic copy of %s matches it at batch %d (largest difference %g)",
                resolved.name, batch, worst)
    return dst


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendError("the onnx package is needed to export for Triton: pip install onnx") from exc
    return onnx


def _wire_type(platform: str, onnx_type: str, requested: str | None) -> str:
    wanted = (requested or onnx_type).upper()
    if wanted not in ("FP32", "FP16"):
        raise ConfigError(f"input_dtype must be 'fp32' or 'fp16', got {requested!r}")
    if wanted != onnx_type and platform != "python":
        raise ConfigError(f"the ONNX takes {onnx_type}: --platform {platform} serves it as such; "
                          f"{wanted} on the wire needs --platform python (which casts) or an ONNX whose input is {wanted}")
    return wanted


def _build_plan(trt: Any, onnx_path: Path, dst: Path, *, precision: str, max_batch: int) -> None:
    from ..backends.onnx_info import read_onnx_info
    from ..backends.trt_build import build_serialized_engine, effective_precision, make_profile

    info = read_onnx_info(onnx_path)
    plan = build_serialized_engine(trt, onnx_path, precision=effective_precision(trt, precision),
                                   profile=make_profile(info, max_batch), input_name=info.input_name)
    dst.write_bytes(plan)


def _config(resolved: ResolvedModel, name: str, platform: str, kind: str, onnx_path: Path, wire_type: str,
            output_types: list[str], served_sha: str, *, max_batch: int, instances: int,
            batching: DynamicBatching, extra: dict[str, str]) -> TritonModelConfig:
    from ..backends.onnx_info import read_onnx_info
    from ..detector import Detector

    info = read_onnx_info(onnx_path)
    with Detector(resolved, backend="onnxruntime", providers=["CPUExecutionProvider"]) as detector:
        described = detector.info  # names, imgsz, stride, output layout exactly as detect() sees them
    metadata = {"names": described.names, "imgsz": list(described.imgsz), "stride": described.stride,
                "task": described.task, "batch": max_batch, "output_format": described.output_format,
                "model": described.name, "sha256": resolved.sha256}
    outputs = tuple(TensorSpec(n, t, tuple(d if isinstance(d, int) else -1 for d in shape[1:]))
                    for n, t, shape in zip(info.output_names, output_types, info.output_shapes))
    return TritonModelConfig(
        name=name,
        platform=PLATFORMS[platform],
        max_batch_size=max_batch,
        input=TensorSpec(info.input_name, wire_type, tuple(int(d) for d in info.input_shape[1:])),
        outputs=outputs,
        instance_count=instances,
        instance_kind=kind,
        dynamic_batching=batching,
        parameters={"sha256": resolved.sha256, "served_sha256": served_sha, "metadata": repr(metadata), **extra},
    )
