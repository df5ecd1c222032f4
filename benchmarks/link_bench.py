"""How closely the shaped link (tests/shaped_link.py) follows a real uplink trace, and what it costs.

    flock /tmp/yolo-edge-bench.lock .venv/bin/python benchmarks/link_bench.py [--seconds 20]

Needs root (network namespaces, veth, tc). For each trace stretch it makes a shaped link,
sends one bulk TCP upload through it to a sink inside the namespace while UDP probes
measure the round trip, and compares the sink's goodput with the trace's own bytes over
the same interval (the trace's bytes are counted as TCP payload, 1448 of each 1500-byte
packet, so a goodput / trace of 1.0 is a perfect score). It runs each stretch with the machine's default TCP congestion control (what the
agent's connections use) and with CUBIC (loss-based, as on most phones: it fills the
queue, so its round trip shows the queue's depth). The probes are one every 250 ms, each
waiting for its echo before the next; only those sent during the measured interval count. Also times the link's set-up and
removal, and how late the shaper applied its steps. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from link_probes import BulkSink, EchoServer, bulk_share, rtt_probes  # noqa: E402
from shaped_link import ShapedLink, shaped_link_unavailable  # noqa: E402

from edge_agent.sim.uplink import bundled  # noqa: E402

STRETCHES = [("verizon-lte", 0.0), ("verizon-lte", 40.0), ("att-lte-driving", 0.0), ("att-lte-driving", 20.0)]
SINK, ECHO = 5001, 5007


def default_congestion() -> str:
    return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


def up_down(runs: int) -> tuple[float, float]:
    ups, downs = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        link = ShapedLink(bundled("verizon-lte")).__enter__()
        t1 = time.monotonic()
        link.close()
        ups.append(t1 - t0)
        downs.append(time.monotonic() - t1)
    return float(np.median(ups)), float(np.median(downs))


def one(trace_name: str, start_s: float, seconds: float, congestion: str | None) -> dict:
    with ShapedLink(bundled(trace_name), start_s=start_s) as link:
        sink = BulkSink.start(link, SINK)
        EchoServer.start(link, ECHO)
        idle = rtt_probes(link.cloud_ip, ECHO, count=10, interval_s=0.05)[:, 1]
        loaded: dict = {}
        t_start = time.monotonic()
        probe = threading.Thread(target=lambda: loaded.update(
            rtt=rtt_probes(link.cloud_ip, ECHO, until=t_start + seconds + 2, interval_s=0.25, timeout_s=30)))
        probe.start()
        t0, t1, good, trace_payload_bps = bulk_share(link, sink, SINK, seconds, congestion=congestion)
        probe.join()
        sched = link.schedule()
        link.check()
        sent, rtts = loaded["rtt"][:, 0], loaded["rtt"][:, 1]
        rtt = rtts[(sent >= t0) & (sent < t1)]  # the probes sent while the upload was measured
        late = sched.lateness_s
        return {"trace": trace_name, "from_s": start_s + t0 - sched.start, "cc": congestion or default_congestion(),
                "trace_mbps": trace_payload_bps / 1e6, "goodput_mbps": good / 1e6, "ratio": good / trace_payload_bps,
                "rtt_idle_ms": float(np.nanmedian(idle)) * 1e3, "rtt_p50_ms": float(np.nanmedian(rtt)) * 1e3,
                "rtt_p90_ms": float(np.nanpercentile(rtt, 90)) * 1e3, "rtt_max_ms": float(np.nanmax(rtt)) * 1e3,
                "probes": len(rtt), "lost_probes": int(np.isnan(rtt).sum()), "drops": int(sched.drops[-1]),
                "late_p50_ms": float(np.median(late)) * 1e3, "late_p99_ms": float(np.percentile(late, 99)) * 1e3,
                "late_max_ms": float(late.max()) * 1e3, "skipped": sched.skipped_steps,
                "changes_per_s": float(sched.plan.changed[:len(late)].mean() / sched.step_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measured stretch")
    ap.add_argument("--updown-runs", type=int, default=5)
    args = ap.parse_args()
    reason = shaped_link_unavailable()
    if reason:
        sys.exit(f"no shaped link here: {reason}")
    print(f"load average before: {open('/proc/loadavg').read().strip()}; cpus {sorted(os.sched_getaffinity(0))}")
    up, down = up_down(args.updown_runs)
    print(f"\nset-up {up * 1e3:.0f} ms, removal {down * 1e3:.0f} ms (median of {args.updown_runs})\n")
    rows = [one(name, start, args.seconds, cc) for name, start in STRETCHES for cc in (None, "cubic")]
    print("| trace, stretch | TCP | trace (payload) Mbit/s | goodput Mbit/s | goodput / trace | RTT idle ms | "
          "RTT loaded p50 / p90 / max ms (probes, lost) | drops | shaper late p50 / p99 / max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} {r['from_s']:.0f}-{r['from_s'] + args.seconds:.0f} s | {r['cc']} | "
              f"{r['trace_mbps']:.2f} | {r['goodput_mbps']:.2f} | {r['ratio']:.3f} | {r['rtt_idle_ms']:.2f} | "
              f"{r['rtt_p50_ms']:.0f} / {r['rtt_p90_ms']:.0f} / {r['rtt_max_ms']:.0f} ({r['probes']}, {r['lost_probes']}) | {r['drops']} | "
              f"{r['late_p50_ms']:.1f} / {r['late_p99_ms']:.1f} / {r['late_max_ms']:.1f} |")
    print(f"\nload average after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
