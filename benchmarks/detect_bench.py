"""Where time goes in detect(): raw model vs our pipeline vs Ultralytics predict(), side by side.

    python benchmarks/detect_bench.py [--rounds 40] [--threads 2]

Each round runs every contender once, in turn, on the same decoded 1080p frame, so a
noisy, shared machine slows all of them alike; medians and ratios are reported.
Printed as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from yolo_edge import Detector
from yolo_edge.image import decode_image
from yolo_edge.models.fetch import sample_path
from yolo_edge.preprocess import make_batch


def _median_ms(fn: Callable[[], object], samples: list[float]) -> None:
    t0 = time.perf_counter()
    fn()
    samples.append((time.perf_counter() - t0) * 1e3)


def _ultralytics_predictor(model_path: str, imgsz: int):
    try:
        from ultralytics import YOLO
        from ultralytics.utils.nms import TorchNMS
    except ImportError:
        return None
    # the torchvision wheel here cannot run NMS on CPU torch: serve Ultralytics' own TorchNMS
    stub = types.ModuleType("torchvision")
    stub.ops = types.SimpleNamespace(nms=TorchNMS.nms)
    sys.modules["torchvision"] = stub
    model = YOLO(model_path, task="detect")
    return lambda frame: model.predict(frame, imgsz=imgsz, conf=0.25, iou=0.45, verbose=False)


def bench_model(name: str, frame: np.ndarray, jpeg: bytes, rounds: int, threads: int) -> list[tuple[str, float]]:
    det = Detector(name, threads=threads)
    session = det.backend._session  # the same session detect() uses: raw model time
    blob, _ = make_batch([frame], det.info.imgsz)
    feed = {det.backend.input_name: blob}
    ultra = _ultralytics_predictor(det.info.path, det.info.imgsz[0]) if det.info.output_format == "anchor_free" else None
    contenders: dict[str, Callable[[], object]] = {
        "raw session.run": lambda: session.run(None, feed),
        "detect() on a decoded frame": lambda: det(frame),
        "JPEG decode alone": lambda: decode_image(jpeg),
    }
    if ultra:
        contenders["Ultralytics predict() on the frame"] = lambda: ultra(frame)
    for fn in contenders.values():  # warm-up
        fn(), fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    stages: list[float] = []
    for _ in range(rounds):
        for key, fn in contenders.items():
            _median_ms(fn, samples[key])
        _, t = det.predict([frame])  # pre+post timed inside the pipeline itself, per call
        stages.append((t.preprocess_s + t.postprocess_s) * 1e3)
    return [(k, statistics.median(v)) for k, v in samples.items()] + [("letterbox+decode+NMS inside detect()", statistics.median(stages))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny-coco", "yolov8s-fall"])
    args = parser.parse_args()

    photo = cv2.imread(str(sample_path("zidane.jpg")))
    if photo is None:
        sys.exit("sample zidane.jpg is not fetched: run `yolo-edge models fetch --all`")
    frame = cv2.resize(photo, (1920, 1080))  # a decoded 1080p camera frame
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()

    print(f"1080p frame, {args.rounds} interleaved rounds, onnxruntime intra_op_threads={args.threads}\n")
    print("| model | measurement | median ms | vs raw model |")
    print("|---|---|---:|---:|")
    for name in args.models:
        rows = dict(bench_model(name, frame, jpeg, args.rounds, args.threads))
        raw = rows["raw session.run"]
        for key, ms in rows.items():
            if key.startswith("letterbox"):
                continue
            print(f"| {name} | {key} | {ms:.2f} | {ms / raw:.3f}x |")
        overhead = rows["detect() on a decoded frame"] - raw
        print(f"| {name} | pre+post overhead as detect() - raw (noisy difference) | {overhead:.2f} | {overhead / raw * 100:.1f}% of raw |")
        inside = rows["letterbox+decode+NMS inside detect()"]
        print(f"| {name} | **pre+post overhead, timed per stage** | {inside:.2f} | **{inside / raw * 100:.1f}% of raw** |")
        if "Ultralytics predict() on the frame" in rows:
            ratio = rows["Ultralytics predict() on the frame"] / rows["detect() on a decoded frame"]
            print(f"| {name} | **Ultralytics predict / detect()** | | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
