"""A frame's deadline, from its capture to the service: one value, less one network round trip.

The real agent (its runner, the core, the real CloudClient over real HTTP on 127.0.0.1) sends
frames to a service stand-in that notes when each request arrived (before its body, as the
service's guard stamps it) and the budgets it carried. Each frame's deadline as the service
counts it, arrival + budget, must be its capture deadline less at most the network time the
device sends it net of: never later (the service would answer frames the device has already
given up on), and not earlier by the upload (paid for twice, the service expired frames it
could still answer).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from agent_fakes import ListSink, SlowDetector
from service_standins import StandIn, fixed_detections

from edge_agent.config import AgentConfig
from edge_agent.core.frames import Outcome
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient

pytestmark = pytest.mark.integration  # the real agent and client over HTTP, in real time

SHA = "ab" * 32
#: loopback's round trip and the agent's own hops (queue, sender thread, encoding) on a busy
#: 2-core machine: the service's deadline is at most this much before the capture deadline
SLACK_S = 0.05
#: a request's way from the device to the service over loopback, on a busy machine
TRANSIT_S = 0.01


def test_the_deadline_the_service_counts_is_the_capture_deadline_less_one_round_trip():
    frames = [np.full((64, 64, 3), i, np.uint8) for i in range(12)]
    with StandIn(name="fake", sha256=SHA, detections=fixed_detections({0: "person"}, [0]), delay_s=0.01) as svc:
        client = CloudClient(svc.url, max_retries=0, expected_sha256=SHA, downscale=False)
        assert client.wake(wait_s=10)
        sink = ListSink()
        agent = Agent(AgentConfig(mode="cloud", latency_budget_ms=500, max_batch=1), detector=SlowDetector(),
                      cloud=client, cloud_warm=True, sinks=[sink])
        agent.run(replay(iter(frames), fps=10.0))
        client.close()
    cloud = [r for r in sink.results if r.outcome is Outcome.CLOUD]
    assert len(cloud) == len(frames), [(r.outcome, r.reason) for r in sink.results]
    assert len(svc.arrivals) == len(frames) and all(b is not None and len(b) == 1 for _, b in svc.arrivals)
    # the agent's clock is time.monotonic, as the stand-in's: the two deadlines compare directly
    at_service = sorted(arrived + budgets[0] for arrived, budgets in svc.arrivals)
    at_capture = sorted(r.deadline for r in cloud)
    early = [captured - served for captured, served in zip(at_capture, at_service)]
    # never later than the capture deadline by more than the request's own way there (the first
    # request has no round trip measured to be net of), never earlier by more than the slack
    assert all(-TRANSIT_S <= e <= SLACK_S for e in early), early
    # once a round trip is measured, the budgets are net of it: the service's deadline comes first
    assert statistics.median(early[1:]) >= 0.0, early
