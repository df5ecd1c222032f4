"""Table-driven tests of the pure offload policy."""

from __future__ import annotations

import pytest

from edge_agent.core.policy import (
    CloudState, Mode, Observation, PolicyConfig, Route, decide, local_eta, make_policy, threshold_policy,
)
from yolo_edge.errors import ConfigError

# hysteresis on (it is off by default) so its rows are tested too
CFG = PolicyConfig(latency_budget_s=0.5, queue_budget=8, local_high=0.8, local_low=0.6, queue_hysteresis=1,
                   wake_at=0.4, wake_queue=2)
R, C = CloudState.READY, CloudState.COLD


def obs(**kw):
    base = dict(frame_age_s=0.0, local_queued=0, local_busy=0, local_service_s=0.05,
                cloud_state=R, cloud_eta_s=0.1, cloud_pending=0, cloud_capacity=4)
    base.update(kw)
    return Observation(**base)


# (name, observation, expected route, expected reason, expected wake)
CASES = [
    ("idle goes local", obs(), Route.LOCAL, "local_fits", False),
    ("short queue stays local", obs(local_queued=3, local_busy=1), Route.LOCAL, "local_fits", False),
    # (5 + 1 + 1) x 0.05 = 0.35 <= 0.8 x 0.5
    ("under high threshold stays local", obs(local_queued=5, local_busy=1), Route.LOCAL, "local_fits", False),
    ("over latency budget offloads", obs(local_queued=7, local_busy=1), Route.CLOUD, "local_over_budget", False),
    ("queue budget offloads even when fast",
     obs(local_queued=8, local_busy=1, local_service_s=0.001), Route.CLOUD, "local_queue_full", False),
    ("old frame has less budget left", obs(frame_age_s=0.3, local_queued=2, local_busy=1), Route.CLOUD, "local_over_budget", False),
    ("expired frame is dropped", obs(frame_age_s=0.5), Route.DROP, "expired", False),
    # offloading, local takes frames at local_low (0.6 x 0.5); with the cloud too slow, up to
    # local_fallback (0.8, here local_high too): (5 + 1 + 1) x 0.05 = 0.35 <= 0.8 x 0.5
    ("cloud too slow falls back to local", obs(local_queued=5, local_busy=1, cloud_eta_s=0.6, offloading=True),
     Route.LOCAL, "fallback_cloud_too_slow", False),
    # ... but not past it: (7 + 1 + 1) x 0.05 = 0.45 would end by the deadline, on the estimate
    # (a real device's run times have a longer tail than the estimate's quantile)
    ("cloud too slow: local takes no more than local_fallback of the budget", obs(local_queued=7, local_busy=1, cloud_eta_s=0.6),
     Route.DROP, "cloud_too_slow", False),
    ("cloud too slow and local hopeless drops", obs(local_queued=8, local_busy=1, local_service_s=0.1, cloud_eta_s=0.6),
     Route.DROP, "cloud_too_slow", False),
    ("a real chance in an idle cloud is taken", obs(local_queued=8, local_busy=1, local_service_s=0.1, cloud_eta_s=0.6,
                                                   cloud_eta_low_s=0.4), Route.CLOUD, "cloud_chance", False),
    ("no long shot into a busy cloud", obs(local_queued=8, local_busy=1, local_service_s=0.1, cloud_eta_s=0.6,
                                           cloud_eta_low_s=0.4, cloud_pending=4), Route.DROP, "cloud_too_slow", False),
    ("a stale estimate gets a probe", obs(local_queued=8, local_busy=1, local_service_s=0.1, cloud_eta_s=0.9,
                                          cloud_probe_due=True), Route.CLOUD, "cloud_chance", False),
    ("warming local: the cloud takes it", obs(local_ready=False), Route.CLOUD, "local_warming", False),
    ("warming local, cold cloud: wake and drop", obs(local_ready=False, cloud_state=C), Route.DROP, "cloud_cold", True),
    ("warming local, no cloud", obs(local_ready=False, cloud_state=CloudState.DISABLED), Route.DROP, "local_warming",
     False),
    ("cold cloud wakes when the queue rises", obs(local_queued=2, local_busy=1, cloud_state=C), Route.LOCAL, "local_fits", True),
    ("cold cloud not woken when idle", obs(local_queued=0, local_busy=1, cloud_state=C), Route.LOCAL, "local_fits", False),
    ("cold cloud: overflow falls back to local", obs(local_queued=5, local_busy=1, cloud_state=C, offloading=True),
     Route.LOCAL, "fallback_cloud_cold", True),
    ("cold cloud and full queue drops with reason", obs(local_queued=8, local_busy=1, cloud_state=C),
     Route.DROP, "cloud_cold", True),
    ("waking cloud is not woken twice", obs(local_queued=8, local_busy=1, cloud_state=CloudState.WAKING),
     Route.DROP, "cloud_waking", False),
    ("failing cloud drops with reason", obs(local_queued=8, local_busy=1, cloud_state=CloudState.FAILING),
     Route.DROP, "cloud_failing", False),
    ("disabled cloud", obs(local_queued=8, local_busy=1, cloud_state=CloudState.DISABLED),
     Route.DROP, "cloud_disabled", False),
    ("cloud in-flight bound", obs(local_queued=8, local_busy=1, cloud_pending=8, cloud_capacity=4),
     Route.DROP, "cloud_busy", False),
    # pending 4 of capacity 4: a second wave, 2 x 0.1 = 0.2 <= 0.45: still fits
    ("cloud answer time at depth fits", obs(local_queued=8, local_busy=1, cloud_pending=4, cloud_eta_s=0.3),
     Route.CLOUD, "local_queue_full", False),
    ("no estimate yet: the prior per wave", obs(local_queued=8, local_busy=1, cloud_pending=4, cloud_eta_s=None),
     Route.DROP, "cloud_too_slow", False),
    ("unknown local service uses prior", obs(local_service_s=None, local_queued=3), Route.LOCAL, "local_fits", False),
    ("per-frame budget override", obs(local_queued=3, local_busy=1, budget_s=0.2), Route.CLOUD, "local_over_budget", False),
]


