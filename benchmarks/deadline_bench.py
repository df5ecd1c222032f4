"""Deadlines on the wire at 2x overload: what the service computes for frames already too late.

    python benchmarks/deadline_bench.py [--seconds 20] [--budget-ms 500] [--overload 2] [--rounds 1] [--url URL]

1. A real service (``python -m bentos.serve``: one worker, ``YOLO_EDGE_THREADS=1``) on
   127.0.0.1, or ``--url``. Its capacity is measured first: closed-loop clients (one
   frame per request, as the agent's cameras send them) for ``--capacity-seconds``.
2. Then open-loop load at ``--overload`` times that capacity, one frame per request at
   even intervals, each frame with a budget of ``--budget-ms`` from the moment it is due,
   twice in turn (``--rounds`` times each):

   - ``no budgets``: today's requests. The service computes every frame it accepts; the
     frames whose deadline had passed when their batch started are doomed work. They are
     counted from the answers: a frame's batch started ``queue_ms`` after the request
     arrived (on 127.0.0.1 that is when it was sent), against its deadline on this side.
   - ``budgets``: each request carries the frame's remaining budget (``budgets_s``); a
     frame whose budget is spent before it is sent is not sent (as ``CloudClient`` does).
     The service's own ``yolo_edge_doomed_frames_computed_total`` must stay 0.

   Both rows give frames sent, answered OK, answered OK within the budget (measured
   from when the frame was due), expired (by the service / not sent), refused (429/503),
   doomed frames computed, and the model time: the service's total
   (``yolo_edge_inference_seconds_sum``) and the share spent on doomed frames (each
   frame's share of its batch's model time).

The client posts pre-built multipart bodies over ``http.client`` to take as little of
the shared CPU as it can. Prints a Markdown table for BENCHMARKS.md; ``--json`` writes
the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bentos and edge_agent from this checkout

BOUNDARY = "yolo-edge-deadline-bench"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def body(image: bytes, budget_s: float | None) -> bytes:
    """One frame's /detect request body, with its remaining budget when given."""
    from yolo_edge.remote.wire import BUDGETS_FIELD, budgets_to_form

    out = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"frame.png\"\r\n"
           f"Content-Type: image/png\r\n\r\n").encode() + image + b"\r\n"
    if budget_s is not None:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{BUDGETS_FIELD}\"\r\n\r\n"
                f"{budgets_to_form([budget_s])}\r\n").encode()
    return out + f"--{BOUNDARY}--\r\n".encode()


class Connections(threading.local):
    """One keep-alive connection per client thread."""

    def __init__(self, url: str) -> None:
        self.host, self.port = urlparse(url).hostname, urlparse(url).port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, data: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a keep-alive connection the server closed: open a new one once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request("POST", "/detect", body=data, headers=HEADERS)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    return -1, b""
        return -1, b""


def scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("yolo_edge_"):
                key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()) if k == "outcome")
                out[key] += s.value
    return out


def capacity(url: str, images: list[bytes], seconds: float, clients: int) -> float:
    """Frames per second the service answers with ``clients`` closed-loop clients, one frame each request."""
    conns = Connections(url)
    done = Counter()
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            status, _ = conns.post(body(images[(i + n) % len(images)], None))
            done[status] += 1
            n += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return done[200] / (time.perf_counter() - t0)


@dataclass
class Run:
    mode: str
    sent: int = 0
    not_sent: int = 0
    ok: int = 0
    in_budget: int = 0
    expired: int = 0
    refused: int = 0
    failed: int = 0
    doomed: int = 0  # computed although its deadline had passed when its batch started (seen from this side)
    doomed_model_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        lat = sorted(self.latencies)
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
        return {"mode": self.mode, "due": self.sent + self.not_sent, "sent": self.sent, "not_sent": self.not_sent,
                "ok": self.ok, "in_budget": self.in_budget, "expired_by_service": self.expired,
                "refused": self.refused, "failed": self.failed, "doomed_seen_by_client": self.doomed,
                "doomed_model_s": self.doomed_model_s, "p50_ok_ms": q[49] * 1e3 if q else None,
                "p99_ok_ms": q[98] * 1e3 if q else None, **self.server}


