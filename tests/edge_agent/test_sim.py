"""Simulator scenarios: the same policy code on a virtual clock."""

from __future__ import annotations

import pytest

from edge_agent.sim import simulate, simulate_fleet
from edge_agent.traces import SCENARIOS, scenario


@pytest.mark.parametrize("name", ["steady", "jitter", "slow_device", "double_rate"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enough_capacity_means_99_percent_within_budget(name, seed):
    trace = scenario(name, seed=seed, duration_s=40)
    peak = max([trace.fps] + [b[2] for b in trace.bursts])
    slowest_local = trace.local_capacity_fps / max([1.0] + [s[2] for s in trace.slow])
    assert slowest_local + trace.cloud_capacity_fps >= 1.2 * peak  # the premise
    s = simulate(trace, strategy="policy")
    assert s.within_share >= 0.99, s.row()
    assert s.unaccounted == 0


def test_cold_start_nothing_blocks_local_keeps_running():
    trace = scenario("cold_start", duration_s=50, warmup_s=2)  # cloud ready at ~30 s
    s = simulate(trace, strategy="policy")
    assert s.unaccounted == 0
    # the cloud was woken early (as the queue rose) and used once ready
    assert s.outcomes["cloud"] > 0
    assert set(s.drops) <= {"cloud_waking", "cloud_cold", "expired_in_queue"}, s.drops
    assert s.outcomes["late"] == 0
    # local ran at capacity all along: about 25 fps over 48 s
    assert s.outcomes["local"] >= 0.95 * trace.local_capacity_fps * (trace.duration_s - trace.warmup_s)


def test_outage_every_frame_accounted_and_offload_resumes():
    trace = SCENARIOS["outage"]
    s = simulate(trace, strategy="policy")
    assert s.unaccounted == 0
    assert sum(s.outcomes.values()) == s.frames_after_warmup
    outage_s = sum(end - start for start, end in trace.cloud_outages)
    overflow_fps = trace.fps - trace.local_capacity_fps
    # drops only for the overflow while the cloud is down (plus the breaker's detection time)
    assert s.outcomes["dropped"] <= 1.2 * overflow_fps * (outage_s + 1.0)
    assert set(s.drops) <= {"cloud_failing", "cloud_busy", "expired_in_queue"}
    assert s.outcomes["cloud"] > overflow_fps * (trace.duration_s - outage_s - trace.warmup_s) * 0.8


def test_policy_beats_naive_baselines_where_it_matters():
    for name in ("slow_device", "burst", "jitter"):
        trace = SCENARIOS[name]
        ours = simulate(trace, strategy="policy")
        for base in ("local", "cloud", "threshold"):
            theirs = simulate(trace, strategy=base)
            # never meaningfully worse than any baseline ...
            assert ours.within_share >= theirs.within_share - 0.005, (name, base, ours.row(), theirs.row())
    # ... and better than the fixed threshold where the device itself slows down: the
    # threshold counts frames, the policy counts time
    ours, naive = simulate(SCENARIOS["slow_device"], strategy="policy"), simulate(SCENARIOS["slow_device"], strategy="threshold")
    assert ours.within_share > naive.within_share and ours.outcomes["late"] < naive.outcomes["late"]


def test_offload_ratio_tracks_overflow_not_more():
    trace = SCENARIOS["steady"]
    s = simulate(trace, strategy="policy")
    needed = 1 - trace.local_capacity_fps / trace.fps  # ~17%: the cloud takes only what local cannot
    assert needed - 0.03 <= s.offload_ratio <= needed + 0.05


def test_fleet_on_one_autoscaled_service():
    trace = scenario("steady", name="fleet", duration_s=40, cloud_service_s=0.01, cloud_slots=4, autoscale=True,
                     max_replicas=4, replica_start_s=10.0, cloud_cold_start_s=5.0, max_batch=4)
    ours = simulate_fleet(trace, strategy="policy", devices=40)
    local = simulate_fleet(trace, strategy="local", devices=40)
    assert ours.unaccounted == 0
    assert ours.within_share > local.within_share + 0.05, (ours.row(), local.row())
