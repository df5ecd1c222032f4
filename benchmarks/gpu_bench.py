"""GPU backends against the CPU reference: detection parity and bare-backend throughput.

    python benchmarks/gpu_bench.py [--models yolov3-tiny-coco yolov8s-fall] [--iters 50] [--out gpu.json]

On a machine without an NVIDIA GPU it says so and exits 0 (nothing to measure).
Otherwise, for every model and every GPU path present here:

- tensorrt fp32/fp16  (needs TensorRT + cuda-python)
- torch fp32/fp16     (needs PyTorch with CUDA + onnx2torch)
- onnxruntime CUDA    (needs onnxruntime-gpu whose CUDA provider really activates)

it checks **parity** with onnxruntime on the CPU on the sample photos: detections are
matched greedily by IoU within a class, and a path passes when every detection that is
clearly above the threshold (conf >= 0.30 at conf=0.25) on either side has a partner of
the same class with IoU >= 0.98. It then times the **bare backend** (``backend.run``
on a ready float32 batch, host-to-device and back included, median of ``--iters``) at
batch 1 and 8 (8 only for dynamic-batch exports), and the **GPU letterbox** against
the CPU one for a batch of 8 1080p frames. Results print as Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from yolo_edge import Detector
from yolo_edge.errors import YoloEdgeError
from yolo_edge.image import load_image
from yolo_edge.preprocess import make_batch

PARITY_IOU = 0.98
CONF = 0.25
CLEAR_MARGIN = 0.05  # detections this far above CONF must match; nearer ones may flip


def gpu_present() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    except ImportError:
        pass
    from yolo_edge.backends.select import _cuda_device_count

    n = _cuda_device_count()
    return n > 0, f"{n} CUDA device(s) (name unknown without torch)" if n else "none"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def compare(ref, got) -> dict[str, Any]:
    """Greedy same-class matching by IoU; which clear detections lack a partner."""
    ious = iou_matrix(ref.xyxy, got.xyxy) if len(ref) and len(got) else np.zeros((len(ref), len(got)))
    ious = np.where(ref.class_id[:, None] == got.class_id[None, :], ious, 0.0)
    pairs, used_r, used_g = [], set(), set()
    for flat in np.argsort(-ious, axis=None):
        r, g = np.unravel_index(flat, ious.shape)
        if ious[r, g] <= 0:
            break
        if r not in used_r and g not in used_g:
            pairs.append((int(r), int(g), float(ious[r, g])))
            used_r.add(r)
            used_g.add(g)
    good = {(r, g) for r, g, v in pairs if v >= PARITY_IOU}
    ok_r = {r for r, _ in good}
    ok_g = {g for _, g in good}
    clear = CONF + CLEAR_MARGIN
    missing = [int(i) for i in range(len(ref)) if i not in ok_r and ref.confidence[i] >= clear]
    extra = [int(i) for i in range(len(got)) if i not in ok_g and got.confidence[i] >= clear]
    return {
        "ref": len(ref),
        "gpu": len(got),
        "matched_iou>=0.98": len(good),
        "min_iou": min((v for _, _, v in pairs), default=1.0),
        "max_conf_diff": max((abs(float(ref.confidence[r] - got.confidence[g])) for r, g, _ in pairs), default=0.0),
        "clear_unmatched": len(missing) + len(extra),
        "pass": not missing and not extra,
    }


def candidates(path: Path, max_batch: int) -> dict[str, Callable[[], Any]]:
    """name -> factory for every GPU path this machine has."""
    out: dict[str, Callable[[], Any]] = {}
    if importlib.util.find_spec("tensorrt") is not None:
        from yolo_edge.backends.tensorrt import TensorRTBackend

        for prec in ("fp32", "fp16"):
            out[f"tensorrt {prec}"] = lambda p=prec: TensorRTBackend(path, precision=p, max_batch=max_batch)
    try:
        import torch

        if torch.cuda.is_available():
            from yolo_edge.backends.torch import TorchBackend

            for half in (False, True):
                out[f"torch {'fp16' if half else 'fp32'}"] = lambda h=half: TorchBackend(path, device="cuda", half=h, max_batch=max_batch)
    except ImportError:
        pass
    import onnxruntime as ort

    from yolo_edge.backends.onnxruntime import OnnxRuntimeBackend
    from yolo_edge.backends.providers import CUDA_EP, ort_providers

    if CUDA_EP in ort.get_available_providers():
        def ort_cuda():
            be = OnnxRuntimeBackend(path, providers=ort_providers(ort.get_available_providers(), prefer=["cuda"]))
            if CUDA_EP not in be.providers:
                raise YoloEdgeError(f"onnxruntime CUDA provider did not activate (active: {be.providers})")
            return be

        out["onnxruntime cuda"] = ort_cuda
    return out


def time_backend(be, batch: np.ndarray, iters: int) -> float:
    for _ in range(5):
        be.run(batch)
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        be.run(batch)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def bench_model(model: str, photos: list[np.ndarray], iters: int, max_batch: int) -> list[dict[str, Any]]:
    from yolo_edge.backends.onnxruntime import OnnxRuntimeBackend

    ref_det = Detector(model, backend="onnxruntime", providers=["CPUExecutionProvider"], conf=CONF)
    path = Path(ref_det.info.path)
    refs = [ref_det(p) for p in photos]
    h, w = ref_det.info.imgsz
    rng = np.random.default_rng(0)
    rows = []
    cpu = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
    rows.append({"model": model, "backend": "onnxruntime cpu (reference)", "providers": list(cpu.providers),
                 "b1_ms": time_backend(cpu, rng.random((1, 3, h, w), dtype=np.float32), max(5, iters // 5)),
                 "b8_ms": None, "parity": None})
    for name, make in candidates(path, max_batch).items():
        row: dict[str, Any] = {"model": model, "backend": name}
        try:
            t0 = time.perf_counter()
            be = make()
            row["load_s"] = time.perf_counter() - t0
        except YoloEdgeError as exc:
            row["error"] = str(exc)
            rows.append(row)
            print(f"  {name}: unavailable: {exc}", file=sys.stderr)
            continue
        row["providers"] = list(be.providers)
        det = Detector(model, backend=be, conf=CONF)
        checks = [compare(r, det(p)) for r, p in zip(refs, photos)]
        row["parity"] = {
            "pass": all(c["pass"] for c in checks),
            "min_iou": min(c["min_iou"] for c in checks),
            "matched": sum(c["matched_iou>=0.98"] for c in checks),
            "ref_dets": sum(c["ref"] for c in checks),
            "max_conf_diff": max(c["max_conf_diff"] for c in checks),
        }
        row["b1_ms"] = time_backend(be, rng.random((1, 3, h, w), dtype=np.float32), iters)
        row["b8_ms"] = time_backend(be, rng.random((8, 3, h, w), dtype=np.float32), iters) if be.max_batch >= 8 else None
        be.close()
        rows.append(row)
        print(f"  {name}: parity {'PASS' if row['parity']['pass'] else 'FAIL'}, b1 {row['b1_ms']:.2f} ms", file=sys.stderr)
    return rows


def bench_preprocess(photos: list[np.ndarray], iters: int) -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    import cv2

    from yolo_edge.backends.gpu_preprocess import letterbox_batch_torch

    frames = [cv2.resize(photos[i % len(photos)], (1920, 1080)) for i in range(8)]

    def cpu():
        blob, _ = make_batch(frames, (640, 640))
        return torch.from_numpy(blob).to("cuda")  # where the GPU backend needs it

    def gpu():
        out, _ = letterbox_batch_torch(frames, (640, 640), device="cuda")
        torch.cuda.synchronize()
        return out

    diff = (cpu() - gpu()).abs().max().item() * 255
    res = {}
    for name, fn in (("cpu letterbox + upload", cpu), ("gpu letterbox", gpu)):
        for _ in range(3):
            fn()
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            samples.append(time.perf_counter() - t0)
        res[name] = statistics.median(samples) * 1e3
    res["max_diff_grey_levels"] = diff
    return res


def markdown(rows: list[dict[str, Any]], pre: dict[str, Any] | None, gpu_name: str) -> str:
    lines = [f"GPU: {gpu_name}; host {platform.node()}; bare backend, median ms per batch (img/s)", "",
             "| model | backend | parity (IoU>=0.98, same class) | batch 1 | batch 8 |", "|---|---|---|---|---|"]
    fmt = lambda ms, b: "n/a" if ms is None else f"{ms:.2f} ({b * 1e3 / ms:.0f}/s)"  # noqa: E731
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | unavailable: {r['error'][:60]} | | |")
            continue
        p = r.get("parity")
        par = "reference" if p is None else (
            f"{'PASS' if p['pass'] else 'FAIL'} {p['matched']}/{p['ref_dets']}, min IoU {p['min_iou']:.3f}, "
            f"max dconf {p['max_conf_diff']:.3f}")
        lines.append(f"| {r['model']} | {r['backend']} | {par} | {fmt(r['b1_ms'], 1)} | {fmt(r['b8_ms'], 8)} |")
    if pre:
        lines += ["", f"Letterbox of 8 1080p frames to 640: CPU + upload {pre['cpu letterbox + upload']:.2f} ms, "
                      f"GPU {pre['gpu letterbox']:.2f} ms (max difference {pre['max_diff_grey_levels']:.0f} grey level)"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny-coco", "yolov8s-fall"],
                        help="registry names or .onnx paths")
    parser.add_argument("--images", nargs="*", default=None, help="photos for parity (default: the pinned samples)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    ok, gpu_name = gpu_present()
    if not ok:
        print("gpu_bench: no NVIDIA GPU visible (torch.cuda and libcuda report none): nothing to measure, skipping.")
        return 0
    if args.images:
        paths = [Path(p) for p in args.images]
    else:
        from yolo_edge.models.fetch import sample_images

        paths = sample_images()
    photos = [load_image(p) for p in paths]
    rows: list[dict[str, Any]] = []
    for model in args.models:
        print(f"{model}:", file=sys.stderr)
        try:
            rows += bench_model(model, photos, args.iters, args.max_batch)
        except YoloEdgeError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
    pre = bench_preprocess(photos, args.iters)
    print(markdown(rows, pre, gpu_name))
    if args.out:
        Path(args.out).write_text(json.dumps({"gpu": gpu_name, "rows": rows, "preprocess": pre}, indent=2, default=float))
    failed = [r for r in rows if r.get("parity") and not r["parity"]["pass"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