def overload(url: str, images: list[bytes], rate: float, seconds: float, budget_s: float, with_budgets: bool,
             workers: int) -> Run:
    """Open loop: a frame due every 1/rate s for ``seconds``; each request sent by a free worker thread."""
    from yolo_edge.remote.wire import FrameStatus, decode_results

    run = Run("budgets" if with_budgets else "no budgets")
    lock = threading.Lock()
    conns = Connections(url)
    before = scrape(url)

    def frame(due: float, image: bytes) -> None:
        deadline = due + budget_s
        left = deadline - time.perf_counter()
        if with_budgets and left <= 0:
            with lock:
                run.not_sent += 1  # spent waiting for a free client thread: the client answers it expired
            return
        sent = time.perf_counter()
        status, data = conns.post(body(image, max(0.0, left) if with_budgets else None))
        answered = time.perf_counter()
        with lock:
            run.sent += 1
            if status in (429, 503):
                run.refused += 1
                return
            if status != 200:
                run.failed += 1
                return
            (result,) = decode_results(json.loads(data), 1)
            if result.status is FrameStatus.EXPIRED:
                run.expired += 1
                return
            if not result.ok:
                run.failed += 1
                return
            run.ok += 1
            run.latencies.append(answered - due)
            run.in_budget += answered <= deadline
            if sent + result.timing.queue_ms / 1e3 >= deadline:  # its batch started after its deadline
                run.doomed += 1
                run.doomed_model_s += result.timing.inference_ms / 1e3 / max(1, result.timing.batch_frames)

    t0 = time.perf_counter() + 0.05
    n = int(rate * seconds)
    with ThreadPoolExecutor(workers) as pool:
        for k in range(n):
            due = t0 + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pool.submit(frame, due, images[k % len(images)])
    after = scrape(url)
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    run.server = {
        "server_model_s": diff.get("yolo_edge_inference_seconds_sum", 0.0),
        "server_computed": diff.get("yolo_edge_batch_frames_sum", 0.0),
        "server_expired": diff.get("yolo_edge_frames_total{outcome=expired}", 0.0),
        "server_doomed_computed": diff.get("yolo_edge_doomed_frames_computed_total", 0.0),
    }
    return run


def frames(url: str) -> list[bytes]:
    """Real photos as CloudClient uploads them: shrunk to the model's input size, lossless PNG."""
    from yolo_edge import samples
    from yolo_edge.remote.cloud import CloudClient, prepare_upload

    with CloudClient(url) as client:
        imgsz = client.service_info().imgsz
    return [prepare_upload(samples.load(name), imgsz=imgsz).data for name in ("bus.jpg", "zidane.jpg")]


def table(rows: list[dict], rate: float, cap: float, budget_ms: float) -> str:
    lines = [f"Capacity {cap:.1f} frames/s (closed loop); offered {rate:.1f} frames/s, one frame per request, "
             f"budget {budget_ms:.0f} ms from when each frame is due.\n",
             "| requests | frames due | sent | answered OK | OK within budget | expired: by service / not sent | "
             "refused 429/503 | computed after their deadline (service metric / seen by client) | model time "
             "on those | model time total | p50 / p99 of OK ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        doomed_server = ("n/a" if r["mode"] == "no budgets" else f"{r['server_doomed_computed']:.0f}")
        lines.append(
            f"| {r['mode']} | {r['due']} | {r['sent']} | {r['ok']} | {r['in_budget']} ({r['in_budget'] / r['due']:.0%}) | "
            f"{r['expired_by_service']} / {r['not_sent']} | {r['refused']} | {doomed_server} / {r['doomed_seen_by_client']} | "
            f"{r['doomed_model_s']:.1f} s | {r['server_model_s']:.1f} s | "
            f"{r['p50_ok_ms'] or 0:.0f} / {r['p99_ok_ms'] or 0:.0f} |")
    return "\n".join(lines)


def merge(runs: list[Run]) -> dict:
    rows = [r.row() for r in runs]
    out: dict = {"mode": rows[0]["mode"], "rounds": len(rows)}
    for key, value in rows[0].items():
        if key == "mode":
            continue
        if key.startswith("p"):
            out[key] = statistics.median(r[key] for r in rows if r[key] is not None) if any(r[key] for r in rows) else None
        else:
            out[key] = sum(r[key] for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="open-loop time per mode and round")
    parser.add_argument("--budget-ms", type=float, default=500.0)
    parser.add_argument("--overload", type=float, default=2.0, help="offered load / measured capacity")
    parser.add_argument("--rounds", type=int, default=1, help="turns of (no budgets, budgets)")
    parser.add_argument("--capacity-seconds", type=float, default=8.0)
    parser.add_argument("--capacity-clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=128, help="client threads (requests in flight at most)")
    parser.add_argument("--url", help="a running service instead of starting one")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    service = None
    url = args.url
    if url is None:
        from edge_agent.cloudserve import LocalService

        service = LocalService(threads=1, log_dir=Path(tempfile.mkdtemp(prefix="deadline-bench-"))).start()
        url = service.url
    try:
        images = frames(url)
        capacity(url, images, 2.0, args.capacity_clients)  # warm the paths
        cap = capacity(url, images, args.capacity_seconds, args.capacity_clients)
        rate = cap * args.overload
        budget_s = args.budget_ms / 1e3
        plain: list[Run] = []
        budgeted: list[Run] = []
        for r in range(args.rounds):
            for with_budgets, runs in ((False, plain), (True, budgeted)):
                print(f"round {r + 1}: {'budgets' if with_budgets else 'no budgets'}, {rate:.1f} frames/s "
                      f"for {args.seconds:.0f} s ...", file=sys.stderr)
                runs.append(overload(url, images, rate, args.seconds, budget_s, with_budgets, args.workers))
                time.sleep(2.0)  # let the last answers and metrics settle
    finally:
        if service is not None:
            service.stop()
    rows = [merge(plain), merge(budgeted)]
    result = {"capacity_fps": cap, "offered_fps": rate, "budget_ms": args.budget_ms, "seconds": args.seconds,
              "rounds": args.rounds, "cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(table(rows, rate, cap, args.budget_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
