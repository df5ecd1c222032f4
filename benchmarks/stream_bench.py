"""Detector.stream against the raw model and frame-by-frame detect(), side by side.

    python benchmarks/stream_bench.py [--frames 60] [--rounds 3] [--model yolov3-tiny-coco]

The model gets a core of its own: a ``Detector(threads=1)`` whose inference thread is
pinned to the last CPU this process may use, while decoding, letterbox and NMS run on
the others (``inference_cpus`` / ``prepare_cpus``). Each round measures, in turn:

- raw ``session.run`` on a ready blob, ``--frames`` runs back to back on the model's core:
  the model's rate, which no pipeline on that core can beat;
- frame-by-frame ``detector(path)`` (read + decode + letterbox + model + NMS, one after
  the other) on the model's core, and ``Detector.stream`` over the same JPEG files;
- the same two from a video file (MJPG AVI of the same frames), read with
  ``yolo_edge.inputs.frames``.

The stream's results are checked equal (``==``, exact arrays) to frame-by-frame's.
Each contender's frames/s is divided by the same round's model rate (so drift on a shared
machine cancels), and the median of those ratios over the rounds is reported; prints a Markdown table for BENCHMARKS.md and writes JSON.
It runs at a raised priority with autogroups off (``benchmarks/quiet.py``), so that other
sessions' work does not take the model's core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from yolo_edge import Detector
from yolo_edge.inputs import frames as read_frames
from yolo_edge.models.fetch import sample_path
from yolo_edge.preprocess import make_batch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from quiet import device_priority  # noqa: E402


def make_inputs(folder: Path, count: int, size: tuple[int, int], quality: int) -> tuple[list[Path], Path]:
    """``count`` distinct camera-sized JPEG files and an MJPG video of the same frames."""
    photos = [cv2.imread(str(sample_path(n))) for n in ("bus.jpg", "zidane.jpg")]
    if any(p is None for p in photos):
        sys.exit("sample photos are not fetched: run `yolo-edge models fetch --all`")
    paths = []
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(count):
        frame = cv2.resize(photos[i % 2], size)
        frame = np.roll(frame, 7 * i, axis=1)  # every frame its own pixels, as from a moving camera
        path = folder / f"frame_{i:04d}.jpg"
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        paths.append(path)
        writer.write(frame)
    writer.release()
    return paths, video


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="yolov3-tiny-coco")
    parser.add_argument("--size", default="1920x1080", help="camera frame size WxH")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the files")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "stream_bench.json")
    args = parser.parse_args(argv)
    with device_priority():  # before any thread starts: they inherit it
        return run(args)


def run(args) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        sys.exit(f"the model needs a core of its own: this process may use only CPUs {allowed}")
    model_cpu, other_cpus = {allowed[-1]}, set(allowed[:-1])
    size = tuple(int(v) for v in args.size.split("x"))
    load_before = os.getloadavg()
    det = Detector(args.model, threads=1)  # one intra-op thread: the model runs in the pinned thread alone
    det.warmup(3)
    session, feed = det.backend._session, None  # the session detect() uses: raw model time

    rows: dict[str, list[float]] = {k: [] for k in (
        "raw", "files_fbf", "files_stream", "video_fbf", "video_stream")}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        paths, video = make_inputs(Path(tmp), args.frames, size, args.quality)
        blob, _ = make_batch([cv2.imread(str(paths[0]))], det.info.imgsz)
        feed = {det.backend.input_name: blob}
        stream_opts = dict(inference_cpus=model_cpu, prepare_cpus=other_cpus)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ...", file=sys.stderr)
            os.sched_setaffinity(0, model_cpu)  # raw and frame-by-frame: one thread on the model's core
            t, _ = timed(lambda: [session.run(None, feed) for _ in range(args.frames)])
            rows["raw"].append(args.frames / t)
            t, fbf = timed(lambda: [det(p) for p in paths])
            rows["files_fbf"].append(args.frames / t)
            t, vfbf = timed(lambda: [det(f.image) for f in read_frames([video])])
            rows["video_fbf"].append(len(vfbf) / t)
            os.sched_setaffinity(0, other_cpus)  # the consumer (NMS, your code) beside the decoding
            t, got = timed(lambda: [x.detections for x in det.stream(paths, **stream_opts)])
            rows["files_stream"].append(args.frames / t)
            identical &= got == fbf
            t, vgot = timed(lambda: [x.detections for x in det.stream(read_frames([video]), **stream_opts)])
            rows["video_stream"].append(len(vgot) / t)
            identical &= vgot == vfbf and len(vgot) == args.frames
            os.sched_setaffinity(0, set(allowed))

    med = {k: statistics.median(v) for k, v in rows.items()}
    model_fps = med["raw"]
    # each round's contenders against that round's model rate: drift on a shared machine cancels
    ratio = {k: statistics.median(v / raw for v, raw in zip(rows[k], rows["raw"])) for k in rows}
    load_after = os.getloadavg()
    result = {"model": det.info.name, "frames": args.frames, "rounds": args.rounds, "size": list(size),
              "model_cpu": sorted(model_cpu), "other_cpus": sorted(other_cpus), "raw_ms": 1e3 / model_fps,
              "model_fps": model_fps, "fps": {k: v for k, v in med.items() if k != "raw"}, "vs_model": ratio,
              "per_round": rows, "identical": identical, "loadavg_before": load_before, "loadavg_after": load_after}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"{det.info.name}, Detector(threads=1): model on CPU {sorted(model_cpu)}, decoding on {sorted(other_cpus)}; "
          f"{args.frames} {size[0]}x{size[1]} frames (JPEG q{args.quality} files, MJPG video), {args.rounds} rounds, "
          f"medians; load average {load_before[0]:.2f} -> {load_after[0]:.2f}\n")
    print("| source | measurement | frames/s | ms/frame | vs 1/raw model |")
    print("|---|---|---:|---:|---:|")
    print(f"| - | raw session.run, back to back on the model's core | {model_fps:.1f} | {1e3 / model_fps:.1f} | 1.000 |")
    for key, source, what in (("files_fbf", "JPEG files", "frame-by-frame detector(path)"),
                              ("files_stream", "JPEG files", "**Detector.stream**"),
                              ("video_fbf", "MJPG video", "frame-by-frame detector(frame)"),
                              ("video_stream", "MJPG video", "**Detector.stream**")):
        fps = med[key]
        print(f"| {source} | {what} | {fps:.1f} | {1e3 / fps:.1f} | {ratio[key]:.3f} |")
    print(f"\nstream results identical to frame-by-frame: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
