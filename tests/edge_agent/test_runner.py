"""The threaded driver with fake detector/cloud that take real time: accounting, order, offload,
failures, warm-up, shutdown. (The device's decisions themselves are tested on a virtual clock in
test_core.py; here it is the threads, the wall clock and the I/O around them.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.core.events import Release
from edge_agent.core.frames import Outcome, Route
from edge_agent.core.policy import CloudState
from edge_agent.runner import Agent

from agent_fakes import FakeCloud, ListSink, SlowDetector

IMG = np.zeros((32, 48, 3), np.uint8)


def feed(agent: Agent, n: int, fps: float) -> None:
    start = time.monotonic()
    for i in range(n):
        wait = start + i / fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        agent.submit(IMG, captured_at=start + i / fps)


def check_accounting(agent: Agent, sink: ListSink, n: int) -> None:
    s = agent.stats
    assert s.frames == n and sum(s.outcomes.values()) == n, s.as_dict()
    assert [r.seq for r in sink.results] == list(range(n)) and s.seqs_in_order
    # honest delivery: what counts as within budget reached the sink by its deadline
    for r, got_at in zip(sink.results, sink.received_at):
        if r.within_budget:
            assert got_at <= r.deadline, (r, got_at)


def test_local_only_all_frames_answered_in_order():
    sink = ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=2000), detector=SlowDetector(0.001), sinks=[sink])
    with agent:
        feed(agent, 40, fps=200)
    check_accounting(agent, sink, 40)
    assert agent.stats.outcomes[Outcome.LOCAL] == 40


def test_overflow_goes_to_the_cloud_at_twice_local_capacity():
    det, cloud, sink = SlowDetector(0.02), FakeCloud(rtt_s=0.03), ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=400, queue_budget=6, max_inflight=4), detector=det, cloud=cloud,
                  sinks=[sink])
    with agent:
        feed(agent, 120, fps=100)  # local capacity 50 fps
    check_accounting(agent, sink, 120)
    s = agent.stats
    assert cloud.wakes == 1 and s.outcomes[Outcome.CLOUD] > 20 and s.outcomes[Outcome.LOCAL] > 30, s.as_dict()
    assert cloud.max_concurrent <= 4
    assert agent.metrics.offload_ratio._value.get() == pytest.approx(s.offload_ratio)


def test_batched_sending_groups_frames():
    cloud, sink = FakeCloud(rtt_s=0.03), ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=300, max_inflight=1, max_batch=4, mode="cloud"),
                  detector=SlowDetector(0.02), cloud=cloud, sinks=[sink])
    with agent:
        feed(agent, 60, fps=120)
    check_accounting(agent, sink, 60)
    assert cloud.frames > cloud.requests  # several frames per request


def test_cloud_outage_falls_back_then_resumes_within_a_second():
    det, cloud, sink = SlowDetector(0.02), FakeCloud(rtt_s=0.02), ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=4), detector=det, cloud=cloud, sinks=[sink])
    with agent:
        feed(agent, 40, fps=100)
        cloud.down = True
        before = cloud.frames
        feed(agent, 60, fps=100)
        assert cloud.frames - before <= 4  # only requests already in flight when it went down
        assert agent.health()["cloud"] in ("failing", "ready")
        cloud.down = False
        back = time.monotonic()
        feed(agent, 80, fps=100)
    check_accounting(agent, sink, 180)
    resumed = [r for r in sink.results if r.outcome is Outcome.CLOUD and r.captured_at > back]
    assert resumed and resumed[0].captured_at - back < 1.0  # the breaker probes within its 0.5 s cap
    # (cloud_cold, cloud_waking: the first overflow, before the cloud answered its wake-up call)
    assert set(agent.stats.drops) <= {"cloud_failing", "cloud_busy", "expired_in_queue", "cloud_too_slow",
                                      "cloud_cold", "cloud_waking"}


def test_model_mismatch_refuses_offload_loudly(caplog):
    cloud, sink = FakeCloud(mismatch=True), ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=2), detector=SlowDetector(0.02), cloud=cloud,
                  sinks=[sink])
    with agent:
        feed(agent, 60, fps=100)
    check_accounting(agent, sink, 60)
    assert agent.stats.outcomes[Outcome.CLOUD] == 0
    assert agent.health()["cloud"] == CloudState.DISABLED.value
    assert "OFFLOAD REFUSED" in caplog.text


def test_cold_cloud_nothing_blocks_while_waking():
    cloud, sink = FakeCloud(wake_s=10.0), ListSink()  # longer than the run: stays waking
    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=3, wake_timeout_s=20), detector=SlowDetector(0.02),
                  cloud=cloud, sinks=[sink])
    start = time.monotonic()
    agent.start()
    feed(agent, 60, fps=100)
    assert time.monotonic() - start < 1.5  # admission never waited on the cloud
    stats = agent.close()
    check_accounting(agent, sink, 60)
    assert stats.outcomes[Outcome.CLOUD] == 0 and stats.outcomes[Outcome.LOCAL] > 0
    assert set(stats.drops) <= {"cloud_waking", "cloud_cold", "expired_in_queue"} and stats.drops


def test_a_slow_cloud_answer_leaves_late_at_the_deadline_not_after_it():
    cloud, sink = FakeCloud(rtt_s=0.25), ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=100, mode="cloud"), detector=SlowDetector(), cloud=cloud,
                  sinks=[sink], cloud_warm=True)
    with agent:
        agent.submit(IMG)
        time.sleep(0.4)  # the answer arrives after the frame left
    (r,) = sink.results
    assert r.outcome is Outcome.LATE and r.route is Route.CLOUD and r.reason == "deadline"
    assert sink.received_at[0] - r.deadline < 0.05  # released at its deadline, not held for the answer
    assert agent.stats.late_answers[Route.CLOUD] == 1


def test_a_result_handed_to_the_sinks_after_its_deadline_is_reported_late():
    offset = [0.0]
    sink = ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=500), detector=SlowDetector(0.001), sinks=[sink],
                  clock=lambda: time.monotonic() + offset[0])
    handle = agent.core.handle

    def descheduled_after_a_release(event):
        actions = handle(event)
        if any(isinstance(a, Release) for a in actions):
            offset[0] += 1.0  # the releasing thread loses the CPU for a second before the sinks get the result
        return actions

    agent.core.handle = descheduled_after_a_release
    with agent:
        agent.submit(IMG)
    (r,) = sink.results
    assert r.outcome is Outcome.LATE and r.reason == "released_late" and r.route is Route.LOCAL
    assert agent.stats.outcomes[Outcome.LATE] == 1 and agent.stats.dishonest == 0


def test_every_time_the_runner_measures_is_on_its_own_clock():
    """A local run's time feeds the same estimates the deadlines are compared with: the injected
    clock's, not another one (here a clock running twice as fast as the wall)."""
    sink = ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=5000), detector=SlowDetector(0.05), sinks=[sink],
                  clock=lambda: 2 * time.monotonic())
    with agent:
        agent.submit(IMG)
    (r,) = sink.results
    took = agent.core.local.estimate(0.5, agent.clock())
    assert took >= 0.1 - 1e-3  # 50 ms of sleep at least: 100 ms or more on the agent's clock
    assert r.latency_s >= took


