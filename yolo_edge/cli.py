"""``yolo-edge``: detect on images, manage models, export Ultralytics checkpoints and Triton repositories."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .cli_engine import add_build_engine_parser
from .cli_triton import add_export_triton_parser
from .errors import YoloEdgeError

log = logging.getLogger("yolo_edge.cli")


def _progress_iter(items: Sequence, enabled: bool, desc: str):
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


def cmd_detect(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .image import load_image

    paths = [Path(p) for p in args.images]
    det = Detector(args.model, backend=args.backend, conf=args.conf, iou=args.iou, max_det=args.max_det,
                   classes=args.classes)
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    results = []
    failed = 0
    for path in _progress_iter(paths, not args.no_progress and not args.json, "detect"):
        try:
            frame = load_image(path)
            (dets,), timings = det.predict([frame])
        except YoloEdgeError as exc:  # one bad file must not stop a batch run
            failed += 1
            log.error("%s: %s", path, exc)
            results.append({"image": str(path), "error": str(exc)})
            continue
        record = {"image": str(path), "model": det.info.name, "model_sha256": det.info.sha256,
                  **dets.to_dict(), "timing": timings.to_dict()}
        results.append(record)
        if save:
            import cv2

            cv2.imwrite(str(save / path.name), dets.draw(frame))
            (save / (path.stem + ".json")).write_text(json.dumps(record, indent=2))
        if not args.json:
            labels = ", ".join(f"{d['label']} {d['confidence']:.2f}" for d in record["detections"]) or "nothing"
            print(f"{path}: {len(dets)} objects ({labels}) in {timings.total_s * 1e3:.1f} ms")
    if args.json:
        print(json.dumps(results if len(results) != 1 else results[0], indent=2))
    if save:
        print(f"annotated images and JSON written to {save}/", file=sys.stderr)
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import fetch as fetch_mod
    from .models.registry import DEFAULT_MODEL, MODELS, SAMPLES, load_local_registry, model_path

    if args.action == "list":
        print(f"{'name':<20} {'fetched':<8} {'classes':>7} {'imgsz':>9}  description")
        for name, spec in MODELS.items():
            mark = "yes" if model_path(name).is_file() else "no"
            default = " (default)" if name == DEFAULT_MODEL else ""
            print(f"{name:<20} {mark:<8} {spec.num_classes:>7} {spec.imgsz[0]:>4}x{spec.imgsz[1]:<4}  {spec.description}{default}")
        for name, entry in load_local_registry().items():
            print(f"{name:<20} {'local':<8} {len(entry.names):>7} {entry.imgsz[0]:>4}x{entry.imgsz[1]:<4}  {entry.path}")
        return 0
    names = list(MODELS) if args.all or not args.names else args.names
    status = 0
    for name in names:
        try:
            if args.action == "fetch":
                path = fetch_mod.fetch_model(name, force=args.force, progress=lambda m: print(f"  {m}", file=sys.stderr))
            else:
                path = fetch_mod.verify_model(name)
            print(f"{name}: ok  sha256={MODELS[name].onnx_sha256}  {path}")
        except YoloEdgeError as exc:
            print(f"{name}: FAILED  {exc}", file=sys.stderr)
            status = 1
    if args.action == "fetch" and (args.all or not args.names):
        for name in SAMPLES:
            print(f"sample {name}: {fetch_mod.fetch_sample(name)}")
    return status


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_ultralytics

    entry = export_ultralytics(args.weights, imgsz=args.imgsz, name=args.name, opset=args.opset,
                               dynamic=args.dynamic, nms=args.nms, nms_conf=args.nms_conf, nms_iou=args.nms_iou,
                               out_dir=args.out)
    print(f"exported {entry.name}: {entry.path}\n  sha256={entry.sha256} classes={len(entry.names)} "
          f"imgsz={list(entry.imgsz)} opset={entry.opset}\n  use it with Detector({entry.name!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-edge", description="YOLO object detection on the edge and in the cloud")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="detect objects in image files")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", default=None, help="registry name, registered export or .onnx path (default: yolov3-tiny-coco)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class ids")
    p.add_argument("--save", metavar="DIR", help="write annotated images and one JSON per image here")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of a summary")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("models", help="list, fetch or verify pinned models")
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*", help="model names (default: all)")
    p.add_argument("--all", action="store_true", help="every pinned model and the sample images")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="export an Ultralytics .pt to ONNX and register it (needs yolo-edge[export])")
    p.add_argument("weights", help="Ultralytics checkpoint (.pt) or model yaml")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--name", default=None, help="registry name (default: the file's stem)")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch axis")
    p.add_argument("--nms", action="store_true", help="include NMS in the graph ([B, 300, 6] output)")
    p.add_argument("--nms-conf", type=float, default=0.25,
                   help="with --nms: confidence threshold baked into the graph (default 0.25)")
    p.add_argument("--nms-iou", type=float, default=0.45,
                   help="with --nms: IoU threshold baked into the graph (default 0.45, as detect)")
    p.add_argument("--out", default=None, help="directory for the .onnx (default: the model cache)")
    p.set_defaults(func=cmd_export)

    add_build_engine_parser(sub)
    add_export_triton_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except YoloEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
