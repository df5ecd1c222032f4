from __future__ import annotations

import pytest

from edge_agent.breaker import Breaker, BreakerConfig, effective_cloud, on_failure, on_success
from edge_agent.estimators import Ewma
from edge_agent.policy import CloudState
from yolo_edge.errors import ConfigError

CFG = BreakerConfig(threshold=3, cooldown_s=2.0, max_cooldown_s=5.0)


def test_opens_after_threshold_and_half_opens_after_cooldown():
    b = Breaker()
    for t in range(2):
        b = on_failure(b, now=float(t), cfg=CFG)
        assert b.state(now=float(t)) == "closed"
    b = on_failure(b, now=2.0, cfg=CFG)
    assert b.state(3.9) == "open" and b.state(4.0) == "half_open"
    assert effective_cloud(CloudState.READY, b, 3.0, 8) == (CloudState.FAILING, 8)
    assert effective_cloud(CloudState.READY, b, 4.0, 8) == (CloudState.READY, 1)


def test_failed_probe_reopens_with_doubled_capped_cooldown():
    b = Breaker()
    for _ in range(3):
        b = on_failure(b, now=0.0, cfg=CFG)
    b = on_failure(b, now=2.0, cfg=CFG)  # probe fails
    assert b.open_until == pytest.approx(6.0)
    b = on_failure(b, now=6.0, cfg=CFG)
    assert b.open_until == pytest.approx(11.0)  # 8 s capped at 5
    assert on_success(b).state(6.0) == "closed"


def test_retry_after_extends_cooldown():
    b = Breaker()
    for _ in range(3):
        b = on_failure(b, now=0.0, cfg=CFG, retry_after_s=30)
    assert b.open_until == 30.0


def test_non_ready_phase_passes_through():
    assert effective_cloud(CloudState.COLD, Breaker(), 0.0, 4) == (CloudState.COLD, 4)


def test_ewma_tracks_and_bounds():
    e = Ewma(alpha=0.5, prior=1.0)
    assert e.value == 1.0 and e.upper(2) == 1.0
    for v in [0.1, 0.1, 0.1]:
        e.update(v)
    assert e.value == pytest.approx(0.1) and e.std == 0.0
    e.update(0.3)
    assert e.value == pytest.approx(0.2) and e.upper(1.0) > 0.2
    with pytest.raises(ConfigError):
        e.update(float("nan"))
    with pytest.raises(ConfigError):
        Ewma(alpha=0)
