"""Inference backends behind one tiny interface (see :mod:`yolo_edge.backends.base`).

Heavy runtimes are imported inside the module that needs them, never here.
"""

from .base import Backend

__all__ = ["Backend"]
