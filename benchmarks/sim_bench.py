"""Routing quality, measured: the device core in the simulator, against an oracle bound and a baseline.

    .venv/bin/python benchmarks/sim_bench.py --seeds 20 --json out/sim_bench.json

Three tables, all from the same code the agent runs (edge_agent.core):

1. every scenario over ``--seeds`` seeds: the policy's within-budget share, the offline
   oracle's upper bound and the policy's share of it, the fixed-threshold baseline, the
   offload ratio against the overflow local capacity cannot take, and the results released
   after their deadline while counted within budget (0 by construction, counted anyway);
2. fidelity: the same traces through the real threaded agent (wall clock, its threads and
   sinks; fakes that take the trace's sampled service times) and through the simulator;
3. a fleet: ``--devices`` devices on three endpoints, one killed mid-run, against the fleet bound.

Prints markdown tables; ``--json`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.sim.livesim import run_threaded  # noqa: E402
from edge_agent.sim.oracle import fleet_bound, needed_offload, oracle_bound  # noqa: E402
from edge_agent.sim import simulate, simulate_fleet  # noqa: E402
from edge_agent.sim.traces import (  # noqa: E402
    CAPACITY_SCENARIOS, JITTER_SCENARIOS, LIVENESS_SCENARIOS, SCENARIOS, UPLINK_SCENARIOS, CloudTrace, fidelity_traces,
    sample, scenario,
)

#: the scenarios whose share of the oracle bound the issue asks to be >= 99%
ORACLE_TARGETS = ("heavy_tail", "degrading", "on_off")
FIDELITY = fidelity_traces()


def scenario_table(seeds: int) -> list[dict]:
    rows = []
    for name in SCENARIOS:
        per_seed = []
        for seed in range(seeds):
            trace = scenario(name, seed=seed)
            ours, naive = simulate(trace), simulate(trace, strategy="threshold")
            bound = oracle_bound(sample(trace))
            per_seed.append(dict(
                within=ours.within_share, oracle=bound.within_share, ratio=ours.within_share / bound.within_share,
                vs_threshold=ours.within_share - naive.within_share, threshold=naive.within_share,
                offload=ours.offload_ratio, needed=needed_offload(sample(trace)), dishonest=ours.stats.dishonest,
                unaccounted=ours.unaccounted))
        col = {k: [r[k] for r in per_seed] for k in per_seed[0]}
        rows.append(dict(
            scenario=name, seeds=seeds, within_min=min(col["within"]), within_mean=statistics.mean(col["within"]),
            oracle_mean=statistics.mean(col["oracle"]), ratio_min=min(col["ratio"]),
            ratio_mean=statistics.mean(col["ratio"]), threshold_mean=statistics.mean(col["threshold"]),
            vs_threshold_min=min(col["vs_threshold"]), offload_mean=statistics.mean(col["offload"]),
            needed_mean=statistics.mean(col["needed"]),
            offload_over_needed_max=max(o - n for o, n in zip(col["offload"], col["needed"])),
            dishonest=sum(col["dishonest"]), unaccounted=sum(col["unaccounted"])))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


def real_world_table(seeds: int, uplink_seeds: int = 5) -> list[dict]:
    """The scenarios of the world a device lives in: real uplinks (hybrid against local only and
    an oracle that knows the link), slow local spells and 1.2x capacity with jitter."""
    rows = []
    for group, names, n in (("uplink", UPLINK_SCENARIOS, uplink_seeds), ("liveness", LIVENESS_SCENARIOS, uplink_seeds),
                            ("jitter", JITTER_SCENARIOS, seeds)):
        for name in names:
            per = []
            for seed in range(n):
                trace = scenario(name, seed=seed)
                ours, local = simulate(trace), simulate(trace, strategy="local")
                b = oracle_bound(sample(trace)) if group == "uplink" else None
                bound = b.within_share if b else None
                # the bound's local part knows each frame's inference time and takes the short
                # ones: what it answers beyond the local-only policy, no device can know ahead
                lead = max(0, b.local_only - local.stats.within_budget) if b else 0
                rest = ours.stats.within_budget / (b.within - lead) if b and b.within > lead else None
                per.append(dict(within=ours.within_share, local=local.within_share, bound=bound, rest=rest,
                                gain=ours.stats.within_budget - local.stats.within_budget,
                                uploads=ours.stats.upload_frames, hedged=ours.stats.hedged,
                                mb=sum(ours.stats.upload_bytes.values()) / 1e6 / (trace.duration_s - trace.warmup_s)))
            bounds = [r["bound"] for r in per if r["bound"]]
            enc: dict = {}
            for r in per:
                for k, v in r["uploads"].items():
                    enc[k] = enc.get(k, 0) + v
            rows.append(dict(group=group, scenario=name, seeds=n, within_min=min(r["within"] for r in per),
                             within_mean=statistics.mean(r["within"] for r in per),
                             local_mean=statistics.mean(r["local"] for r in per),
                             gain_min=min(r["gain"] for r in per),
                             ratio_min=min(r["within"] / r["bound"] for r in per) if bounds else None,
                             ratio_mean=statistics.mean(r["within"] / r["bound"] for r in per) if bounds else None,
                             rest_min=min(r["rest"] for r in per) if bounds else None,
                             rest_mean=statistics.mean(r["rest"] for r in per) if bounds else None,
                             encodings=enc, hedged=sum(r["hedged"] for r in per),
                             mb_per_s=statistics.mean(r["mb"] for r in per)))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


def fidelity_table() -> list[dict]:
    runs: dict = {}

    def go(name: str) -> None:
        runs[name] = run_threaded(FIDELITY[name])

    threads = [threading.Thread(target=go, args=(name,)) for name in FIDELITY]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for name, trace in FIDELITY.items():
        threaded, sim = runs[name].stats, simulate(trace).stats
        rows.append(dict(scenario=name, frames=threaded.frames, threaded_within=threaded.within_share,
                         sim_within=sim.within_share, threaded_offload=threaded.offload_ratio,
                         sim_offload=sim.offload_ratio, late_deliveries=runs[name].late_deliveries,
                         threaded_dishonest=threaded.dishonest))
    return rows


def fleet_row(devices: int, duration_s: float) -> dict:
    # each device: 30 fps, 25 fps of local capacity, so 5 fps of overflow. Three GPU endpoints
    # that batch concurrent requests (up to 8 frames) are sized so that all three carry 1.35x
    # the fleet's overflow and the two left after one is killed (a third of the way in, for
    # good) only 0.9x: a tenth of the overflow then has nowhere to go, and the fleet must shed
    # it without losing or misreporting a frame
    kill = duration_s / 3
    per_endpoint_fps = 0.45 * devices * 5.0
    batch_share = (1 + 0.5 * 7) / 8  # a frame's share of a full batch's service time
    service = 4 / (per_endpoint_fps * batch_share)
    gpu = dict(service_s=service, slots=4, batch_frames=8)
    endpoints = (CloudTrace(name="gpu-a", **gpu), CloudTrace(name="gpu-b", outages=((kill, math.inf),), **gpu),
                 CloudTrace(name="gpu-c", **gpu))
    trace = scenario("steady", name="fleet", duration_s=duration_s, warmup_s=2.0, endpoints=endpoints, max_batch=4)
    t0 = time.perf_counter()
    run = simulate_fleet(trace, devices=devices)
    sim_s = time.perf_counter() - t0
    bound = fleet_bound(trace, devices)
    return dict(devices=devices, endpoints=3, killed_at_s=kill, duration_s=duration_s, frames=run.stats.frames,
                within=run.within_share, bound=bound.within_share, ratio=run.within_share / bound.within_share,
                unaccounted=run.unaccounted, dishonest=run.stats.dishonest, offload=run.offload_ratio,
                per_endpoint=run.extra["endpoints"], by_endpoint=dict(run.stats.by_endpoint),
                drops=dict(run.stats.drops), simulated_in_s=round(sim_s, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--fleet-seconds", type=float, default=30.0)
    ap.add_argument("--parts", default="scenarios,real_world,fidelity,fleet",
                    help="which tables: scenarios, real_world (uplinks, slow spells, jitter), fidelity (real time, ~35 s; "
                         "wants a quiet machine), fleet")
    ap.add_argument("--json", default="out/sim_bench.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)

    parts = set(args.parts.split(","))
    rows = scenario_table(args.seeds) if "scenarios" in parts else []
    if rows:
        print(f"\n### Every scenario, {args.seeds} seeds (policy vs oracle bound and the fixed-threshold baseline)\n")
        print("| scenario | in budget (min / mean) | oracle bound (mean) | of the bound (min / mean) | threshold (mean) "
              "| vs threshold (worst seed) | offload / needed (mean) | offload over needed (worst) "
              "| released late as in budget |")
        print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " **" if r["scenario"] in ORACLE_TARGETS else ""
        cap = " (1.2x)" if r["scenario"] in CAPACITY_SCENARIOS else ""
        print(f"| {r['scenario']}{cap}{mark} | {r['within_min']:.2%} / {r['within_mean']:.2%} | {r['oracle_mean']:.2%} | "
              f"{r['ratio_min']:.2%} / {r['ratio_mean']:.2%} | {r['threshold_mean']:.2%} | "
              f"{100 * r['vs_threshold_min']:+.2f} pt | {r['offload_mean']:.1%} / {r['needed_mean']:.1%} | "
              f"{100 * r['offload_over_needed_max']:+.1f} pt | {r['dishonest']} |")

    real = real_world_table(args.seeds) if "real_world" in parts else []
    if real:
        print("\n### The real world: uplink traces (5 seeds), slow local spells (5 seeds), 1.2x jitter "
              f"({args.seeds} seeds)\n")
        print("| scenario | in budget (min / mean) | local only (mean) | frames over local only (worst seed) "
              "| of the link-aware bound (min / mean) | of the bound less its local lead (min / mean) "
              "| uploads by encoding | MB/s uploaded | hedged |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in real:
            ratio = "-" if r["ratio_min"] is None else f"{r['ratio_min']:.1%} / {r['ratio_mean']:.1%}"
            rest = "-" if r["rest_min"] is None else f"{r['rest_min']:.1%} / {r['rest_mean']:.1%}"
            enc = ", ".join(f"{k} {v}" for k, v in sorted(r["encodings"].items())) or "-"
            print(f"| {r['scenario']} | {r['within_min']:.2%} / {r['within_mean']:.2%} | {r['local_mean']:.2%} | "
                  f"{r['gain_min']:+d} | {ratio} | {rest} | {enc} | {r['mb_per_s']:.2f} | {r['hedged']} |")

    fidelity = []
    if "fidelity" in parts:
        fidelity = fidelity_table()
        print("\n### Fidelity: the threaded agent and the simulator on the same 30 s trace\n")
        print("| scenario | frames | in budget: threaded / simulated | offload: threaded / simulated "
              "| in-budget results reaching the sink after their deadline |")
        print("|---|---|---|---|---|")
        for r in fidelity:
            print(f"| {r['scenario']} | {r['frames']} | {r['threaded_within']:.2%} / {r['sim_within']:.2%} "
                  f"({100 * (r['threaded_within'] - r['sim_within']):+.2f} pt) | {r['threaded_offload']:.1%} / "
                  f"{r['sim_offload']:.1%} ({100 * (r['threaded_offload'] - r['sim_offload']):+.2f} pt) | "
                  f"{r['late_deliveries']} |")

    fleet = fleet_row(args.devices, args.fleet_seconds) if "fleet" in parts else None
    if fleet:
        print(f"\n### Fleet: {fleet['devices']} devices on 3 endpoints, one killed at {fleet['killed_at_s']:.0f} s\n")
        print("| frames | in budget | fleet bound | of the bound | frames lost | released late as in budget "
              "| offload | cloud answers by endpoint | simulated in |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {fleet['frames']} | {fleet['within']:.2%} | {fleet['bound']:.2%} | {fleet['ratio']:.2%} | "
              f"{fleet['unaccounted']} | {fleet['dishonest']} | {fleet['offload']:.1%} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(fleet['by_endpoint'].items()))} | {fleet['simulated_in_s']} s |")

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"scenarios": rows, "real_world": real, "fidelity": fidelity, "fleet": fleet},
                                          indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