@pytest.mark.parametrize("name,o,route,reason,wake", CASES, ids=[c[0] for c in CASES])
def test_decide_table(name, o, route, reason, wake):
    d = decide(o, CFG)
    assert (d.route, d.reason, d.wake_cloud) == (route, reason, wake)
    assert d.offloading == (reason not in ("local_fits", "expired"))


def test_hysteresis_needs_lower_threshold_to_return_local():
    # eta (5 + 1 + 1) x 0.05 = 0.35: under high (0.4), over low (0.3)
    o = obs(local_queued=5, local_busy=1)
    assert decide(o, CFG).route is Route.LOCAL
    offloading = decide(obs(local_queued=5, local_busy=1, offloading=True), CFG)
    assert offloading.route is Route.CLOUD and offloading.offloading
    back = decide(obs(local_queued=3, local_busy=1, offloading=True), CFG)
    assert back.route is Route.LOCAL and not back.offloading


def test_hysteresis_on_queue_budget():
    o = obs(local_queued=7, local_busy=1, local_service_s=0.001)
    assert decide(o, CFG).route is Route.LOCAL
    assert decide(obs(local_queued=7, local_busy=1, local_service_s=0.001, offloading=True), CFG).route is Route.CLOUD


def test_routes_come_in_runs_not_flaps():
    """A queue jittering by one frame around the threshold does not flip the route each frame."""
    mode, routes = False, []
    for q in [5, 7, 6, 7, 6, 7, 6, 5, 3, 2, 3, 2]:
        d = decide(obs(local_queued=q, local_busy=1, offloading=mode), CFG)
        mode = d.offloading
        routes.append(d.route.value[0])
    assert "".join(routes) == "lcccccccllll"


@pytest.mark.parametrize("mode,expected", [(Mode.LOCAL, Route.LOCAL), (Mode.CLOUD, Route.CLOUD)])
def test_baseline_modes(mode, expected):
    cfg = PolicyConfig(latency_budget_s=0.5, mode=mode)
    assert decide(obs(), cfg).route is expected
    assert decide(obs(local_queued=20, local_busy=1, cloud_state=CloudState.FAILING), cfg).route is Route.DROP


def test_local_eta_counts_workers():
    assert local_eta(obs(local_queued=3, local_busy=1), 0.1) == pytest.approx(0.5)
    assert local_eta(obs(local_queued=3, local_busy=1, local_workers=2), 0.1) == pytest.approx(0.3)


def test_local_eta_can_count_what_is_left_of_the_runs_in_progress():
    # a run nearly done frees its worker soon: the next frame waits for what is left of it
    nearly_done = obs(local_busy=1, local_left_s=(0.02,))
    assert local_eta(nearly_done, 0.1, left=True) == pytest.approx(0.12)
    assert local_eta(nearly_done, 0.1) == pytest.approx(0.2)  # admission's margin: as if just started
    # two workers, 0.05 and 0.08 s from free: the queued frame takes the first, this one the second
    assert local_eta(obs(local_queued=1, local_busy=2, local_workers=2, local_left_s=(0.08, 0.05)), 0.1,
                     left=True) == pytest.approx(0.18)
    # every run just started: (frames ahead + 1) / workers whole runs, as without the times
    assert local_eta(obs(local_queued=3, local_busy=1, local_workers=2, local_left_s=(0.1,)), 0.1,
                     left=True) == pytest.approx(0.3)


