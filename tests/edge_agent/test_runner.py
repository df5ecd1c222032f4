"""The runner with fake detector/cloud: accounting, order, offload, failures, shutdown."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.policy import CloudState
from edge_agent.runner import Agent

from agent_fakes import FakeCloud, SlowDetector

IMG = np.zeros((32, 48, 3), np.uint8)


def feed(agent: Agent, n: int, fps: float) -> None:
    start = time.monotonic()
    for i in range(n):
        wait = start + i / fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        agent.submit(IMG, captured_at=start + i / fps)


def check_accounting(agent: Agent, n: int) -> None:
    s = agent.stats
    assert s.frames == n, s.as_dict()
    assert sum(s.outcomes.values()) == n
    assert s.seqs_in_order


def test_local_only_all_frames_answered_in_order():
    agent = Agent(AgentConfig(latency_budget_ms=500), detector=SlowDetector(0.001))
    with agent:
        feed(agent, 40, fps=200)
    check_accounting(agent, 40)
    assert agent.stats.outcomes["local"] == 40


def test_overflow_goes_to_cloud_at_twice_local_capacity():
    det, cloud = SlowDetector(0.02), FakeCloud(rtt_s=0.03)
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=4, max_inflight=4), detector=det, cloud=cloud)
    with agent:
        feed(agent, 120, fps=100)  # local capacity 50 fps
    check_accounting(agent, 120)
    s = agent.stats
    assert cloud.wakes == 1 and s.outcomes["cloud"] > 20 and s.outcomes["local"] > 30, s.as_dict()
    assert s.within_budget >= 0.95 * 120, s.as_dict()
    assert cloud.max_concurrent <= 4
    assert agent.metrics.offload_ratio._value.get() == pytest.approx(s.offload_ratio)


def test_batched_sending_groups_frames():
    cloud = FakeCloud(rtt_s=0.03)
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=2, max_inflight=1, max_batch=4, mode="cloud"),
                  detector=SlowDetector(0.02), cloud=cloud)
    with agent:
        feed(agent, 60, fps=120)
    check_accounting(agent, 60)
    assert cloud.frames > cloud.requests  # several frames per request


def test_cloud_outage_falls_back_then_resumes():
    det, cloud = SlowDetector(0.02), FakeCloud(rtt_s=0.02)
    cfg = AgentConfig(latency_budget_ms=300, queue_budget=4, breaker_threshold=2, breaker_cooldown_s=0.3)
    agent = Agent(cfg, detector=det, cloud=cloud)
    with agent:
        feed(agent, 40, fps=100)
        cloud.down = True
        before = cloud.frames
        feed(agent, 60, fps=100)
        during = cloud.frames
        assert during - before <= 4  # only requests already in flight when it went down
        assert agent.health()["cloud"] in ("failing", "ready")
        cloud.down = False
        feed(agent, 80, fps=100)
    check_accounting(agent, 180)
    assert cloud.frames > during  # offload resumed after the cool-down
    drops = agent.stats.drops
    assert set(drops) <= {"cloud_failing", "cloud_busy", "expired_in_queue", "cloud_too_slow"}, drops


def test_model_mismatch_refuses_offload_loudly(caplog):
    cloud = FakeCloud(mismatch=True)
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=2), detector=SlowDetector(0.02), cloud=cloud)
    with agent:
        feed(agent, 60, fps=100)
    check_accounting(agent, 60)
    assert agent.stats.outcomes["cloud"] == 0
    assert agent.health()["cloud"] == CloudState.DISABLED.value
    assert "OFFLOAD REFUSED" in caplog.text


def test_cold_cloud_nothing_blocks_while_waking():
    cloud = FakeCloud(wake_s=10.0)  # longer than the run: stays waking
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=3, wake_timeout_s=20), detector=SlowDetector(0.02),
                  cloud=cloud)
    start = time.monotonic()
    agent.start()
    feed(agent, 60, fps=100)
    assert time.monotonic() - start < 1.5  # admission never waited on the cloud
    stats = agent.close(drain_timeout_s=2.0)
    assert stats.frames == 60 and stats.outcomes["cloud"] == 0
    assert set(stats.drops) <= {"cloud_waking", "cloud_cold", "expired_in_queue"}
    assert stats.outcomes["local"] > 0 and stats.drops


def test_late_cloud_answer_is_recorded_late_not_mixed_in():
    cloud = FakeCloud(rtt_s=0.25)
    agent = Agent(AgentConfig(latency_budget_ms=200, mode="cloud", late_grace_s=1.0), detector=SlowDetector(), cloud=cloud)
    agent._rtt.update(0.01)  # a stale optimistic estimate: the policy believes it fits
    with agent:
        agent._phase = CloudState.READY
        agent.submit(IMG)
    assert agent.stats.outcomes["late"] == 1 and agent.stats.outcomes["cloud"] == 0


def test_shutdown_accounts_for_in_flight_frames():
    det = SlowDetector(0.05)
    agent = Agent(AgentConfig(latency_budget_ms=2000, queue_budget=50), detector=det).start()
    for _ in range(20):
        agent.submit(IMG)
    stats = agent.close(drain_timeout_s=0.3)  # not enough time for all of them
    assert stats.frames == 20 and sum(stats.outcomes.values()) == 20
    assert stats.drops.get("no_result", 0) > 0
    assert agent.submit(IMG) == 20  # after close: accounted as dropped[shutdown]


def test_local_errors_are_dropped_with_reason():
    def broken(img):
        raise RuntimeError("boom")

    agent = Agent(AgentConfig(), detector=broken)
    with agent:
        agent.submit(IMG)
    assert agent.stats.drops == {"local_error": 1}
