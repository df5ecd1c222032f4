"""``yolo-edge build-engine``: build (or find cached) the TensorRT engine for this GPU.

Run it once when provisioning a Jetson so the first detection does not wait minutes
for a build; the engine lands in the same cache the TensorRT backend reads.

    $ yolo-edge build-engine yolov8s-fall --precision fp16 --max-batch 8
    Building  [##########----------]  12/24 ...
    engine  ~/.cache/yolo-edge/engines/yolov8s-fall-fp16-orin-sm87-trt10.3.0-1a2b....engine
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["add_build_engine_parser", "cmd_build_engine", "TqdmBuildProgress"]


class TqdmBuildProgress:
    """TensorRT build phases as nested tqdm bars on stderr (see ``trt_build.BuildProgress``).

    TensorRT calls in from its own threads; ``trt_build`` serializes the calls.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = False  # a build ran (False: the engine came from the cache)
        self._bars: dict[str, Any] = {}

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.started = True
        if not self.enabled:
            return
        from tqdm import tqdm

        depth = len(self._bars)
        self._bars[phase] = tqdm(total=num_steps, desc=("  " * depth) + phase, position=depth, leave=depth == 0, file=sys.stderr)

    def step_complete(self, phase: str, step: int) -> bool:
        bar = self._bars.get(phase)
        if bar is not None:
            bar.update(step + 1 - bar.n)
        return True  # never cancel

    def phase_finish(self, phase: str) -> None:
        bar = self._bars.pop(phase, None)
        if bar is not None:
            bar.update(bar.total - bar.n)
            bar.close()


def cmd_build_engine(args: argparse.Namespace) -> int:
    from .backends.tensorrt import TensorRTBackend, import_tensorrt
    from .models.resolve import resolve_model

    import_tensorrt()  # fail fast, before hashing a large ONNX, with install instructions
    resolved = resolve_model(args.model)
    progress = TqdmBuildProgress(enabled=not args.no_progress)
    print(f"preparing TensorRT engine for {resolved.name} ({args.precision}, max batch {args.max_batch}); "
          "a first build takes minutes", file=sys.stderr)
    t0 = time.perf_counter()
    be = TensorRTBackend(
        resolved.path,
        precision=args.precision,
        max_batch=args.max_batch,
        cache_dir=args.cache_dir,
        device=args.device,
        progress=progress,
        workspace_bytes=int(args.workspace_gb * (1 << 30)) if args.workspace_gb else None,
    )
    elapsed = time.perf_counter() - t0
    try:
        import numpy as np

        # Smoke run: an engine that deserializes but cannot execute should fail here, not in production.
        shape = (1, *be.input_shape[1:])
        t1 = time.perf_counter()
        be.run(np.zeros(shape, np.float32))
        run_ms = (time.perf_counter() - t1) * 1e3
    finally:
        be.close()
    how = "built" if progress.started else "found in cache"
    print(f"engine  {be.engine_path}\n"
          f"        {how} in {elapsed:.1f} s; {be.precision} on {be.gpu_name} "
          f"(sm{be.compute_capability[0]}{be.compute_capability[1]}), max batch {be.max_batch}; "
          f"first run (batch 1) {run_ms:.1f} ms")
    return 0


def add_build_engine_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``build-engine`` to ``yolo-edge``'s subcommands; the handler is ``args.func``."""
    p = subparsers.add_parser(
        "build-engine",
        help="build the TensorRT engine for a model on this GPU (cached; needs TensorRT)",
        description="Build (or find in the cache) the TensorRT engine for MODEL on this GPU.",
    )
    p.add_argument("model", help="registry name, registered export or .onnx path")
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16",
                   help="fp16 (default; fp32 on TensorRT 11 unless the ONNX is already fp16) or fp32")
    p.add_argument("--max-batch", type=_positive_int, default=8, help="largest batch of the profile (dynamic-batch models)")
    p.add_argument("--cache-dir", default=None, help="engine cache (default: $YOLO_EDGE_HOME/engines)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--workspace-gb", type=float, default=None, help="builder workspace limit in GiB (default: TensorRT's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_build_engine)
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value
