"""Sink benchmark: what writing each result through (and spooling it) costs per result.

Side by side, in one process, on the same results (real detections of bus.jpg):

- ``buffered``: the sink before issue 12 (a text file, written when Python's buffer fills);
- ``jsonl``: JsonlSink (one ``write()`` per line, fsync at close);
- ``webhook emit``: WebhookSink.emit, i.e. the spool append the agent's emit thread pays
  (the receiver is down and the backoff long, so the delivery thread stays asleep);
- ``webhook delivery``: results per second a WebhookSink delivers to a local receiver
  (http.server on 127.0.0.1, one POST per result).

    .venv/bin/python benchmarks/sink_bench.py --results 5000
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.core.frames import FrameResult  # noqa: E402
from edge_agent.sinks import JsonlSink, WebhookOptions, WebhookSink  # noqa: E402
from yolo_edge import Detector  # noqa: E402
from yolo_edge.models.fetch import sample_path  # noqa: E402


def per_result_us(emit, results) -> float:
    start = time.perf_counter()
    for r in results:
        emit(r)
    return 1e6 * (time.perf_counter() - start) / len(results)


def buffered(path: Path):
    f = path.open("w", encoding="utf-8")
    return (lambda r: f.write(json.dumps(r.to_dict()) + "\n")), f.close


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=5000)
    ap.add_argument("--delivered", type=int, default=500, help="results POSTed in the delivery measurement")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the down receiver's warnings are expected here
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    dets = Detector(None, threads=1)(str(sample_path("bus.jpg")))
    results = [FrameResult(seq=i, outcome="local", route="local", captured_at=i / 30, deadline=i / 30 + 0.5,
                           finished_at=i / 30 + 0.05, detections=dets) for i in range(args.results)]
    rows = {}
    emit, close = buffered(tmp / "buffered.jsonl")
    rows["buffered (before)"] = per_result_us(emit, results)
    close()
    sink = JsonlSink(tmp / "through.jsonl")
    rows["jsonl (write-through)"] = per_result_us(sink.emit, results)
    sink.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    hook = WebhookSink(down, WebhookOptions(spool=str(tmp / "down.jsonl"), backoff_s=3600, max_backoff_s=3600,
                                            drain_s=0))
    rows["webhook emit (spool append)"] = per_result_us(hook.emit, results)
    hook.close()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook",
                       WebhookOptions(spool=str(tmp / "up.jsonl"), drain_s=600))
    start = time.perf_counter()
    for r in results[: args.delivered]:
        hook.emit(r)
    report = hook.close()
    took = time.perf_counter() - start
    server.shutdown()

    base = rows["buffered (before)"]
    print(f"{args.results} results of {len(json.dumps(results[0].to_dict()))} bytes each")
    for name, us in rows.items():
        print(f"  {name:<30} {us:8.1f} us/result  ({us / base:4.1f}x buffered)")
    print(f"  webhook delivery: {report.delivered} results in {took:.2f} s = {report.delivered / took:.0f} results/s "
          f"(one POST each, local receiver)")


if __name__ == "__main__":
    main()
