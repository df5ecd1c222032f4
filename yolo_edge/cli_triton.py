"""``yolo-edge export-triton``: write a Triton model repository for a model.

    $ yolo-edge export-triton yolov8s-fall --out model_repository
    wrote model_repository/yolov8s-fall (onnxruntime_onnx, max batch 8, KIND_GPU)
      sha256=eee43d68...  serve it:  tritonserver --model-repository model_repository
      detect: yolo_edge.detect(img, model='yolov8s-fall', endpoint='oip+http://HOST:8000/v2/models/yolov8s-fall')
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_engine import _positive_int

__all__ = ["add_export_triton_parser", "cmd_export_triton"]


def cmd_export_triton(args: argparse.Namespace) -> int:
    from .triton.export import export_triton

    out = export_triton(
        args.model, args.out, name=args.name, platform=args.platform, max_batch=args.max_batch,
        preferred_batch_sizes=args.preferred_batch, max_queue_delay_us=args.queue_delay_us,
        instances=args.instances, device=args.device, input_dtype=args.input_dtype, precision=args.precision,
        force=args.force,
    )
    cfg = out.config
    print(f"wrote {out.model_dir} ({cfg.platform}, max batch {cfg.max_batch_size}, {cfg.instance_kind})\n"
          f"  sha256={out.sha256}  served file sha256={out.served_sha256}\n"
          f"  serve it:  tritonserver --model-repository {out.model_dir.parent}\n"
          f"  detect:    yolo_edge.detect(img, model={args.model!r}, "
          f"endpoint='oip+http://HOST:8000/v2/models/{cfg.name}')")
    return 0


def add_export_triton_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export-triton`` to ``yolo-edge``'s subcommands; the handler is ``args.func``."""
    p = subparsers.add_parser(
        "export-triton",
        help="write a Triton model repository (config.pbtxt + model) for Triton, KServe or OpenVINO",
        description="Write OUT/NAME/config.pbtxt and OUT/NAME/1/model.* for Triton Inference Server, with "
                    "dynamic batching, a deadline-aware queue policy and the model's sha256 in parameters.",
    )
    p.add_argument("model", help="registry name, registered export or .onnx path")
    p.add_argument("--out", required=True, help="the model repository directory (created if missing)")
    p.add_argument("--name", default=None, help="Triton model name (default: the model's name)")
    p.add_argument("--platform", choices=["onnxruntime", "tensorrt", "python"], default="onnxruntime",
                   help="onnxruntime (default), tensorrt (builds a plan here: needs TensorRT and the serving GPU), "
                        "or python (onnxruntime inside Triton's Python backend, for builds without the ONNX "
                        "Runtime backend)")
    p.add_argument("--max-batch", type=_positive_int, default=8, help="max_batch_size (default 8)")
    p.add_argument("--preferred-batch", type=_positive_int, nargs="+", default=[4, 8],
                   help="dynamic batching's preferred batch sizes (default 4 8)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long a request may wait for a fuller batch, in microseconds (default 2000)")
    p.add_argument("--instances", type=_positive_int, default=1, help="model instances per device (default 1)")
    p.add_argument("--device", choices=["gpu", "cpu"], default=None,
                   help="instance kind (default: gpu; cpu for --platform python)")
    p.add_argument("--input-dtype", choices=["fp32", "fp16"], default=None,
                   help="datatype on the wire (default: the ONNX's; fp16 halves the upload, --platform python only "
                        "for an FP32 ONNX)")
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="TensorRT engine precision")
    p.add_argument("--force", action="store_true", help="replace OUT/NAME if it exists")
    p.set_defaults(func=cmd_export_triton)
    return p

