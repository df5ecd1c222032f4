"""Give a static-batch ONNX a dynamic batch axis, and prove the result computes the same.

Triton batches requests only when the model's first axis is variable. Exports made
with a fixed batch of 1 (Ultralytics' default) also bake that 1 into ``Reshape`` shape
constants (``[1, 66, -1]``, ``[1, 4, 16, 8400]`` in a YOLOv8 head); those become 0,
which ONNX defines as "copy this axis from the input", i.e. the batch. Intermediate
shape annotations are dropped so nothing still says 1.

>>> make_batch_dynamic("yolov8s.onnx", "yolov8s-dyn.onnx")       # doctest: +SKIP
>>> check_same_outputs("yolov8s.onnx", "yolov8s-dyn.onnx", batch=8)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import BackendError, UnsupportedModelError

__all__ = ["make_batch_dynamic", "check_same_outputs"]

logger = logging.getLogger(__name__)

BATCH_AXIS = "batch"


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise BackendError("the onnx package is needed to edit the model: pip install onnx") from exc
    return onnx


def make_batch_dynamic(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Write ``src`` with a dynamic batch axis to ``dst``; return how many Reshape shape constants it rewrote."""
    onnx = _import_onnx()
    from onnx import numpy_helper

    model = onnx.load(os.fspath(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"{os.fspath(src)}: expected one image input, found {len(inputs)}")
    static = inputs[0].type.tensor_type.shape.dim[0]
    if not static.HasField("dim_value"):
        raise UnsupportedModelError(f"{os.fspath(src)}: the batch axis is already dynamic")
    batch = static.dim_value
    for value in (*inputs, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].Clear()
            dims[0].dim_param = BATCH_AXIS
    del graph.value_info[:]  # stale intermediate shapes that still say batch == 1

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            raise UnsupportedModelError(f"{os.fspath(src)}: Reshape {node.name!r} has allowzero=1; "
                                        "export the model with a dynamic batch instead")
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim != 1 or shape.size == 0 or shape[0] != batch:
            continue
        fixed = shape.copy()
        fixed[0] = 0  # "copy the input's axis 0": the batch, whatever it is at run time
        if all(c.op_type == "Reshape" and c.input[1] == node.input[1] for c in consumers[node.input[1]]):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))
        else:  # the constant feeds something else too: give this Reshape its own copy
            name = f"{node.input[1]}__dynamic_batch"
            if name not in inits:
                inits[name] = numpy_helper.from_array(fixed, name)
                graph.initializer.append(inits[name])
            node.input[1] = name
        rewritten += 1
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise UnsupportedModelError(f"{os.fspath(src)}: the batch-dynamic graph is invalid: {exc}") from exc
    onnx.save(model, os.fspath(dst))
    logger.info("%s: batch axis made dynamic (%d Reshape shape constants rewritten) -> %s", src, rewritten, dst)
    return rewritten


def check_same_outputs(original: str | os.PathLike, dynamic: str | os.PathLike, *, batch: int,
                       seed: int = 0, atol: float = 1e-3, rtol: float = 1e-4) -> float:
    """Run ``dynamic`` on ``batch`` frames at once and ``original`` one frame at a time; raise unless equal.

    Returns the largest absolute difference seen.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - core dependency
        raise BackendError("onnxruntime is needed to check the exported model") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ref = ort.InferenceSession(os.fspath(original), sess_options=options, providers=["CPUExecutionProvider"])
    dyn = ort.InferenceSession(os.fspath(dynamic), sess_options=options, providers=["CPUExecutionProvider"])
    inp = ref.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    frames = np.random.default_rng(seed).random((batch, *inp.shape[1:]), dtype=np.float32).astype(dtype)
    try:
        together = dyn.run(None, {dyn.get_inputs()[0].name: frames})
    except Exception as exc:  # onnxruntime's own errors
        raise UnsupportedModelError(f"{os.fspath(dynamic)} does not run at batch {batch}: {exc}; "
                                    "export the model with a dynamic batch instead") from exc
    worst = 0.0
    for i in range(batch):
        alone = ref.run(None, {inp.name: frames[i:i + 1]})
        for a, b in zip(alone, together):
            if a.shape[1:] != b.shape[1:] or b.shape[0] != batch:
                raise UnsupportedModelError(f"{os.fspath(dynamic)} answers shape {list(b.shape)} at batch {batch}, "
                                            f"the original {list(a.shape)} at batch 1")
            worst = max(worst, float(np.abs(a[0].astype(np.float32) - b[i].astype(np.float32)).max()))
            if not np.allclose(a[0], b[i], atol=atol, rtol=rtol):
                raise UnsupportedModelError(f"{os.fspath(dynamic)}: frame {i} of a batch of {batch} differs from "
                                            f"the original model's answer by up to {worst:g}")
    return worst
