"""The agent's own cost by stage (edge_agent.stagetime) and its threads kept off the local core."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from agent_fakes import FakeCloud, ListSink, SlowDetector
from edge_agent.config import AgentConfig
from edge_agent.runner import Agent
from edge_agent.stagetime import StageTimes

IMG = np.zeros((48, 64, 3), np.uint8)
TWO_CORES = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


def test_a_stage_counts_cpu_not_waiting():
    st = StageTimes()
    with st.stage("wait"):
        time.sleep(0.05)
    with st.stage("work"):
        end = time.thread_time() + 0.03
        while time.thread_time() < end:
            pass
    t = st.totals()
    assert t["wait"].wall_s >= 0.05 and t["wait"].cpu_s < 0.02
    assert t["work"].cpu_s >= 0.03 and t["work"].count == 1
    assert st.per_frame(2)["work"]["sections"] == 1 and st.per_frame(2)["work"]["cpu_ms"] >= 15
    st.reset()
    assert st.totals() == {}


def test_the_agent_times_every_stage_it_runs():
    cloud, sink = FakeCloud(rtt_s=0.01), ListSink()
    agent = Agent(AgentConfig(mode="hybrid", latency_budget_ms=500, max_inflight=2), detector=SlowDetector(0.02),
                  cloud=[cloud], cloud_warm=True, sinks=[sink])
    with agent:
        for _ in range(30):
            agent.submit(IMG)
            time.sleep(0.004)
    t = agent.stages.totals()
    assert len(sink.results) == 30
    assert t["inference"].count == sum(1 for r in sink.results if r.route is not None and r.route.value == "local")
    assert t["upload"].count == cloud.requests > 0
    assert t["sinks"].count >= 1 and t["core"].count >= 30  # at least one core event per frame
    assert t["inference"].wall_s >= 0.02 * t["inference"].count  # the detector's own time, measured where it runs


@pytest.mark.skipif(not TWO_CORES, reason="needs 2 cores to keep agent threads off the local worker's core")
def test_cloud_senders_stay_off_the_local_core():
    seen = []

    class Recording(FakeCloud):
        def detect_frames(self, images, budgets_s=None):
            seen.append(os.sched_getaffinity(0))
            return super().detect_frames(images, budgets_s)

    local = min(os.sched_getaffinity(0))
    agent = Agent(AgentConfig(mode="cloud", latency_budget_ms=500, local_cpus=[local]), detector=SlowDetector(0.0),
                  cloud=[Recording(rtt_s=0.005)], cloud_warm=True)
    with agent:
        for _ in range(5):
            agent.submit(IMG)
    assert seen and all(local not in cores for cores in seen)

