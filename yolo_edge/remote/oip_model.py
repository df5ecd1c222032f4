"""What an Open Inference Protocol endpoint serves, checked against the local model.

Pure functions of the JSON the server answered (``GET /v2/models/NAME`` metadata, and
Triton's ``GET /v2/models/NAME/config`` where it exists) and of the local ONNX file's
interface; :mod:`yolo_edge.remote.oip` fetches the JSON.

An endpoint serves *this* model when it takes one FP32/FP16 input of shape
``[-1|N, 3, H, W]`` equal to the local one past the batch axis, answers an output of the
local output's shape, and publishes the local model's sha256: in the Triton config's
``parameters`` (``yolo-edge export-triton`` writes it), or in the metadata's
``parameters`` on servers without the config extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.onnx_info import OnnxInfo
from ..errors import CloudError, CloudModelMismatchError
from .oip_wire import OipUrl, trailing_dims_match

__all__ = ["ServedModel", "check_served", "identity_problem", "check_output"]


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    """What the endpoint serves, as verified against the local model."""

    name: str
    version: str | None
    platform: str
    sha256: str | None
    input_name: str
    datatype: str  # "FP32" or "FP16": what the batch is sent as
    input_shape: tuple[int, ...]  # batch first, -1 where dynamic
    output_name: str
    output_shape: tuple[int, ...]
    max_batch: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def check_output(header: dict, arrays: dict[str, np.ndarray], served: ServedModel, batch: int, url: str) -> np.ndarray:
    name, version = header.get("model_name"), header.get("model_version")
    if name not in (None, "", served.name) or (served.version and version not in (None, "", served.version)):
        raise CloudModelMismatchError(f"{url} answered from model {name!r} version {version}, "
                                      f"not the verified {served.name!r} version {served.version}")
    out = arrays.get(served.output_name)
    if out is None:
        raise CloudError(f"{url} answered outputs {sorted(arrays)}, without {served.output_name!r}")
    if out.shape[0] != batch or not trailing_dims_match(served.output_shape, out.shape):
        raise CloudError(f"{url} answered {served.output_name!r} of shape {list(out.shape)} for a batch of {batch}; "
                         f"expected {[batch, *served.output_shape[1:]]}")
    return out


def check_served(meta: Any, config: Any, local: OnnxInfo, url: OipUrl, limit: int | None) -> ServedModel:
    """The served model's interface, or CloudModelMismatchError saying how it differs from the local one."""
    try:
        return _check_served(meta, config, local, url, limit)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # JSON of an unexpected form
        raise CloudError(f"{url}: malformed model metadata or config ({type(exc).__name__}: {exc}): "
                         f"{str(meta)[:200]!r}") from exc


def _check_served(meta: Any, config: Any, local: OnnxInfo, url: OipUrl, limit: int | None) -> ServedModel:
    where = str(url)
    if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), list) or not isinstance(meta.get("outputs"), list):
        raise CloudError(f"{where}: the model metadata {str(meta)[:200]!r} has no 'inputs'/'outputs' lists; "
                         "is this an Open Inference Protocol server?")
    local_in = list(local.input_shape)
    want = f"one FP32/FP16 input of shape [-1, {', '.join(str(d) for d in local_in[1:])}]"
    if len(meta["inputs"]) != 1:
        raise CloudModelMismatchError(f"{where} takes {len(meta['inputs'])} inputs; the local model takes {want}")
    inp = meta["inputs"][0]
    shape = [int(d) for d in inp.get("shape", [])]
    if inp.get("datatype") not in ("FP32", "FP16") or len(shape) != 4 or shape[1:] != local_in[1:]:
        raise CloudModelMismatchError(f"{where} takes {inp.get('datatype')} {shape}; the local model takes {want}")
    local_out = local.output_shapes[0]
    outputs = [o for o in meta["outputs"] if o.get("datatype") in ("FP32", "FP16")
               and trailing_dims_match([int(d) for d in o.get("shape", [])], local_out)]
    if not outputs:
        seen = [(o.get("name"), o.get("shape")) for o in meta["outputs"]]
        raise CloudModelMismatchError(f"{where} outputs {seen}; none has the local model's output shape {local_out}")
    out = next((o for o in outputs if o.get("name") == local.output_names[0]), outputs[0])
    max_batch = _served_max_batch(config, shape[0], limit)
    versions = [str(v) for v in meta.get("versions") or []]
    version = url.version or (max(versions, key=lambda v: (len(v), v)) if versions else None)
    return ServedModel(
        name=str(meta.get("name", url.model)), version=version, platform=str(meta.get("platform", "")),
        sha256=_served_sha256(meta, config), input_name=str(inp["name"]), datatype=str(inp["datatype"]),
        input_shape=tuple(shape), output_name=str(out["name"]),
        output_shape=tuple(int(d) for d in out["shape"]), max_batch=max_batch,
    )


def _served_max_batch(config: Any, batch_dim: int, limit: int | None) -> int:
    server = int(config.get("max_batch_size", 0) or 0) if isinstance(config, dict) else 0
    if server <= 0:  # no Triton batching: the input's own batch axis decides
        server = batch_dim if batch_dim > 0 else (limit or 8)
    return min(server, limit) if limit else server


def _served_sha256(meta: dict, config: Any) -> str | None:
    """The sha256 the server publishes: Triton config ``parameters``, else metadata ``parameters``."""
    for source in (config, meta):
        params = source.get("parameters") if isinstance(source, dict) else None
        if isinstance(params, dict) and "sha256" in params:
            value = params["sha256"]
            return str(value.get("string_value", "") if isinstance(value, dict) else value).lower() or None
    return None


def identity_problem(served: ServedModel, expected: str, url: OipUrl) -> str | None:
    if served.sha256 is None:
        return (f"{url} does not say which model it serves (no 'sha256' in the model config parameters): "
                "export the repository with `yolo-edge export-triton`, which writes it")
    if served.sha256 != expected:
        return (f"{url} serves model sha256 {served.sha256[:12]}..., the local model is {expected[:12]}...: "
                "deploy the same model file")
    return None