def test_local_detector_built_in_the_background_cloud_serves_meanwhile():
    cloud, sink = FakeCloud(rtt_s=0.02), ListSink()
    loaded = threading.Event()

    def load():
        loaded.wait(5)
        return SlowDetector(0.005)

    agent = Agent(AgentConfig(latency_budget_ms=300, queue_budget=4), load_detector=load, cloud=cloud, sinks=[sink])
    with agent:
        feed(agent, 30, fps=60)  # the engine is still "building"
        assert agent.health()["local"] == "warming"
        loaded.set()
        time.sleep(0.2)
        feed(agent, 30, fps=60)
    check_accounting(agent, sink, 60)
    first, second = sink.results[:30], sink.results[30:]
    assert not any(r.route is Route.LOCAL for r in first) and any(r.outcome is Outcome.CLOUD for r in first)
    assert any(r.outcome is Outcome.LOCAL for r in second)


def test_a_local_backend_that_fails_to_load_leaves_the_cloud_serving(caplog):
    cloud, sink = FakeCloud(rtt_s=0.02), ListSink()

    def load():
        raise RuntimeError("engine build failed: out of memory")

    agent = Agent(AgentConfig(latency_budget_ms=300), load_detector=load, cloud=cloud, sinks=[sink])
    with agent:
        time.sleep(0.1)
        feed(agent, 20, fps=50)
    check_accounting(agent, sink, 20)
    assert agent.stats.outcomes[Outcome.CLOUD] > 0 and "engine build failed" in caplog.text


