"""Endpoint health (max_fails within fail_timeout, out, probe) and the robust timing estimators."""

from __future__ import annotations

import math

import pytest

from edge_agent.core.estimators import SojournModel, WindowedQuantile
from yolo_edge.remote.health import Health, HealthConfig, on_failure, on_success
from yolo_edge.errors import ConfigError

CFG = HealthConfig(max_fails=3, fail_timeout_s=0.8)


def test_out_after_max_fails_within_fail_timeout():
    h = Health()
    for t in (0.0, 0.2):
        h = on_failure(h, now=t, cfg=CFG)
        assert not h.out(t)
    h = on_failure(h, now=0.4, cfg=CFG)
    assert h.out(0.5) and h.out(1.19) and not h.out(1.21)  # out for fail_timeout, then probed


def test_failures_spread_wider_than_fail_timeout_do_not_take_it_out():
    h = Health()
    for t in (0.0, 1.0, 2.0, 3.0):
        h = on_failure(h, now=t, cfg=CFG)
        assert not h.out(t)


def test_a_success_forgets_the_failures():
    h = on_failure(on_failure(Health(), now=0.0, cfg=CFG), now=0.1, cfg=CFG)
    h = on_failure(on_success(h), now=0.2, cfg=CFG)
    assert not h.out(0.2)


def test_late_failures_of_requests_sent_before_it_went_out_do_not_extend_it():
    h = Health()
    for t in (0.0, 0.1, 0.2):
        h = on_failure(h, now=t, cfg=CFG)
    assert on_failure(h, now=0.5, cfg=CFG).out_until == h.out_until


def test_retry_after_takes_it_out_at_once_for_as_long_as_asked():
    h = on_failure(Health(), now=0.0, cfg=CFG, retry_after_s=30)
    assert h.out(29.9) and h.out_until == 30.0
    assert on_failure(Health(), now=0.0, cfg=CFG, retry_after_s=0.1).out_until == pytest.approx(0.8)


@pytest.mark.parametrize("kw", [dict(max_fails=0), dict(max_fails=1.5), dict(fail_timeout_s=0),
                                dict(fail_timeout_s=math.inf), dict(fail_timeout_s="1")])
def test_health_config_validation(kw):
    with pytest.raises(ConfigError):
        HealthConfig(**kw)


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
