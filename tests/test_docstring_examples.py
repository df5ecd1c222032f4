"""The runnable examples in public docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "yolo_edge.types", "yolo_edge.image", "yolo_edge.preprocess", "yolo_edge.postprocess", "yolo_edge.detector",
    "yolo_edge.api", "yolo_edge.image_header", "yolo_edge.backends.select", "yolo_edge.backends.providers",
    "yolo_edge.triton.config", "yolo_edge.coco", "yolo_edge.models.index", "yolo_edge.samples", "yolo_edge.inputs",
    "yolo_edge.stream", "yolo_edge.models.darknet_cfg",
    "yolo_edge.remote.wire", "yolo_edge.remote.health", "yolo_edge.remote.oip_wire", "yolo_edge.remote.endpoint",
    "yolo_edge.remote.pool", "yolo_edge.remote.pool_members", "yolo_edge.remote.upload_timing",
    "yolo_edge.remote.balancer", "yolo_edge.remote.endpoint_url", "yolo_edge.remote.transport",
    "yolo_edge.remote.cloud_upload", "yolo_edge.remote.values", "yolo_edge.remote.failover",
    "edge_agent", "edge_agent.metrics", "edge_agent.runner", "edge_agent.protocols", "edge_agent.sinks",
    "edge_agent.spool", "edge_agent.webhook", "edge_agent.baseline", "edge_agent.reach", "edge_agent.progress",
    "edge_agent.demo", "edge_agent.sinkspec", "edge_agent.cloudcall",
    "edge_agent.core.policy", "edge_agent.core", "edge_agent.core.stats", "edge_agent.core.frames",
    "edge_agent.core.pool", "edge_agent.core.events", "edge_agent.core.estimators", "edge_agent.core.delivery",
    "edge_agent.core.link", "edge_agent.core.window", "edge_agent.core.lane", "edge_agent.core.hedge",
    "edge_agent.core.dispatch", "edge_agent.core.config", "edge_agent.core.device",
    "edge_agent.sim", "edge_agent.sim.oracle", "edge_agent.sim.traces", "edge_agent.sim.livesim",
    "edge_agent.sim.uplink", "edge_agent.sim.simulator",
    "bentos.model_home",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
