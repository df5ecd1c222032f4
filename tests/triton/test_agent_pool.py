"""The edge agent's endpoint pool with a real Triton server in it (Open Inference Protocol).

The agent's cloud is a pool of two endpoints: the Triton server of this module (serving the
default model through the Python backend, FP16 on the wire) and a yolo-edge service that is
down the whole run. The local detector is the real one, padded to a slower device, and the
camera runs at twice its rate, so the overflow goes to Triton. Every frame must end once, in
order; the dead endpoint must be taken out and probed, not waited for; and a photo answered
by Triton must carry the same detections as the same photo answered locally.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from agent_fakes import ListSink, SlowerEdge
from matching import assert_same_detections

from edge_agent.cloudserve import free_port
from edge_agent.config import AgentConfig
from edge_agent.core.frames import Outcome, Route
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.oip import OipClient

pytestmark = pytest.mark.slow


def test_agent_offloads_to_triton_in_its_pool_and_answers_equal_local_ones(triton, default_detector,
                                                                             sample_photos: list[Path]):
    photos = [cv2.resize(cv2.imread(str(p)), (640, 360)) for p in sample_photos]
    edge = SlowerEdge(default_detector, service_s=0.25)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = AgentConfig(latency_budget_ms=1500, queue_budget=4, max_inflight=2, cloud=[triton.oip_url("yolo"), dead])
    clients = [OipClient(triton.oip_url("yolo"), timeout=cfg.timeout_s, max_retries=0),
               CloudClient(dead, timeout=cfg.timeout_s, max_retries=0, expected_sha256=default_detector.info.sha256)]
    sink = ListSink()
    agent = Agent(cfg, detector=edge, cloud=clients, sinks=[sink])
    fps, n = 8.0, 64
    stats = agent.run(replay((photos[i % len(photos)] for i in range(n)), fps=fps))
    for c in clients:
        c.close()

    assert [r.seq for r in sink.results] == list(range(n)) and stats.frames == n
    cloud = [r for r in sink.results if r.outcome is Outcome.CLOUD]
    assert len(cloud) >= 0.2 * n and all(r.endpoint == cfg.cloud[0].name for r in cloud), stats.as_dict()
    assert stats.within_share >= 0.8, stats.as_dict()
    snap = {e["name"]: e for e in agent.health()["endpoints"]}
    assert snap[cfg.cloud[1].name]["answered"] == 0
    # the same photo, answered by Triton (decoded here with detect()'s own code) and locally
    for k, photo in enumerate(photos):
        local = default_detector(photo)
        for r in (r for r in cloud if r.seq % len(photos) == k):
            assert_same_detections(r.detections, local)
    assert any(r.route is Route.LOCAL for r in sink.results)