def test_a_cloud_that_cannot_take_a_frame_leaves_it_to_a_worker_about_to_be_free():
    # (issue 17: with its cloud frozen the agent dropped each frame that came while its one
    # worker was busy, as if the run had just started, and answered fewer than local only)
    cfg = PolicyConfig(latency_budget_s=0.5)
    frozen = dict(local_busy=1, local_service_s=0.22, cloud_eta_s=2.0)
    assert decide(obs(**frozen, local_left_s=(0.22,)), cfg).route is Route.DROP  # just started: 0.44 > 0.8 x 0.5
    d = decide(obs(**frozen, local_left_s=(0.11,)), cfg)  # half done: 0.33 <= 0.8 x 0.5
    assert (d.route, d.reason) == (Route.LOCAL, "fallback_cloud_too_slow")
    # with the cloud ready, admission keeps its margin: 0.44 > 0.5 x 0.5, the cloud takes it
    assert decide(obs(local_busy=1, local_service_s=0.22, local_left_s=(0.02,)), cfg).route is Route.CLOUD
    # ... and so do local only's terms, over an uplink that carries nothing in time
    over_a_dead_link = obs(**frozen, local_left_s=(0.02,), cloud_link_s=2.0)
    d = decide(over_a_dead_link, cfg)
    assert (d.route, d.reason) == (Route.DROP, "uplink_too_slow")


def test_local_eta_is_infinite_while_warming():
    assert local_eta(obs(local_ready=False), 0.1) == float("inf")


def test_threshold_baseline_counts_frames_not_time():
    fn = threshold_policy(4)
    assert fn(obs(local_queued=3, local_service_s=1.0)).route is Route.LOCAL  # even when hopeless
    assert fn(obs(local_queued=4)).route is Route.CLOUD
    assert fn(obs(local_queued=4, cloud_pending=8)).reason == "cloud_busy"
    assert fn(obs(local_queued=4, cloud_state=C)).wake_cloud


def test_make_policy_strategies():
    cfg = PolicyConfig()
    assert make_policy("local", cfg)(obs(local_queued=20)).reason == "local_busy"
    assert make_policy("cloud", cfg)(obs()).route is Route.CLOUD
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_policy("random", cfg)


@pytest.mark.parametrize("kw", [dict(latency_budget_s=0), dict(latency_budget_s="1"), dict(queue_budget=0),
                                dict(queue_budget=2.5), dict(local_low=0.9, local_high=0.8), dict(cloud_margin=1.5),
                                dict(queue_hysteresis=8), dict(mode="sometimes"), dict(cloud_quantile=0)])
def test_config_validation(kw):
    with pytest.raises(ConfigError):
        PolicyConfig(**kw)


def test_with_the_cloud_too_slow_local_absorbs_the_overflow_up_to_local_fallback_not_the_whole_budget():
    cfg = PolicyConfig(latency_budget_s=0.5)  # local_high 0.5, local_fallback 0.8
    slow_cloud = dict(local_busy=1, local_service_s=0.05, cloud_eta_s=0.6)
    d = decide(obs(local_queued=5, **slow_cloud), cfg)  # 0.35 s: past local_high x 0.5, within 0.8 x 0.5
    assert (d.route, d.reason) == (Route.LOCAL, "fallback_cloud_too_slow")
    d = decide(obs(local_queued=7, **slow_cloud), cfg)  # 0.45 s: by the deadline, on the estimate; not taken
    assert (d.route, d.reason) == (Route.DROP, "cloud_too_slow")
    # over an uplink too slow for any frame, local only's own terms
    d = decide(obs(local_queued=5, **{**slow_cloud, "cloud_link_s": 0.6}), cfg)
    assert (d.route, d.reason) == (Route.DROP, "uplink_too_slow")
    with pytest.raises(ConfigError, match="local_fallback"):
        PolicyConfig(local_fallback=1.5)


def test_no_long_shot_while_most_of_the_clouds_recent_answers_missed_their_deadline():
    """On a device whose uploads share the local core, each chance costs local capacity."""
    chance = dict(local_queued=8, local_busy=1, local_service_s=0.1, cloud_eta_s=0.6, cloud_eta_low_s=0.4)
    assert decide(obs(**chance, cloud_missing=0.4), CFG).reason == "cloud_chance"
    assert decide(obs(**chance, cloud_missing=0.6), CFG).route is Route.DROP
    assert decide(obs(**chance, cloud_missing=0.6, cloud_probe_due=True), CFG).reason == "cloud_chance"
