"""The runnable examples in public docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "yolo_edge.types", "yolo_edge.image", "yolo_edge.preprocess", "yolo_edge.postprocess",
    "yolo_edge.detector", "yolo_edge.api", "yolo_edge.wire", "yolo_edge.image_header", "yolo_edge.backends.select",
    "yolo_edge.backends.providers",
    "edge_agent", "edge_agent.metrics", "edge_agent.policy", "edge_agent.core", "edge_agent.runner",
    "edge_agent.stats", "edge_agent.frames", "edge_agent.sim", "edge_agent.oracle", "edge_agent.traces",
    "edge_agent.pool", "edge_agent.events", "edge_agent.estimators", "edge_agent.protocols", "edge_agent.livesim",
    "edge_agent.sinks", "edge_agent.delivery", "edge_agent.spool", "edge_agent.webhook", "edge_agent.baseline",
    "edge_agent.reach", "edge_agent.progress", "edge_agent.demo", "edge_agent.sinkspec",
    "yolo_edge.health", "yolo_edge.oip_wire", "yolo_edge.endpoint", "yolo_edge.triton.config",
    "yolo_edge.coco", "yolo_edge.models.index", "yolo_edge.samples", "yolo_edge.inputs", "yolo_edge.stream",
    "yolo_edge.pool", "yolo_edge.pool_members", "yolo_edge.upload_timing", "edge_agent.link", "edge_agent.uplink",
    "edge_agent.window", "edge_agent.lane", "edge_agent.hedge", "edge_agent.dispatch", "edge_agent.core_config", "edge_agent.cloudcall", "bentos.model_home", "yolo_edge.balancer", "yolo_edge.endpoint_url",
    "yolo_edge.transport", "yolo_edge.cloud_upload", "yolo_edge.values", "yolo_edge.failover", "yolo_edge.models.darknet_cfg",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
