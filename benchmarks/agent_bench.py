"""Agent benchmark: local-only vs cloud-only vs hybrid at twice the local capacity, on pinned cores.

The cloud stand-in is a real ``bentoml serve`` of bentos.service on 127.0.0.1 (one inference
thread) pinned to core 1; the agent's local worker (the real Detector with one thread) is
pinned to core 0 (``AgentConfig(local_cpus=(0,))``). On this 2-core machine the two would
otherwise compete for the same core, and the benchmark would measure that contest instead
of the routing. The agent's other threads (frame intake, cloud senders, timers) float. Frames
are real photos (bus.jpg, zidane.jpg at 960x540) replayed at 2x the measured local rate.

    .venv/bin/python benchmarks/agent_bench.py --seconds 20 --json out/agent_bench.json

Reports, per mode: frames within budget, in-budget throughput, p50/p99 latency per route,
offload ratio; and hybrid throughput against the capacities measured by the local-only and
cloud-only runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.cloudserve import LocalService  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402
from edge_agent.demo import measure_local_fps, photos  # noqa: E402
from edge_agent.runner import Agent  # noqa: E402
from edge_agent.sources import replay  # noqa: E402
from yolo_edge import Detector  # noqa: E402
from yolo_edge.cloud import CloudClient  # noqa: E402
from yolo_edge.image import load_image  # noqa: E402

AGENT_CORE, CLOUD_CORE = 0, 1
PINNED = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def run_mode(mode: str, detector, url: str | None, frames, fps: float, seconds: float, budget_ms: float) -> dict:
    cfg = AgentConfig(mode=mode, latency_budget_ms=budget_ms, queue_budget=8, max_inflight=4, local_threads=1,
                      local_cpus=(AGENT_CORE,) if PINNED else None)
    clouds = []
    if mode != "local":
        clouds = [CloudClient(url, timeout=cfg.timeout_s, max_retries=0, expected_sha256=detector.info.sha256)]
        clouds[0].wake(wait_s=30)
    agent = Agent(cfg, detector=detector, cloud=clouds, cloud_warm=bool(clouds))
    n = int(fps * seconds)
    stats = agent.run(replay((frames[i % len(frames)] for i in range(n)), fps=fps))
    for c in clouds:
        c.close()
    d = stats.as_dict()
    d.update(mode=mode, offered_fps=round(fps, 2), within=stats.within_budget,
             within_fps=round(stats.within_budget / seconds, 2))
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--budget-ms", type=float, default=500.0)
    ap.add_argument("--json", default="out/agent_bench.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    pinned = PINNED
    if pinned:  # the measurement of the local rate below runs on the local worker's core too
        os.sched_setaffinity(0, {AGENT_CORE})
    frames = [cv2.resize(load_image(p), (960, 540)) for p in photos()]
    detector = Detector(None, threads=1)
    local_fps = measure_local_fps(detector, frames[0], runs=20)
    fps = 2 * local_fps
    if pinned:
        os.sched_setaffinity(0, {AGENT_CORE, CLOUD_CORE})  # the agent's other threads float
    print(f"local worker on core {AGENT_CORE}, cloud stand-in on core {CLOUD_CORE}" if pinned else
          "fewer than 2 cores: not pinned", flush=True)
    print(f"local worker alone: {local_fps:.1f} fps (1 thread); offered rate {fps:.1f} fps for {args.seconds:.0f} s, "
          f"budget {args.budget_ms:.0f} ms", flush=True)
    rows = []
    with LocalService(threads=1, log_dir=Path(args.json).parent, cpus={CLOUD_CORE} if pinned else None) as svc:
        for mode in ("local", "cloud", "hybrid"):
            rows.append(run_mode(mode, detector, svc.url, frames, fps, args.seconds, args.budget_ms))
            print(json.dumps(rows[-1]), flush=True)
    local, cloud, hybrid = rows
    capacity = local["within_fps"] + cloud["within_fps"]
    reachable = min(fps, capacity)
    result = {
        "pinned": pinned, "offered_fps": round(fps, 2), "local_capacity_fps": local["within_fps"],
        "cloud_capacity_fps": cloud["within_fps"], "hybrid_within_fps": hybrid["within_fps"],
        "hybrid_vs_capacity": round(hybrid["within_fps"] / capacity, 3) if capacity else None,
        "hybrid_vs_reachable": round(hybrid["within_fps"] / reachable, 3) if reachable else None, "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print()
    print("| mode | offered fps | within budget (all frames) | in-budget throughput (fps) | local p50/p99 ms "
          "| cloud p50/p99 ms | offload ratio | late | dropped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['offered_fps']} | {r['within_budget_share']:.1%} | {r['within_fps']} | "
              f"{r['local_p50_ms']}/{r['local_p99_ms']} | {r['cloud_p50_ms']}/{r['cloud_p99_ms']} | "
              f"{r['offload_ratio']:.1%} | {r['outcomes'].get('late', 0)} | {r['outcomes'].get('dropped', 0)} |")
    print(f"\nhybrid in-budget throughput = {result['hybrid_vs_capacity']:.0%} of local+cloud capacity "
          f"({capacity:.1f} fps), {result['hybrid_vs_reachable']:.0%} of min(offered, capacity)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
