"""What CloudClient's upload settings do to the answers: lossless by default, lossy when asked.

    python benchmarks/upload_bench.py [--conf 0.25]

For each real photo (the fetched samples and scikit-image's), the frame as an array is
prepared for upload exactly as ``CloudClient`` prepares it (shrunk to the model input,
then PNG, or JPEG of a quality) and then decoded and detected exactly as the service
does (``decode_image`` then ``Detector``), beside the local answer on the full frame.
Prints upload sizes and how the answers differ (labels, largest confidence change) as a
Markdown table for BENCHMARKS.md. The equality of the default against a real
``bentoml serve`` is a test: tests/bentos/test_cloud_equality.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from photos import skimage_photos  # noqa: E402

from yolo_edge import Detector  # noqa: E402
from yolo_edge.remote.cloud import prepare_upload  # noqa: E402
from yolo_edge.image import decode_image, load_image  # noqa: E402
from yolo_edge.models.fetch import sample_path  # noqa: E402

SETTINGS = [("lossless (default)", None), ("jpeg_quality=95", 95), ("jpeg_quality=90", 90), ("jpeg_quality=80", 80)]


def compare(local, cloud) -> str:
    if sorted(local.labels) != sorted(cloud.labels):
        lost = sorted(set(local.labels) - set(cloud.labels)) or sorted(local.labels)
        return f"labels differ ({len(local)} -> {len(cloud)}; {', '.join(lost)})"
    if not len(local):
        return "same (none)"
    diff = float(np.abs(np.sort(local.confidence) - np.sort(cloud.confidence)).max())
    return "identical" if diff == 0 else f"same labels, confidence off by up to {diff:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=float, default=0.25)
    args = ap.parse_args()
    det = Detector()
    photos = [sample_path("bus.jpg"), sample_path("zidane.jpg"), *skimage_photos()]
    print("| photo | " + " | ".join(name for name, _ in SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for photo in photos:
        frame = load_image(photo)
        local = det(frame, conf=args.conf)
        cells = []
        for _, quality in SETTINGS:
            up = prepare_upload(frame, imgsz=det.info.imgsz, jpeg_quality=quality)
            cloud = det(decode_image(up.data), conf=args.conf)
            cells.append(f"{len(up.data) / 1024:.0f} KB: {compare(local, cloud)}")
        print(f"| {photo.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
