"""The runnable examples in public docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "yolo_edge.types", "yolo_edge.image", "yolo_edge.preprocess", "yolo_edge.postprocess",
    "yolo_edge.detector", "yolo_edge.api", "yolo_edge.wire", "yolo_edge.image_header", "yolo_edge.backends.select", "yolo_edge.backends.providers",
    "edge_agent.metrics", "edge_agent.policy",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
