"""The demo that `make demo` runs: detect on the pinned sample photos, write results to out/.

    python examples/demo.py --out out
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2

import yolo_edge
from yolo_edge.models import sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out", help="output directory")
    parser.add_argument("--model", default=None, help="model name or .onnx path (default: yolov3-tiny-coco)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = yolo_edge.Detector(args.model)
    print(f"model {detector.info.name} ({detector.info.sha256[:12]}) on {list(detector.backend.providers)}")
    for path in sample_images():
        frame = yolo_edge.load_image(path)
        (dets,), timings = detector.predict([frame])
        cv2.imwrite(str(out / path.name), dets.draw(frame))
        (out / f"{path.stem}.json").write_text(json.dumps(dets.to_dict(), indent=2))
        print(f"{path.name}: {dets!r}  ({timings.inference_s * 1e3:.1f} ms inference)")
    print(f"annotated images and JSON in {out}/")


if __name__ == "__main__":
    main()
