"""Circuit breaker and the robust timing estimators (pure values, explicit clocks)."""

from __future__ import annotations

import pytest

from edge_agent.breaker import Breaker, BreakerConfig, BreakerState, on_failure, on_success
from edge_agent.estimators import SojournModel, WindowedQuantile
from yolo_edge.errors import ConfigError

CFG = BreakerConfig(threshold=3, cooldown_s=0.25, max_cooldown_s=0.5)


def test_opens_after_threshold_and_half_opens_after_cooldown():
    b = Breaker()
    for t in range(2):
        b = on_failure(b, now=float(t), cfg=CFG)
        assert b.state(now=float(t)) is BreakerState.CLOSED
    b = on_failure(b, now=2.0, cfg=CFG)
    assert b.state(2.2) is BreakerState.OPEN and b.state(2.25) is BreakerState.HALF_OPEN


def test_failed_probe_reopens_with_doubled_capped_cooldown():
    b = Breaker()
    for _ in range(3):
        b = on_failure(b, now=0.0, cfg=CFG)
    b = on_failure(b, now=0.25, cfg=CFG)  # probe fails
    assert b.open_until == pytest.approx(0.75)
    b = on_failure(b, now=0.75, cfg=CFG)
    assert b.open_until == pytest.approx(1.25)  # 1.0 s capped at 0.5: resumption stays within a second
    assert on_success(b).state(0.8) is BreakerState.CLOSED


def test_late_failures_of_requests_sent_before_it_opened_do_not_extend_it():
    b = Breaker()
    for _ in range(3):
        b = on_failure(b, now=0.0, cfg=CFG)
    assert on_failure(b, now=0.1, cfg=CFG).open_until == b.open_until


def test_retry_after_opens_at_once_and_sets_the_cooldown():
    b = on_failure(Breaker(), now=0.0, cfg=CFG, retry_after_s=30)
    assert b.state(29.9) is BreakerState.OPEN and b.open_until == 30.0


@pytest.mark.parametrize("kw", [dict(threshold=0), dict(cooldown_s=0), dict(cooldown_s=2, max_cooldown_s=1),
                                dict(threshold=1.5)])
def test_breaker_config_validation(kw):
    with pytest.raises(ConfigError):
        BreakerConfig(**kw)


def test_windowed_quantile_is_not_moved_far_by_one_outlier():
    q = WindowedQuantile(size=20)
    for _ in range(19):
        q.update(0.1, at=0.0)
    q.update(5.0, at=0.0)
    assert q.quantile(0.9) == 0.1 and q.quantile(1.0) == 5.0


def test_windowed_quantile_forgets_by_count_and_by_age():
    q = WindowedQuantile(size=3, prior=0.5)
    assert q.quantile(0.5) == 0.5
    for x in (1.0, 2.0, 3.0, 4.0):
        q.update(x, at=0.0)
    assert q.samples == 3 and q.quantile(0.0) == 2.0
    aged = WindowedQuantile(size=100, horizon_s=2.0, keep=2)
    for t in range(10):
        aged.update(float(t), at=float(t))
    assert aged.quantile(0.0, now=9.0) == 7.0  # only the last 2 s
    assert aged.quantile(0.0, now=100.0) == 8.0 and aged.samples == 2  # the newest `keep` always stay
    with pytest.raises(ConfigError):
        q.update(float("nan"), at=0.0)


def test_sojourn_model_learns_the_cost_of_each_frame_ahead():
    m = SojournModel(size=64, parallel=4)
    assert m.quantile(0, 0.5) is None
    for _ in range(10):
        for depth in range(4):
            m.update(depth, 0.1 + 0.08 * depth, at=0.0)
    assert m.per_frame() == pytest.approx(0.08)
    assert m.quantile(2, 0.5) == pytest.approx(0.26)
    # past the deepest depth seen it assumes each frame costs at least base / parallel
    assert m.quantile(6, 0.5) >= 0.1 + 0.08 * 6


def test_sojourn_model_of_an_idle_cloud_shows_no_queueing():
    m = SojournModel(size=64, parallel=4)
    for i in range(20):
        m.update(i % 3, 0.2 + 0.001 * (i % 5), at=0.0)
    assert m.per_frame() < 0.005 and m.quantile(2, 0.9) < 0.21
