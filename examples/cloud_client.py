"""The cloud client against a running yolo-edge service: wake it, check its model, detect.

    make serve                                            # in another terminal: the service on 127.0.0.1:3000
    python examples/cloud_client.py                       # or: --url http://lb:8080 --token $TOKEN

Checks that the service runs the same model (sha256) as this device would, then sends
both sample photos in one request and compares the answer with local detection.
"""

from __future__ import annotations

import argparse
import logging

import yolo_edge
from yolo_edge import CloudClient, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="service URL (default http://127.0.0.1:3000)")
    parser.add_argument("--token", default=None, help="bearer token, if the service asks for one")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a scaled-to-zero service")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    local = yolo_edge.Detector()
    frames = [samples.load(name) for name in samples.names()]
    with CloudClient(args.url, token=args.token, expected_sha256=local.info.sha256) as client:
        if not client.wake(wait_s=args.wait):
            raise SystemExit(f"{args.url} is not ready after {args.wait:.0f} s: is the service running?")
        info = client.verify_model()  # raises CloudModelMismatchError if it runs another model
        print(f"{args.url} serves {info['name']} ({info['sha256'][:12]}), the same model as this device")
        cloud, metas = client.detect_many(frames, return_meta=True)  # one request for both photos
    for name, frame, dets, meta in zip(samples.names(), frames, cloud, metas):
        t = meta["timing"]
        print(f"{name}: cloud {dets!r} in {t['roundtrip_ms']:.0f} ms round trip "
              f"({t['inference_ms']:.0f} ms inference); local {local(frame)!r}")


if __name__ == "__main__":
    main()
