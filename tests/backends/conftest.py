"""Test helpers: tiny synthetic ONNX graphs and the real fetched models (or a skip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def real_model(request: pytest.FixtureRequest, name: str) -> Path:
    """Path to a fetched registry model, from the lead's fixtures where they exist."""
    fixture = {"yolov8s-fall": "fall_model_path", "yolov3-tiny-coco": "default_model_path"}[name]
    try:
        return Path(request.getfixturevalue(fixture))
    except pytest.FixtureLookupError:
        pass
    from yolo_edge.models.registry import model_path

    path = model_path(name)
    if not path.is_file():
        pytest.skip(f"model {name} not fetched ({path}); run `yolo-edge models fetch {name}`")
    return path


def darknet_like_onnx(path: Path, *, dynamic_batch: bool = True, seed: int = 0) -> Path:
    """A small graph with the op set of a Darknet YOLOv3-tiny conversion.

    Conv/LeakyRelu, MaxPool with asymmetric padding (Darknet's size-2 stride-1 pool),
    nearest Resize, Concat, and a YOLO head (Reshape/Transpose/Sigmoid/Exp/Mul/Add).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    b = "batch" if dynamic_batch else 1
    nodes = [
        helper.make_node("Conv", ["x", const("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
                                  const("b1", rng.normal(0, 0.1, 8).astype(np.float32))], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.1),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["p1"], ["p2"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        helper.make_node("Resize", ["p2", "", const("scales", np.array([1, 1, 2, 2], np.float32))], ["up"],
                         mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Concat", ["up", "a1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", const("w2", rng.normal(0, 0.3, (14, 16, 1, 1)).astype(np.float32))], ["head"]),
        # [B, 2*7, H, W] -> [B, 2, 7, H*W] -> [B, 2, H*W, 7]
        helper.make_node("Reshape", ["head", const("shape", np.array([-1 if dynamic_batch else 1, 2, 7, 256], np.int64))], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Slice", ["t", const("s0", np.array([0], np.int64)), const("s2", np.array([2], np.int64)),
                                   const("ax", np.array([3], np.int64))], ["xy"]),
        helper.make_node("Slice", ["t", const("s2b", np.array([2], np.int64)), const("s4", np.array([4], np.int64)),
                                   const("ax2", np.array([3], np.int64))], ["wh"]),
        helper.make_node("Slice", ["t", const("s4b", np.array([4], np.int64)), const("s7", np.array([7], np.int64)),
                                   const("ax3", np.array([3], np.int64))], ["conf"]),
        helper.make_node("Sigmoid", ["xy"], ["sxy"]),
        helper.make_node("Add", ["sxy", const("grid", rng.integers(0, 16, (1, 1, 256, 2)).astype(np.float32))], ["gxy"]),
        helper.make_node("Mul", ["gxy", const("stride", np.array(2.0, np.float32))], ["bxy"]),
        helper.make_node("Exp", ["wh"], ["ewh"]),
        helper.make_node("Mul", ["ewh", const("anchors", np.array([[[[10.0, 14.0]], [[23.0, 27.0]]]], np.float32))], ["bwh"]),
        helper.make_node("Sigmoid", ["conf"], ["sconf"]),
        helper.make_node("Concat", ["bxy", "bwh", "sconf"], ["cat2"], axis=3),
        helper.make_node("Reshape", ["cat2", const("oshape", np.array([-1 if dynamic_batch else 1, 512, 7], np.int64))], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "darknet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, 3, 16, 16])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, 512, 7])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key="names", value="{0: 'a', 1: 'b'}")
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def model_path(request: pytest.FixtureRequest):
    """``model_path("yolov8s-fall")`` -> fetched file, or the test skips saying why."""
    return lambda name: real_model(request, name)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A dynamic-batch Darknet-like graph, 16x16 input (fast everywhere)."""
    return darknet_like_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture
def make_tiny_onnx(tmp_path):
    """Factory: ``make_tiny_onnx(dynamic_batch=False)`` -> a fresh Darknet-like graph."""
    return lambda **kw: darknet_like_onnx(tmp_path / f"tiny-{len(list(tmp_path.iterdir()))}.onnx", **kw)
