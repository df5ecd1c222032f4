"""Serve yolo-edge models with Triton Inference Server (and KServe's Triton runtime).

- :mod:`~yolo_edge.triton.export`: ``export_triton`` writes a model repository
  (``yolo-edge export-triton``).
- :mod:`~yolo_edge.triton.config`: the ``config.pbtxt`` it writes, typed and rendered.
- :mod:`~yolo_edge.triton.onnx_batch`: a dynamic batch axis for static-batch ONNX files.
- :mod:`~yolo_edge.triton.python_model`: the Python-backend model for Triton builds
  without the ONNX Runtime backend.

The client side is :class:`yolo_edge.remote.oip.OipClient`. Nothing here is imported by
``import yolo_edge``.
"""

from .export import TritonExport, export_triton

__all__ = ["TritonExport", "export_triton"]
