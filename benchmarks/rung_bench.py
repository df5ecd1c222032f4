"""Each rung of the upload ladder: its bytes, its encode time, and how far the cloud's answer strays from the local one.

    flock /tmp/yolo-edge-bench.lock .venv/bin/python benchmarks/rung_bench.py [--repeats 15] [--no-write]

For each real photo on disk (the package's samples bus and zidane, and scikit-image's
astronaut, chelsea, coffee, motorcycle_left and rocket when it is installed; nothing is
downloaded), the frame is prepared exactly as the agent's upload path prepares it
(``yolo_edge.remote.cloud.prepare_upload``: shrunk to the default model's input with the
letterbox's own size and interpolation, then ``yolo_edge.image.encode_image`` as PNG or
JPEG of the rung's quality). Per rung it records the bytes and the median encode time
(``--repeats`` encodes of the shrunk frame, one core), then decodes the upload and runs the
default detector on it as the service does, maps the boxes back to the frame as
``CloudClient`` does, and compares them with the local answer on the full frame: boxes
matched greedily by the local box's confidence (same class, IoU >= 0.5), recall and
precision against the local answer, mean |confidence change| and mean IoU of the matched.

It rewrites ``edge_agent/sim/uplinks/frame_sizes.json`` (what the simulator's frame sizes and
encode times come from; see ``edge_agent.sim.uplink.frame_size_table``) unless ``--no-write``,
and prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from photos import skimage_data  # noqa: E402

from edge_agent.core.link import Rung  # noqa: E402
from yolo_edge import Detector  # noqa: E402
from yolo_edge.remote.cloud import _to_original, prepare_upload  # noqa: E402
from yolo_edge.image import decode_image, load_image  # noqa: E402
from yolo_edge.models.fetch import sample_path  # noqa: E402

#: every rung the simulator may be asked about: the default ladder and below its floor
RUNGS = ("png", "jpeg95", "jpeg90", "jpeg80", "jpeg70", "jpeg60", "jpeg50")
#: photos with everyday objects; skimage's gray camera and its hubble/retina photos are left out
SKIMAGE = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
TABLE = REPO / "edge_agent" / "uplinks" / "frame_sizes.json"
MATCH_IOU = 0.5


def photos() -> list[Path]:
    found = [sample_path("bus.jpg"), sample_path("zidane.jpg")]
    folder = skimage_data()
    found += [folder / n for n in SKIMAGE if folder and (folder / n).is_file()]
    missing = [p for p in found if not p.is_file()]
    if missing:
        sys.exit(f"photos missing: {missing}; run `make models` (bus, zidane) and install the [test] extra (scikit-image)")
    return found


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (xyxy)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match(local, cloud) -> list[tuple[int, int, float]]:
    """(local index, cloud index, IoU) of each pair: local boxes by falling confidence, each takes the
    unmatched cloud box of its class with the highest IoU, if at least ``MATCH_IOU``."""
    if not len(local) or not len(cloud):
        return []
    iou = box_iou(local.xyxy, cloud.xyxy)
    iou[local.class_id[:, None] != cloud.class_id[None, :]] = 0.0
    pairs = []
    for i in np.argsort(-local.confidence, kind="stable"):
        j = int(np.argmax(iou[i]))
        if iou[i, j] >= MATCH_IOU:
            pairs.append((int(i), j, float(iou[i, j])))
            iou[:, j] = 0.0
    return pairs


def encode_ms(shrunk: np.ndarray, quality: int | None, imgsz, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prepare_upload(shrunk, imgsz=imgsz, jpeg_quality=quality)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def measure(det: Detector, photo: Path, repeats: int) -> dict:
    imgsz = det.info.imgsz
    frame = load_image(photo)
    local = det(frame)
    png = prepare_upload(frame, imgsz=imgsz)
    shrunk = decode_image(png.data)  # the frame at the model's input, as the agent uploads it
    out = {"name": photo.name, "size": list(shrunk.shape[:2]), "bytes": {}, "encode_ms": {}, "agreement": {},
           "local": [local.names[c] for c in local.class_id]}
    for name in RUNGS:
        q = Rung.parse(name).quality
        up = prepare_upload(frame, imgsz=imgsz, jpeg_quality=q)
        again = prepare_upload(shrunk, imgsz=imgsz, jpeg_quality=q)
        if again.data != up.data:
            raise RuntimeError(f"{photo.name} {name}: encoding the shrunk frame gave other bytes than the full frame's upload")
        cloud = _to_original(det(decode_image(up.data)), up.scale, frame.shape[:2])
        pairs = match(local, cloud)
        out["bytes"][name] = len(up.data)
        out["encode_ms"][name] = round(encode_ms(shrunk, q, imgsz, repeats), 2)
        out["agreement"][name] = {
            "local": len(local), "cloud": len(cloud), "matched": len(pairs),
            "dconf": [abs(float(cloud.confidence[j]) - float(local.confidence[i])) for i, j, _ in pairs],
            "iou": [v for _, _, v in pairs],
            "lost": [local.names[local.class_id[i]] for i in sorted(set(range(len(local))) - {i for i, _, _ in pairs})],
            "extra": [cloud.names[cloud.class_id[j]] for j in sorted(set(range(len(cloud))) - {j for _, j, _ in pairs})],
        }
    return out


def write_table(frames: list[dict], model_input: int, model: str, repeats: int) -> None:
    source = (f"benchmarks/rung_bench.py: real photos shrunk to the default model's input ({model_input}, {model}) and "
              f"encoded as the agent uploads them (yolo_edge.remote.cloud.prepare_upload -> yolo_edge.image.encode_image); "
              f"encode_ms is the median of {repeats} encodes on one core of {platform.processor() or platform.machine()}")
    data = {"source": source, "model_input": model_input, "rungs": list(RUNGS),
            "frames": [{k: f[k] for k in ("name", "size", "bytes", "encode_ms")} for f in frames]}
    TABLE.write_text(json.dumps(data, indent=1) + "\n")


def ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def markdown(frames: list[dict]) -> str:
    lines = ["| rung | bytes, mean (KB) | / PNG | encode ms, median | boxes matched / local / cloud | recall | "
             "precision | mean \\|Δconf\\| (max) | mean IoU (min) | lost (photo: class) | extra (photo: class) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    png_bytes = np.mean([f["bytes"]["png"] for f in frames])
    for name in RUNGS:
        ag = [f["agreement"][name] for f in frames]
        local, cloud, matched = (sum(a[k] for a in ag) for k in ("local", "cloud", "matched"))
        dconf = np.concatenate([a["dconf"] for a in ag]) if matched else np.zeros(0)
        iou = np.concatenate([a["iou"] for a in ag]) if matched else np.zeros(0)
        mean_bytes = np.mean([f["bytes"][name] for f in frames])
        enc = np.median([f["encode_ms"][name] for f in frames])
        lost = ", ".join(f"{f['name'].split('.')[0]}: {c}" for f in frames for c in f["agreement"][name]["lost"]) or "-"
        extra = ", ".join(f"{f['name'].split('.')[0]}: {c}" for f in frames for c in f["agreement"][name]["extra"]) or "-"
        conf_cell = f"{dconf.mean():.4f} ({dconf.max():.3f})" if matched else "n/a"
        iou_cell = f"{iou.mean():.4f} ({iou.min():.3f})" if matched else "n/a"
        lines.append(f"| {name} | {mean_bytes / 1024:.1f} | {mean_bytes / png_bytes:.3f} | {enc:.2f} | "
                     f"{matched} / {local} / {cloud} | {ratio(matched, local)} | {ratio(matched, cloud)} | "
                     f"{conf_cell} | {iou_cell} | {lost} | {extra} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15, help="encodes per rung and photo for the median time")
    ap.add_argument("--no-write", action="store_true", help=f"do not rewrite {TABLE.relative_to(REPO)}")
    args = ap.parse_args()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})  # one core, as the device's encode would have
    print(f"load average before: {open('/proc/loadavg').read().strip()}; pinned to cpu {cpu}")
    det = Detector()
    h, w = det.info.imgsz
    if h != w:
        sys.exit(f"frame_sizes.json has one model_input; the default model's input is {h}x{w}")
    frames = [measure(det, p, args.repeats) for p in photos()]
    print(f"\n{len(frames)} photos: {', '.join(f['name'] for f in frames)}; model {det.info.name}, input {h}, "
          f"conf {det.conf}\n")
    print(markdown(frames))
    print("\nlocal boxes per photo: " + "; ".join(f"{f['name']}: {', '.join(f['local']) or 'none'}" for f in frames))
    if not args.no_write:
        write_table(frames, h, det.info.name, args.repeats)
        print(f"\nwrote {TABLE.relative_to(REPO)}")
    print(f"load average after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
