"""From what the caller passed as ``model=`` to a verified ONNX file and its description."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import ModelNotFoundError, UnsupportedModelError
from .fetch import sha256_file, verify_model, verify_sha256
from .registry import DEFAULT_MODEL, MODELS, load_local_registry

__all__ = ["ResolvedModel", "resolve_model", "parse_metadata"]


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    sha256: str
    output_format: str = "auto"


def resolve_model(
    model: str | os.PathLike | ResolvedModel | None, root: str | os.PathLike | None = None
) -> ResolvedModel:
    """Registry name, locally registered export, or path to an ``.onnx`` file -> verified file.

    Pinned and registered models are checked against their sha256 on every load; a
    plain path is hashed so results can still name exactly which model produced them.
    A ResolvedModel is already verified and comes back as it is.
    """
    if isinstance(model, ResolvedModel):
        return model
    model = DEFAULT_MODEL if model is None else model
    root_path = Path(root) if root is not None else None
    if isinstance(model, str) and model in MODELS:
        path = verify_model(model, root_path)
        spec = MODELS[model]
        return ResolvedModel(model, path, spec.onnx_sha256, spec.output_format)
    if isinstance(model, str) and not model.endswith(".onnx"):
        local = load_local_registry(root_path)
        if model in local:
            entry = local[model]
            path = Path(entry.path)
            if not path.is_file():
                raise ModelNotFoundError(f"registered model {model!r} points to {path}, which does not exist")
            verify_sha256(path, entry.sha256, f"registered model {model}")
            return ResolvedModel(model, path, entry.sha256)
    path = Path(model)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise UnsupportedModelError(
                f"{path} is not an ONNX file: export it first (`yolo-edge export {path}` for an Ultralytics .pt)"
            )
        return ResolvedModel(path.stem, path, sha256_file(path))
    raise ModelNotFoundError(
        f"model {str(model)!r} not found: expected one of {sorted(MODELS)}, a name registered with "
        "`yolo-edge export`, or an existing .onnx path (`yolo-edge models list` shows what is available)"
    )


def parse_metadata(meta: Mapping[str, str]) -> dict:
    """Ultralytics-style ONNX metadata (strings) -> python values; unknown keys are dropped."""
    out: dict = {}
    for key in ("names", "imgsz", "stride", "batch"):
        if key in meta:
            try:
                out[key] = ast.literal_eval(meta[key])
            except (ValueError, SyntaxError) as exc:
                raise UnsupportedModelError(f"ONNX metadata {key!r} is not a literal: {meta[key][:80]!r}") from exc
    for key in ("task", "output_format", "version", "description"):
        if key in meta:
            out[key] = meta[key]
    for key in ("end2end", "nms"):  # NMS-included exports
        if key in meta:
            out[key] = str(meta[key]).lower() == "true"
    return out
