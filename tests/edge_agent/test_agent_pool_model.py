"""The agent's pool serves one model, the device's: real HTTP services on 127.0.0.1, one on another model.

A serves the default model and answers slowly; D serves the fall detector, is listed second
with the highest weight and answers at once. Through ``edge-agent run``'s own wiring
(``build_agent``: every client pinned to the agent's model) and through an Agent given
clients of which D's does not check its answers, no frame is answered by D; D shows as
disabled in /healthz, with the reason, and ``OFFLOAD REFUSED`` is logged. The services are
stand-ins (tests/service_standins.py) speaking the real wire to the real CloudClient.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from agent_fakes import ListSink, SlowDetector
from service_standins import StandIn, fixed_detections

from edge_agent.config import AgentConfig
from edge_agent.core.frames import Outcome
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.errors import ConfigError
from yolo_edge.models.registry import DEFAULT_MODEL, MODELS

A_SHA = MODELS[DEFAULT_MODEL].onnx_sha256
D_SHA = MODELS["yolov8s-fall"].onnx_sha256
FRAMES = [np.full((32, 32, 3), i, np.uint8) for i in range(24)]


@pytest.fixture
def a_and_d():
    a = StandIn(name=DEFAULT_MODEL, sha256=A_SHA, delay_s=0.1,
                detections=fixed_detections({0: "person", 5: "bus"}, [0, 0, 0, 0, 5]))
    d = StandIn(name="yolov8s-fall", sha256=D_SHA, delay_s=0.0,
                detections=fixed_detections({0: "Normal", 1: "Fall"}, [0, 0, 0]))
    with a, d:
        yield a, d


def _config(a: StandIn, d: StandIn) -> AgentConfig:
    return AgentConfig(mode="cloud", latency_budget_ms=3000, queue_budget=64, sinks=(), realtime=False,
                       cloud=[a.url, {"url": d.url, "weight": 3}])


def _run(agent: Agent) -> ListSink:
    sink = ListSink()
    agent.sinks.append(sink)
    agent.run(replay(iter(FRAMES), fps=30.0))
    return sink


def _check(agent: Agent, sink: ListSink, a: StandIn, d: StandIn) -> None:
    names = [e.name for e in agent.core.pool.endpoints]
    cloud = [r for r in sink.results if r.outcome is Outcome.CLOUD]
    others = {(r.outcome, r.reason) for r in sink.results if r.outcome is not Outcome.CLOUD}
    # only the first frames may go unanswered, while the pool wakes (its wake takes longer on a busy machine)
    waking = {(Outcome.DROPPED, "cloud_cold"), (Outcome.DROPPED, "cloud_waking")}
    assert len(cloud) >= len(FRAMES) - 6 and others <= waking, others
    assert {r.endpoint for r in cloud} == {names[0]} and {r.meta["model"]["sha256"] for r in cloud} == {A_SHA}
    assert all(list(r.detections.class_id) == [0, 0, 0, 0, 5] for r in cloud)
    endpoints = agent.health()["endpoints"]
    assert [e["state"] for e in endpoints] == ["ready", "disabled"]
    assert "reason" not in endpoints[0] and D_SHA[:12] in endpoints[1]["reason"]
    assert a.frames >= len(cloud)


def test_edge_agent_run_pins_every_endpoint_to_the_agents_model(a_and_d, default_detector, caplog):
    from edge_agent.cli import build_agent

    a, d = a_and_d
    agent, clouds = build_agent(_config(a, d), detector=default_detector)
    assert agent.model_sha256 == A_SHA
    with caplog.at_level(logging.WARNING):
        sink = _run(agent)
    for c in clouds:
        c.close()
    _check(agent, sink, a, d)
    assert d.detect_requests == 0  # checked on its wake, before any frame
    assert "OFFLOAD REFUSED by endpoint " + agent.core.pool.endpoints[1].name in caplog.text


def test_an_answer_from_another_model_is_refused_even_when_its_client_does_not_check(a_and_d, caplog):
    a, d = a_and_d
    clients = [CloudClient(a.url, expected_sha256=A_SHA, max_retries=0, timeout=5),
               CloudClient(d.url, max_retries=0, timeout=5)]  # D's client checks nothing
    agent = Agent(_config(a, d), detector=SlowDetector(), cloud=clients, cloud_warm=True)  # no wake: used at once
    with caplog.at_level(logging.WARNING):
        sink = _run(agent)
    for c in clients:
        c.close()
    _check(agent, sink, a, d)
    assert d.detect_requests >= 1  # it answered first, and its answer was refused
    assert "answered from another model: it serves model 'yolov8s-fall'" in agent.health()["endpoints"][1]["reason"]
    assert "OFFLOAD REFUSED" in caplog.text


def test_clients_pinned_to_two_models_are_refused_and_unpinned_ones_warned_of(a_and_d, caplog):
    a, d = a_and_d
    pinned = [CloudClient(a.url, expected_sha256=A_SHA), CloudClient(d.url, expected_sha256=D_SHA)]
    with pytest.raises(ConfigError, match="pinned to different models.*pin every client"):
        Agent(_config(a, d), detector=SlowDetector(), cloud=pinned)
    unpinned = [CloudClient(a.url), CloudClient(d.url)]
    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        agent = Agent(_config(a, d), detector=SlowDetector(), cloud=unpinned)
    assert agent.model_sha256 is None and "not checked against the device's model" in caplog.text
    for c in pinned + unpinned:
        c.close()
