"""The simulator: the device core on a virtual clock, against an oracle bound and the baselines.

The numbers asked of the device are checked over 20 seeds per scenario, as BENCHMARKS.md
reports them (``benchmarks/sim_bench.py``).
"""

from __future__ import annotations

import logging

import pytest
from sim_runs import SimRuns

from edge_agent.sim.oracle import needed_offload
from edge_agent.sim import simulate, simulate_fleet
from edge_agent.sim.traces import CAPACITY_SCENARIOS, SCENARIOS, sample, scenario

SEEDS = range(20)


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.ERROR, logger="edge_agent")


SIM = SimRuns()  # every (scenario, seed, strategy) simulated once, on every core
run, bound = SIM.run, SIM.bound


@pytest.fixture(scope="module", autouse=True)
def _sim_workers():
    yield
    SIM.close()


def over_seeds(name: str, *strategies: str, bounds: bool = False) -> None:
    """Simulate ``name`` on every seed with each strategy (and its oracle bound) before a check reads them."""
    SIM.prime([("run", name, seed, strategy) for seed in SEEDS for strategy in strategies] +
              ([("bound", name, seed) for seed in SEEDS] if bounds else []))


@pytest.mark.integration  # every scenario, several strategies: seconds
def test_every_frame_accounted_and_honest_everywhere():
    SIM.prime([("run", name, 0, "policy") for name in SCENARIOS])
    for name in SCENARIOS:
        s = run(name, 0)
        assert s.unaccounted == 0 and s.stats.seqs_in_order, name
        assert s.stats.frames == int((sample(scenario(name)).captured >= SCENARIOS[name].warmup_s).sum()), name
        assert s.stats.dishonest == 0, name  # nothing released after its deadline is counted within budget


@pytest.mark.slow
@pytest.mark.parametrize("name", CAPACITY_SCENARIOS)
def test_enough_capacity_means_999_per_mille_within_budget_on_every_seed(name):
    trace = SCENARIOS[name]
    slowest_local = trace.local_capacity_fps / max([1.0] + [s[2] for s in trace.slow])
    assert slowest_local + trace.cloud_capacity_fps >= 1.2 * trace.peak_fps - 1e-9  # the premise
    assert trace.net_jitter_s > 0  # ... with a jittery round trip
    over_seeds(name, "policy")
    worst = min((run(name, seed).within_share, seed) for seed in SEEDS)
    assert worst[0] >= 0.999, worst


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heavy_tail", "degrading", "on_off"])
def test_99_percent_of_the_oracle_bound(name):
    over_seeds(name, "policy", bounds=True)
    ratios = [(run(name, seed).within_share / bound(name, seed).within_share, seed) for seed in SEEDS]
    assert min(ratios)[0] >= 0.99, min(ratios)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_never_more_than_half_a_point_behind_the_fixed_threshold(name):
    over_seeds(name, "policy", "threshold")
    gaps = [(run(name, seed).within_share - run(name, seed, "threshold").within_share, seed) for seed in SEEDS]
    assert min(gaps)[0] >= -0.005, min(gaps)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_offload_at_most_5_points_above_what_is_needed(name):
    over_seeds(name, "policy")
    over = [(run(name, seed).offload_ratio - needed_offload(sample(scenario(name, seed=seed))), seed) for seed in SEEDS]
    assert max(over)[0] <= 0.05, max(over)


@pytest.mark.integration  # the oracle over every scenario: seconds
def test_oracle_is_an_upper_bound_of_every_strategy():
    for name in ("steady", "burst", "outage", "slow_device", "local_warmup"):
        b = bound(name, 0)
        for strategy in ("policy", "local", "cloud", "threshold"):
            assert run(name, 0, strategy).stats.within_budget <= b.within, (name, strategy)
        assert run(name, 0, "local").stats.within_budget <= b.local_only


def test_cold_start_nothing_blocks_local_keeps_running():
    trace = scenario("cold_start", duration_s=50, warmup_s=2)  # cloud ready at ~30 s
    s = simulate(trace, strategy="policy")
    assert s.unaccounted == 0 and s.stats.outcomes["cloud"] > 0  # woken early, used once up
    assert set(s.stats.drops) <= {"cloud_waking", "cloud_cold", "expired_in_queue"}, s.stats.drops
    # local ran at capacity all along: about 25 fps over 48 s
    assert s.stats.outcomes["local"] >= 0.95 * trace.local_capacity_fps * (trace.duration_s - trace.warmup_s)


def test_outage_drops_only_the_overflow_and_offload_resumes_within_a_second():
    trace = SCENARIOS["outage"]
    s = simulate(trace, strategy="policy")
    (start, end), = trace.cloud_outages
    overflow_fps = trace.fps - trace.local_capacity_fps
    assert s.stats.outcomes["dropped"] <= 1.2 * overflow_fps * (end - start + 1.0)
    assert set(s.stats.drops) <= {"cloud_failing", "cloud_busy", "expired_in_queue", "cloud_too_slow"}


def test_local_warmup_the_cloud_carries_the_device_meanwhile():
    s = simulate(SCENARIOS["local_warmup"])
    assert s.within_share >= 0.999 and s.offload_ratio > 0.3


def test_retry_after_and_a_frozen_cloud_are_survived():
    for name in ("retry_after", "frozen"):
        s = simulate(SCENARIOS[name])
        assert s.unaccounted == 0 and s.stats.dishonest == 0
        assert s.within_share >= simulate(SCENARIOS[name], strategy="local").within_share + 0.05


def test_policy_beats_the_threshold_where_the_device_slows_down():
    ours, naive = run("slow_device", 0), run("slow_device", 0, "threshold")
    assert ours.within_share > naive.within_share + 0.02


@pytest.mark.integration  # a fleet of devices simulated: ~10 s
def test_fleet_on_one_autoscaled_service():
    trace = scenario("steady", name="fleet", duration_s=40, cloud_service_s=0.01, cloud_slots=4, autoscale=True,
                     max_replicas=4, replica_start_s=10.0, cloud_cold_start_s=5.0, max_batch=4)
    ours = simulate_fleet(trace, strategy="policy", devices=40)
    local = simulate_fleet(trace, strategy="local", devices=40)
    assert ours.unaccounted == 0 and ours.stats.dishonest == 0
    assert ours.within_share > local.within_share + 0.05, (ours.row(), local.row())