def test_shutdown_accounts_for_in_flight_frames():
    sink = ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=5000, queue_budget=50), detector=SlowDetector(0.05),
                  sinks=[sink]).start()
    for _ in range(20):
        agent.submit(IMG)
    stats = agent.close(drain_timeout_s=0.3)  # not enough time for all of them
    assert stats.frames == 20 and sum(stats.outcomes.values()) == 20
    assert stats.drops.get("shutdown", 0) > 0
    assert agent.submit(IMG) == 20  # after close: accounted as dropped[shutdown]


def test_local_errors_are_dropped_with_reason():
    def broken(img):
        raise RuntimeError("boom")

    agent = Agent(AgentConfig(), detector=broken)
    with agent:
        agent.submit(IMG)
    assert agent.stats.drops == {"local_error": 1}


def test_needs_exactly_one_detector():
    from yolo_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        Agent(AgentConfig())


def test_local_workers_can_be_pinned_to_cores():
    import os

    from yolo_edge.errors import ConfigError

    seen = []

    def detector(img):
        seen.append(os.sched_getaffinity(0))
        return SlowDetector(0.0)(img)

    agent = Agent(AgentConfig(local_cpus=[0]), detector=detector)
    with agent:
        agent.submit(IMG)
    assert seen == [{0}] and os.sched_getaffinity(0) != {0} or os.cpu_count() == 1  # only the worker thread
    with pytest.raises(ConfigError, match="local_cpus"):
        AgentConfig(local_cpus=["a"])


class SpentBudgetCloud(FakeCloud):
    """A client that can report its uploads, and has no budget left to upload any frame with."""

    upload_encodings = True

    def detect_frames(self, images, budgets_s=None, jpeg_qualities=None, on_uploaded=None, on_not_sent=None,
                      on_encoded=None):
        from yolo_edge.remote.wire import FrameResult, FrameStatus, ModelRef

        for i in range(len(images)):
            on_not_sent(i)
        return [FrameResult(status=FrameStatus.EXPIRED, model=ModelRef("fake", "aaaa"), error="not uploaded")
                for _ in images]


def test_frames_the_client_did_not_upload_are_reported_as_such_not_as_the_endpoints():
    sink = ListSink()
    agent = Agent(AgentConfig(latency_budget_ms=300, mode="cloud"), detector=SlowDetector(), cloud=SpentBudgetCloud(),
                  sinks=[sink], cloud_warm=True)
    with agent:
        agent.submit(IMG)
    (r,) = sink.results
    assert (r.outcome, r.reason) == (Outcome.DROPPED, "uplink_too_slow")
    assert agent.core.counters[("uplink", "not_sent_requests")] == 1


class SizedCloud(FakeCloud):
    """A client that reports each frame's encoded size before its upload and when it has left."""

    upload_encodings = True
    told = []

    def detect_frames(self, images, budgets_s=None, jpeg_qualities=None, on_uploaded=None, on_not_sent=None,
                      on_encoded=None):
        sizes = [12_345] * len(images)
        on_encoded(sizes)
        self.told.append(("encoded", len(images)))
        on_uploaded(sizes, 0.001)
        return super().detect_frames(images, budgets_s=budgets_s)


def test_the_agent_tells_the_core_each_frames_encoded_size_before_its_upload():
    agent = Agent(AgentConfig(latency_budget_ms=500, mode="cloud"), detector=SlowDetector(), cloud=SizedCloud(0.005),
                  cloud_warm=True)
    with agent:
        for _ in range(3):
            agent.submit(IMG)
    assert SizedCloud.told and agent.core.link.uploads == len(SizedCloud.told)
    assert agent.core.link.sent_bytes == 12_345 * sum(n for _, n in SizedCloud.told)
    assert set(agent.core.sizes.measured().values()) == {12_345}
