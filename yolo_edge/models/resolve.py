"""From what the caller passed as ``model=`` to a verified ONNX file and its description."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import ModelIntegrityError, ModelNotFoundError, UnsupportedModelError
from .fetch import sha256_file, verify_model, verify_sha256
from .registry import DEFAULT_MODEL, MODELS, LocalEntry, load_local_registry

__all__ = ["ResolvedModel", "resolve_model", "parse_metadata"]


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    sha256: str
    output_format: str = "auto"


def resolve_model(
    model: str | os.PathLike | ResolvedModel | None, root: str | os.PathLike | None = None, *,
    expected_sha256: str | None = None,
) -> ResolvedModel:
    """Registry name, locally registered export, or path to an ``.onnx`` file -> verified file.

    Pinned and registered models are checked against their sha256 on every load. A file
    given by path is identified by its own sha256: it takes the name of the registered
    model with that sha256, if there is one, and otherwise a name that cannot be taken
    for a registered one (its file stem, suffixed with its short sha256 when the stem is
    a registered name). ``expected_sha256`` pins the file whatever way it is named. A
    ResolvedModel is already verified and comes back as it is (checked against the pin).
    """
    if isinstance(model, ResolvedModel):
        resolved = model
    else:
        resolved = _resolve(DEFAULT_MODEL if model is None else model, Path(root) if root is not None else None)
    if expected_sha256 is not None and resolved.sha256 != expected_sha256:
        raise ModelIntegrityError(
            f"model {str(model)!r} at {resolved.path} has sha256 {resolved.sha256}, but {expected_sha256} was "
            "expected: load the pinned file, or drop expected_sha256= to accept this one"
        )
    return resolved


def _resolve(model: str | os.PathLike, root_path: Path | None) -> ResolvedModel:
    if isinstance(model, str) and model in MODELS:
        path = verify_model(model, root_path)
        spec = MODELS[model]
        return ResolvedModel(model, path, spec.onnx_sha256, spec.output_format)
    local = load_local_registry(root_path)
    if isinstance(model, str) and not model.endswith(".onnx") and model in local:
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
        sha = sha256_file(path)
        return ResolvedModel(_name_for(path, sha, local), path, sha, _format_for(sha))
    raise ModelNotFoundError(
        f"model {str(model)!r} not found: expected one of {sorted(MODELS)}, a name registered with "
        "`yolo-edge export`, or an existing .onnx path (`yolo-edge models list` shows what is available)"
    )


def _name_for(path: Path, sha: str, local: Mapping[str, LocalEntry]) -> str:
    """The registered name whose sha256 this file has, else a name no registered model has."""
    for name, spec in MODELS.items():
        if spec.onnx_sha256 == sha:
            return name
    for name, entry in local.items():
        if entry.sha256 == sha:
            return name
    if path.stem in MODELS or path.stem in local:
        return f"{path.stem}@{sha[:12]}"  # '@' never appears in a registered name
    return path.stem


def _format_for(sha: str) -> str:
    return next((spec.output_format for spec in MODELS.values() if spec.onnx_sha256 == sha), "auto")


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
