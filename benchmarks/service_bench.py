"""The BentoML service under load, beside the bare Detector on the same CPU and model.

    python benchmarks/service_bench.py [--requests 40] [--rounds 3] [--concurrency 1 4 16] [--url URL]

1. Bare ``Detector`` throughput, in this process, on the same JPEG bytes (decode
   included, as in the service): sequential single images, and batches of the service's
   ``MAX_BATCH_SIZE``; the better of the two is the reference. It is measured before
   AND after the service runs and averaged, because a shared machine drifts.
2. A real ``bentoml serve bentos.service:YoloEdge`` on 127.0.0.1 (or ``--url``), then
   closed-loop clients at each concurrency, one image per request, each client sending
   ``--requests`` requests: requests/s, p50/p99 latency and every non-200 status.

The load generator posts pre-built multipart bodies over ``http.client`` so that the
clients take as little of the shared CPU as possible. Prints a Markdown table for
BENCHMARKS.md and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "yolo-edge-bench-boundary"


def multipart(image: bytes, name: str = "frame.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


class Bare:
    """An in-process Detector on the same bytes the service gets (decode included)."""

    def __init__(self, images: list[bytes], model: str | None, backend: str, precision: str | None) -> None:
        from yolo_edge import Detector

        self.images = images
        self.det = Detector(model, backend=backend, backend_options={"precision": precision} if precision else None)
        self.det.warmup(3)

    def fps(self, batch: int, seconds: float) -> float:
        frames, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.det.predict([self.images[(frames + i) % len(self.images)] for i in range(batch)])
            frames += batch
        return frames / (time.perf_counter() - t0)


def load(url: str, bodies: list[bytes], concurrency: int, per_client: int, token: str | None) -> dict:
    """Closed loop: ``concurrency`` clients each send ``per_client`` requests back to back."""
    parsed = urlparse(url)
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def client(idx: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        for i in range(per_client):
            body = bodies[(idx + i) % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/detect", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                code = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
                code = -1
            dt = time.perf_counter() - t0
            with lock:
                codes[code] += 1
                if code == 200:
                    latencies.append(dt)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else latencies * 99
    return {
        "concurrency": concurrency,
        "requests": concurrency * per_client,
        "ok": codes.get(200, 0),
        "rps": codes.get(200, 0) / wall,
        "p50_ms": q[49] * 1e3 if q else float("nan"),
        "p99_ms": q[98] * 1e3 if q else float("nan"),
        "status": {str(k): v for k, v in sorted(codes.items())},
    }


def _summarise(concurrency: int, rounds: list[dict]) -> dict:
    """Median over rounds; statuses summed."""
    med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    status: Counter[str] = Counter()
    for r in rounds:
        status.update(r["status"])
    return {"concurrency": concurrency, "rounds": len(rounds), "requests": sum(r["requests"] for r in rounds),
            "rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "frames_per_batch": med("frames_per_batch"), "bare_fps": med("bare_fps"), "vs_bare": med("vs_bare"),
            "status": dict(sorted(status.items())), "per_round": rounds}


def batch_metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("yolo_edge_batch_frames_sum", "yolo_edge_batch_frames_count"):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def start_service(model: str | None, backend: str, precision: str | None,
                  warmup_runs: int = 3) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "YOLO_EDGE_WARMUP_RUNS": str(warmup_runs), "BENTOML_DO_NOT_TRACK": "true",
           "YOLO_EDGE_BACKEND": backend}
    if model:
        env["YOLO_EDGE_MODEL"] = model
    if precision:
        env["YOLO_EDGE_PRECISION"] = precision
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "bentos.service:YoloEdge",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bentoml serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return url, proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_service(proc)
    raise SystemExit("the service did not become ready within 120 s")


def stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per client at concurrency 1 (scaled down for more clients)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--bare-seconds", type=float, default=5.0, help="bare Detector time per round")
    parser.add_argument("--rounds", type=int, default=3, help="bare/service turns per concurrency level")
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--token", default=None)
    parser.add_argument("--model", default=None, help="registry name or .onnx path (default: the default model)")
    parser.add_argument("--backend", default="auto",
                        help="auto, onnxruntime, tensorrt or torch, for both the bare Detector and the service")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default=None,
                        help="GPU backends: engine / weights precision (default: the backend's own)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "service_bench.json")
    args = parser.parse_args(argv)

    from bentos.service import MAX_BATCH_SIZE, MAX_LATENCY_MS
    from yolo_edge.models.fetch import sample_path

    images = [sample_path(n).read_bytes() for n in ("bus.jpg", "zidane.jpg")]
    bodies = [multipart(b) for b in images]
    load_before = os.getloadavg()[0]
    bare = Bare(images, args.model, args.backend, args.precision)
    bare_single = bare.fps(1, args.bare_seconds)

    proc = None
    url = args.url
    if url is None:
        url, proc = start_service(args.model, args.backend, args.precision)
    rows = []
    try:
        load(url, bodies, 2, 2, args.token)  # warm the connection paths
        for c in args.concurrency:
            per_client = max(4, args.requests * 4 // (c + 3))  # about the same wall time per level
            rounds = []
            for r in range(args.rounds):
                # bare and service take turns, so drift on a shared machine hits both alike
                bare_fps = bare.fps(MAX_BATCH_SIZE, args.bare_seconds)
                before = batch_metrics(url)
                print(f"concurrency {c}, round {r + 1}: {c * per_client} requests ...", file=sys.stderr)
                row = load(url, bodies, c, per_client, args.token)
                after = batch_metrics(url)
                batches = after.get("yolo_edge_batch_frames_count", 0) - before.get("yolo_edge_batch_frames_count", 0)
                frames = after.get("yolo_edge_batch_frames_sum", 0) - before.get("yolo_edge_batch_frames_sum", 0)
                row["frames_per_batch"] = frames / batches if batches else float("nan")
                row["bare_fps"] = bare_fps
                row["vs_bare"] = row["rps"] / bare_fps
                rounds.append(row)
            rows.append(_summarise(c, rounds))
    finally:
        if proc is not None:
            stop_service(proc)

    result = {"model": bare.det.info.name, "backend": bare.det.backend.name,
              "providers": list(bare.det.backend.providers), "bare_single_fps": bare_single, "service": rows, "max_batch_size": MAX_BATCH_SIZE,
              "max_latency_ms": MAX_LATENCY_MS, "cpu_count": os.cpu_count(),
              "loadavg_1m": [load_before, os.getloadavg()[0]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"Model {bare.det.info.name} on {bare.det.backend.name} {list(bare.det.backend.providers)}.")
    print(f"Bare Detector on the same bytes (decode included): {bare_single:.1f} frames/s one at a time; "
          f"batches of {MAX_BATCH_SIZE} measured in turn with each service round below. {os.cpu_count()} CPUs, "
          f"1-min load {load_before:.1f} -> {os.getloadavg()[0]:.1f}.\n")
    print("| concurrency | requests | req/s | p50 ms | p99 ms | frames/batch | bare frames/s | service/bare | statuses |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['frames_per_batch']:.1f} | {r['bare_fps']:.1f} | {r['vs_bare'] * 100:.0f}% | {r['status']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
