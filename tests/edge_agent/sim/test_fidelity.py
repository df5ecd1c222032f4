"""Fidelity: the same trace through the real threaded agent and through the simulator.

The threaded agent runs on the wall clock with its real threads, timers and sinks; its
local detector sleeps each frame's sampled service time and its cloud is the simulator's
own service model on a wall-clock loop (``edge_agent.sim.livesim``). Both drive the one device
core, so what differs is only what the simulator leaves out: thread scheduling, timer
latency, real sleeps. Six 30 s traces run at once (about 35 s).
"""

from __future__ import annotations

import logging
import threading

import pytest

from edge_agent.sim.livesim import run_threaded
from edge_agent.sim import simulate
from edge_agent.sim.traces import fidelity_traces, scenario

TRACES = {
    **fidelity_traces(),  # the ones benchmarks/sim_bench.py --parts fidelity reports
    # a cloud that slows down past the budget and comes back: the "slow cloud" of the honesty check
    "slow_cloud": scenario("brownout", duration_s=30, warmup_s=2, cloud_degrade=((5.0, 15.0, 25.0, 6.0),)),
}


@pytest.fixture(scope="module")
def runs():
    logging.getLogger("edge_agent").setLevel(logging.ERROR)
    out = {}

    def go(name):
        out[name] = run_threaded(TRACES[name])

    threads = [threading.Thread(target=go, args=(name,)) for name in TRACES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    logging.getLogger("edge_agent").setLevel(logging.NOTSET)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["steady", "burst", "outage", "cold_start", "jitter"])
def test_threaded_agent_and_simulator_agree(runs, name):
    threaded, sim = runs[name].stats, simulate(TRACES[name]).stats
    assert abs(threaded.frames - sim.frames) <= 1  # the warm-up cut may fall either side of one frame
    # measured on a quiet machine: within-budget shares 0-0.6 points apart, and the threaded
    # agent offloading 0.2-1.5 points more (its local worker waits for thread wake-ups the
    # simulator does not have); up to 1.3 and 2.4 points with other work on the 2 cores
    assert abs(threaded.within_share - sim.within_share) <= 0.015, (threaded.as_dict(), sim.as_dict())
    assert abs(threaded.offload_ratio - sim.offload_ratio) <= 0.03, (threaded.as_dict(), sim.as_dict())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRACES))
def test_nothing_reaches_the_sinks_after_its_deadline_while_counted_within_budget(runs, name):
    run = runs[name]
    assert run.late_deliveries == 0 and run.stats.dishonest == 0
    assert [r.seq for r in run.results] == list(range(len(run.results)))  # every frame once, in order
    if name in ("jitter", "slow_cloud", "outage"):
        assert run.stats.outcomes  # the jittery, slow and failing clouds of the check all ran
