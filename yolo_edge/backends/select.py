"""Choosing a backend by name. (Minimal version by the lead; the GPU helper extends `auto`.)"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from ..errors import ConfigError
from .base import Backend

__all__ = ["select_backend"]

log = logging.getLogger(__name__)


def select_backend(
    onnx_path: str | os.PathLike,
    *,
    backend: str = "auto",
    threads: int | None = None,
    providers: Sequence[Any] | None = None,
    **opts: Any,
) -> Backend:
    if backend in ("auto", "onnxruntime"):
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, providers=providers, intra_op_threads=threads)
    raise ConfigError(f"unknown backend {backend!r}: expected 'auto' or 'onnxruntime'")
