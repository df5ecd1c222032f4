"""BentoML's own floor: a minimal 1.4 service that takes the same multipart upload as
``/detect`` (files in the field ``images``) and answers an empty list, with BentoML's
defaults (access log on, its own multipart reader, one worker, one thread).

``benchmarks/service_bench.py`` serves it beside ``bentos.service:YoloEdge`` with the
no-inference backend (``YOLO_EDGE_BENCH_NO_INFERENCE=1``) to compare the two serving paths::

    cd benchmarks && bentoml serve bentoml_minimal:Minimal --host 127.0.0.1 --port 3010
"""

from __future__ import annotations

from pathlib import Path

import bentoml


@bentoml.service(workers=1, threads=1)
class Minimal:
    @bentoml.api
    def detect(self, images: list[Path]) -> list:
        return []
