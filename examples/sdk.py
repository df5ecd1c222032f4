"""The SDK on the sample photos: detections, annotated copies, JSON and COCO results.

    python examples/sdk.py --out out/sdk            # after `make demo` (or `yolo-edge models fetch --all`)
    python examples/sdk.py --model yolov8s-fall --classes Fall

Writes ``<name>.jpg`` (boxes drawn), ``<name>.json`` (``Detections.to_dict()``) and
``coco_results.json`` (COCO's results format, COCO category ids) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2

import yolo_edge
from yolo_edge import samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/sdk", help="output directory (default out/sdk)")
    parser.add_argument("--model", default=None, help="model name or .onnx path (default: yolov3-tiny-coco)")
    parser.add_argument("--classes", default=None, help="keep only these classes: names or ids, e.g. person,bus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = yolo_edge.Detector(args.model, classes=args.classes)
    print(f"model {detector.info.name} ({detector.info.sha256[:12]}) on {list(detector.backend.providers)}")
    frames = [samples.load(name) for name in samples.names()]  # BGR numpy frames, as from a camera
    results, timings = detector.predict(frames)  # one call, batched when the model allows
    coco = []
    for image_id, (name, frame, dets) in enumerate(zip(samples.names(), frames, results), start=1):
        cv2.imwrite(str(out / name), dets.draw(frame))
        (out / f"{Path(name).stem}.json").write_text(json.dumps(dets.to_dict(), indent=2))
        coco += dets.to_coco(image_id=image_id)
        print(f"{name}: {dets!r}")
    (out / "coco_results.json").write_text(json.dumps(coco))
    print(f"{len(frames)} images in {timings.total_s * 1e3:.0f} ms ({timings.inference_s * 1e3:.0f} ms inference); "
          f"annotated images, JSON and coco_results.json in {out}/")


if __name__ == "__main__":
    main()
