"""What an ONNX file's interface looks like, read without an inference runtime.

The TensorRT and PyTorch backends need the same facts the onnxruntime backend gets
from its session (input name and shape, output shapes, Ultralytics metadata), so the
Detector can describe the model identically whichever backend runs it. Only the graph
header is parsed: no weights are copied into a runtime.

    >>> info = read_onnx_info("model.onnx")                # doctest: +SKIP
    >>> info.input_shape, info.output_shapes[0]             # doctest: +SKIP
    ((1, 3, 640, 640), [1, 6, 8400])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import BackendError, ModelNotFoundError, UnsupportedModelError

__all__ = ["OnnxInfo", "read_onnx_info"]


@dataclass(frozen=True)
class OnnxInfo:
    input_name: str
    #: (batch, channels, height, width); None where the axis is symbolic/dynamic
    input_shape: tuple[int | None, ...]
    output_names: list[str]
    #: like onnxruntime's: ints for fixed axes, the symbolic name (str) or None otherwise
    output_shapes: list[list[int | str | None]]
    metadata: dict[str, str] = field(default_factory=dict)
    op_types: frozenset[str] = frozenset()

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] is None


def _dims(value_info) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Parse ``path`` and describe its single image input and its outputs."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendError("the onnx package is needed to read the model's interface: pip install onnx") from exc
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"ONNX file {os.fspath(path)!r} does not exist")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UnsupportedModelError(f"{os.fspath(path)} is not a readable ONNX file: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"expected a model with one image input, {os.fspath(path)} has {len(inputs)}")
    in_dims = _dims(inputs[0])
    if len(in_dims) != 4:
        raise UnsupportedModelError(
            f"expected an NCHW image input of rank 4, {os.fspath(path)} has input shape {in_dims}"
        )
    return OnnxInfo(
        input_name=inputs[0].name,
        input_shape=tuple(d if isinstance(d, int) else None for d in in_dims),
        output_names=[o.name for o in model.graph.output],
        output_shapes=[_dims(o) for o in model.graph.output],
        metadata={p.key: p.value for p in model.metadata_props},
        op_types=frozenset(n.op_type for n in model.graph.node),
    )
