"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where present."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError
from .providers import check_fallback, ort_providers

__all__ = ["OnnxRuntimeBackend"]

log = logging.getLogger(__name__)


class OnnxRuntimeBackend:
    """Run an ONNX model with onnxruntime.

    ``providers`` is an ordered list of provider names or ``(name, options)`` pairs; by
    default the best available of TensorRT, CUDA and CPU, with the TensorRT engine cache in
    ``cache_dir`` when one is given. onnxruntime silently falls back
    to CPU when CUDA libraries are missing, so :attr:`providers` reports the providers the
    session really uses, and a fallback is logged as a warning.

    ``InferenceSession.run`` is thread-safe, so one backend serves many threads.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        fp16: bool = True,
        device_id: int = 0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - core dependency
            raise BackendError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from exc
        requested = list(providers) if providers is not None else ort_providers(
            ort.get_available_providers(), cache_dir=cache_dir, fp16=fp16, device_id=device_id)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            so.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            so.inter_op_num_threads = int(inter_op_threads)
        so.log_severity_level = 3  # onnxruntime's own warnings go through our check below instead
        try:
            self._session = ort.InferenceSession(os.fspath(path), sess_options=so, providers=requested)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc
        self._active = tuple(self._session.get_providers())
        self.fell_back = check_fallback(requested, self._active)  # warns loudly, never silently
        inp = self._session.get_inputs()
        if len(inp) != 1:
            raise BackendError(f"expected a model with one image input, {path} has {len(inp)}")
        self.input_name = inp[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp[0].shape)
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.output_shapes = [list(o.shape) for o in self._session.get_outputs()]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._active

    @property
    def max_batch(self) -> int:
        b = self.input_shape[0]
        return 64 if b is None else int(b)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self._session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:
            raise BackendError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
