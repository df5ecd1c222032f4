"""A Triton Python-backend model that runs the exported ONNX with onnxruntime.

``yolo-edge export-triton --platform python`` copies this file to ``<repo>/<name>/1/model.py``,
for Triton builds that have the Python backend but not the ONNX Runtime one (the
``tritonserver`` inside the ``nvidia-pytriton`` wheel, for example). Triton's dynamic
batcher hands :meth:`TritonPythonModel.execute` several requests at once; they run as one
onnxruntime batch and the outputs are split back per request. The wire datatype may be
FP16 (half the upload) while the ONNX takes FP32: inputs are cast to the ONNX's type.

It needs ``numpy`` and ``onnxruntime`` in the Python that runs Triton's Python stub.
``triton_python_backend_utils`` exists only inside that stub, so it is imported in the
methods, and this module imports anywhere.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["TritonPythonModel"]

_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_specs = [(o["name"], _NUMPY[o["data_type"]]) for o in config["output"]]
        onnx_type = self.session.get_inputs()[0].type  # "tensor(float)" or "tensor(float16)"
        self.onnx_dtype = np.float16 if "float16" in onnx_type else np.float32

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = np.concatenate(arrays).astype(self.onnx_dtype, copy=False)
        try:
            outputs = self.session.run([name for name, _ in self.output_specs], {self.input_name: batch})
        except Exception as exc:  # one bad batch answers every request with the error, never crashes the stub
            error = pb_utils.TritonError(f"onnxruntime failed on a batch of shape {list(batch.shape)}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size]).astype(dtype, copy=False))
                       for (name, dtype), out in zip(self.output_specs, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
