"""The BentoML service under load, beside the bare Detector on the same CPU, model and bytes.

    python benchmarks/service_bench.py [--requests 16] [--rounds 3] [--concurrency 1 4 16] [--url URL]

Every request carries the same JPEG: a sample photo at the model's input size, encoded
to about ``--jpeg-kb`` (25) KB. On a machine with 2 cores or more, the servers (and the
bare Detector, one inference thread each) run on core 1 and the load generator on core 0
(``taskset -c 1 bentoml serve ...``; this process pins its own threads), so that the
client never takes the server's CPU; ``--no-pin`` turns that off.

1. Bare ``Detector`` throughput on those bytes (decode included, as in the service), given
   as many frames at once as there are clients (1, 4, then the service's ``MAX_BATCH_SIZE``):
   the reference; and against the better of that and batches of 1 or ``MAX_BATCH_SIZE``
   ("vs best"). Bare and service take turns in every round, so that drift on a shared
   machine hits both alike.
2. A real ``bentoml serve bentos.service:YoloEdge`` on 127.0.0.1 (or ``--url``), then
   closed-loop clients at each concurrency, one image per request: requests/s, p50/p99
   latency, frames per batch, service/bare, and every non-200 status (503s counted).
3. The serving path alone: the same service with the no-inference backend
   (``YOLO_EDGE_BENCH_NO_INFERENCE=1``, bentos/bench_backend.py) against BentoML's own
   minimal service on the same upload (benchmarks/bentoml_minimal.py), taking turns:
   requests/s at concurrency 1 and 4 and the time per request at concurrency 1 (ms).

The load generator posts pre-built multipart bodies over ``http.client``. Prints Markdown
tables for BENCHMARKS.md and writes JSON to ``--out``. It runs at a raised priority with
autogroups off (``benchmarks/quiet.py``), so that other sessions' work does not take the
pinned cores.
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
sys.path.insert(0, str(REPO / "benchmarks"))
from quiet import device_priority  # noqa: E402
BOUNDARY = "yolo-edge-bench-boundary"
SERVER_CORE, CLIENT_CORE = 1, 0


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and {SERVER_CORE, CLIENT_CORE} <= os.sched_getaffinity(0)


def pin_this_thread(cores: set[int] | None) -> None:
    """Pin the calling thread (Linux: pid 0 is the calling thread); threads it starts inherit it."""
    if cores is not None:
        os.sched_setaffinity(0, cores)


def multipart(image: bytes, name: str = "frame.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def sized_jpeg(imgsz: tuple[int, int], target_kb: float) -> bytes:
    """bus.jpg resized to the model's input size, at the JPEG quality that comes closest to ``target_kb``."""
    import cv2

    from yolo_edge.image import load_image
    from yolo_edge.models.fetch import sample_path

    rgb = cv2.resize(load_image(sample_path("bus.jpg")), (imgsz[1], imgsz[0]), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    encoded = {q: cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes() for q in range(30, 100, 2)}
    return min(encoded.values(), key=lambda b: abs(len(b) - target_kb * 1000))


class Bare:
    """An in-process Detector on the same bytes the service gets (decode included)."""

    def __init__(self, model: str | None, backend: str, precision: str | None, threads: int | None,
                 cores: set[int] | None) -> None:
        from yolo_edge import Detector

        self.cores = cores
        self.images: list[bytes] = []
        self.det = Detector(model, backend=backend, threads=threads,
                            backend_options={"precision": precision} if precision else None)
        self.det.warmup(3)

    def sdk_ms(self, runs: int = 300) -> dict[str, float]:
        """What the no-inference service does per request besides serving, on the server's core:
        decode the JPEG, then predict with no model (letterbox, zero outputs, NMS), answer as JSON."""
        from bentos.bench_backend import NoInference
        from yolo_edge import Detector
        from yolo_edge.image import decode_image

        det = Detector(self.det.info.path, backend=NoInference(self.det.backend))
        before = os.sched_getaffinity(0) if self.cores is not None else None
        pin_this_thread(self.cores)
        try:
            data = self.images[0]
            image = decode_image(data)
            out: dict[str, float] = {}
            for name, step in (("decode", lambda: decode_image(data)),
                               ("predict, no inference", lambda: det.predict([image])),
                               ("JSON", lambda: json.dumps([{"detections": [], "image_shape": list(image.shape[:2])}]))):
                step()
                t0 = time.perf_counter()
                for _ in range(runs):
                    step()
                out[name] = 1e3 * (time.perf_counter() - t0) / runs
            return out
        finally:
            pin_this_thread(before)

    def fps(self, batch: int, seconds: float) -> float:
        """Frames/s, run on the server's core (the calling thread's affinity is restored after)."""
        before = os.sched_getaffinity(0) if self.cores is not None else None
        pin_this_thread(self.cores)
        try:
            self.det.predict(self.images[:1])
            frames, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                self.det.predict([self.images[(frames + i) % len(self.images)] for i in range(batch)])
                frames += batch
            return frames / (time.perf_counter() - t0)
        finally:
            pin_this_thread(before)


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
            "vs_best_bare": med("vs_best_bare"),
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


def start_service(model: str | None, backend: str, precision: str | None, *, warmup_runs: int = 3,
                  target: str = "bentos.service:YoloEdge", cwd: Path = REPO, extra_env: dict[str, str] | None = None,
                  cores: set[int] | None = None, threads: int | None = None) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "YOLO_EDGE_WARMUP_RUNS": str(warmup_runs), "BENTOML_DO_NOT_TRACK": "true",
           "YOLO_EDGE_BACKEND": backend, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           **(extra_env or {})}
    if model:
        env["YOLO_EDGE_MODEL"] = model
    if precision:
        env["YOLO_EDGE_PRECISION"] = precision
    if threads:
        env["YOLO_EDGE_THREADS"] = str(threads)
    taskset = ["taskset", "-c", ",".join(map(str, sorted(cores)))] if cores is not None else []
    proc = subprocess.Popen(
        [*taskset, str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bentoml serve {target} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return url, proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_service(proc)
    raise SystemExit(f"{target} did not become ready within 120 s")


def stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)


def serving_path(body: bytes, args: argparse.Namespace, server_cores: set[int] | None) -> list[dict]:
    """The no-inference service against BentoML's minimal one, taking turns on the same core."""
    servers = {
        "yolo-edge /detect, no-inference backend": start_service(
            args.model, args.backend, args.precision, extra_env={"YOLO_EDGE_BENCH_NO_INFERENCE": "1"},
            cores=server_cores, threads=1 if server_cores else None),
        "BentoML minimal (benchmarks/bentoml_minimal.py)": start_service(
            None, args.backend, None, target="bentoml_minimal:Minimal", cwd=REPO / "benchmarks", cores=server_cores),
    }
    rows: dict[tuple[str, int], list[dict]] = {}
    try:
        for url, _ in servers.values():
            load(url, [body], 2, 20, None)  # warm both
        for _ in range(args.rounds):
            for name, (url, _) in servers.items():
                for c in (1, 4):
                    rows.setdefault((name, c), []).append(load(url, [body], c, args.serving_requests // c, None))
    finally:
        for _, proc in servers.values():
            stop_service(proc)
    out = []
    for (name, c), rounds in rows.items():
        status: Counter[str] = Counter()
        for r in rounds:
            status.update(r["status"])
        rps = statistics.median(r["rps"] for r in rounds)
        out.append({"server": name, "concurrency": c, "requests": sum(r["requests"] for r in rounds), "rps": rps,
                    "ms_per_request": 1e3 / rps if c == 1 else None,
                    "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rounds), "status": dict(sorted(status.items()))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per client at concurrency 1 (scaled down for more clients)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--bare-seconds", type=float, default=5.0, help="bare Detector time per round")
    parser.add_argument("--rounds", type=int, default=3, help="bare/service turns per concurrency level")
    parser.add_argument("--serving-requests", type=int, default=400,
                        help="requests per round for the serving path alone (0: skip that part)")
    parser.add_argument("--jpeg-kb", type=float, default=25.0, help="size of the JPEG every request carries")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to cores of their own")
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--token", default=None)
    parser.add_argument("--model", default=None, help="registry name or .onnx path (default: the default model)")
    parser.add_argument("--backend", default="auto",
                        help="auto, onnxruntime, tensorrt or torch, for both the bare Detector and the service")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default=None,
                        help="GPU backends: engine / weights precision (default: the backend's own)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "service_bench.json")
    args = parser.parse_args(argv)
    with device_priority():  # before any thread or server starts: they inherit it
        return run(args)


def run(args) -> int:
    from bentos.service import MAX_BATCH_SIZE, MAX_LATENCY_MS

    pinned = not args.no_pin and can_pin()
    server_cores = {SERVER_CORE} if pinned else None
    threads = 1 if pinned else None  # one inference thread on the server's one core
    pin_this_thread({CLIENT_CORE} if pinned else None)  # the load generator's threads inherit it
    load_before = os.getloadavg()
    bare = Bare(args.model, args.backend, args.precision, threads, server_cores)
    body_image = sized_jpeg(bare.det.info.imgsz, args.jpeg_kb)
    bare.images = [body_image]
    bodies = [multipart(body_image)]
    bare_single = bare.fps(1, args.bare_seconds)

    proc = None
    url = args.url
    if url is None:
        url, proc = start_service(args.model, args.backend, args.precision, cores=server_cores, threads=threads)
    rows = []
    try:
        load(url, bodies, 2, 2, args.token)  # warm the connection paths
        for c in args.concurrency:
            per_client = max(4, args.requests * 4 // (c + 3))  # about the same wall time per level
            rounds = []
            for r in range(args.rounds):
                # bare and service take turns, so drift on a shared machine hits both alike
                same = min(c, MAX_BATCH_SIZE)  # the bare Detector given the same frames at once
                bare_fps = bare.fps(same, args.bare_seconds / 2)
                other = bare.fps(MAX_BATCH_SIZE if same != MAX_BATCH_SIZE else 1, args.bare_seconds / 2)
                before = batch_metrics(url)
                print(f"concurrency {c}, round {r + 1}: {c * per_client} requests ...", file=sys.stderr)
                row = load(url, bodies, c, per_client, args.token)
                after = batch_metrics(url)
                batches = after.get("yolo_edge_batch_frames_count", 0) - before.get("yolo_edge_batch_frames_count", 0)
                frames = after.get("yolo_edge_batch_frames_sum", 0) - before.get("yolo_edge_batch_frames_sum", 0)
                row["frames_per_batch"] = frames / batches if batches else float("nan")
                row["bare_fps"] = bare_fps
                row["vs_bare"] = row["rps"] / bare_fps
                row["vs_best_bare"] = row["rps"] / max(bare_fps, other)
                rounds.append(row)
            rows.append(_summarise(c, rounds))
    finally:
        if proc is not None:
            stop_service(proc)
    serving = serving_path(bodies[0], args, server_cores) if args.serving_requests > 0 and args.url is None else []
    sdk = bare.sdk_ms() if serving else {}

    load_after = os.getloadavg()
    result = {"model": bare.det.info.name, "backend": bare.det.backend.name, "imgsz": list(bare.det.info.imgsz),
              "jpeg_bytes": len(body_image), "pinned": pinned,
              "providers": list(bare.det.backend.providers), "bare_single_fps": bare_single, "service": rows,
              "serving_path": serving, "sdk_work_ms": sdk, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS,
              "cpu_count": os.cpu_count(), "loadavg": [list(load_before), list(load_after)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    where = (f"servers and bare Detector on core {SERVER_CORE} (taskset; 1 inference thread), load generator on core "
             f"{CLIENT_CORE}" if pinned else "not pinned")
    print(f"Model {bare.det.info.name} on {bare.det.backend.name} {list(bare.det.backend.providers)}; every request "
          f"one {len(body_image) / 1000:.1f} KB JPEG at {bare.det.info.imgsz[1]}x{bare.det.info.imgsz[0]}; {where}.")
    print(f"Bare Detector on the same bytes (decode included): {bare_single:.1f} frames/s one at a time; the reference "
          f"below is the Detector given as many frames at once as there are clients (at most {MAX_BATCH_SIZE}), "
          f"measured in turn with each service round; 'vs best' is against the better of that and batches of 1 or "
          f"{MAX_BATCH_SIZE}. {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in load_before)} -> "
          f"{' '.join(f'{x:.2f}' for x in load_after)}.\n")
    print("| concurrency | requests | req/s | p50 ms | p99 ms | frames/batch | bare frames/s | service/bare | vs best "
          "| 503s | statuses |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['frames_per_batch']:.1f} | {r['bare_fps']:.1f} | {r['vs_bare'] * 100:.0f}% | {r['vs_best_bare'] * 100:.0f}% | "
              f"{r['status'].get('503', 0)} | {r['status']} |")
    if serving:
        print("\n| serving path | concurrency | requests | req/s | ms per request | p50 ms | p99 ms | statuses |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in serving:
            per = f"{r['ms_per_request']:.2f}" if r["ms_per_request"] else "-"
            print(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['rps']:.0f} | {per} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {r['status']} |")
        ours = next(r["ms_per_request"] for r in serving if r["concurrency"] == 1 and "no-inference" in r["server"])
        minimal = next(r["ms_per_request"] for r in serving if r["concurrency"] == 1 and "minimal" in r["server"])
        work = sum(sdk.values())
        print(f"\nOf the no-inference service's {ours:.2f} ms per request, {work:.2f} ms is the SDK's own work that "
              f"BentoML's minimal service does not do (" + ", ".join(f"{k} {v:.2f} ms" for k, v in sdk.items()) +
              f", in-process on the server's core); the rest, {ours - work:.2f} ms, is serving (HTTP, Guard, multipart, "
              f"checks, batching), against {minimal:.2f} ms for BentoML's minimal service: "
              f"{minimal / (ours - work):.2f}x its request rate.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
