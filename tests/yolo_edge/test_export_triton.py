"""``export_triton`` / ``yolo-edge export-triton``: the repository layout and the batch-dynamic ONNX.

The config's fields are checked against Triton's own schema in tests/triton/test_triton_config.py,
and a real Triton server loads these exports in tests/triton/test_triton_server.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolo_edge import Detector
from yolo_edge.backends.onnx_info import read_onnx_info
from yolo_edge.cli import main
from yolo_edge.errors import ConfigError, UnsupportedModelError
from yolo_edge.models.fetch import sha256_file
from yolo_edge.triton.export import export_triton
from yolo_edge.triton.onnx_batch import check_same_outputs, make_batch_dynamic

pytestmark = pytest.mark.integration  # a real Triton server


@pytest.fixture(scope="module")
def fall_export(tmp_path_factory, fall_model_path):
    return export_triton("yolov8s-fall", tmp_path_factory.mktemp("repo"))


def test_static_batch_model_is_served_batch_dynamic_with_identical_detections(fall_export, fall_detector,
                                                                             sample_photos):
    served = fall_export.model_dir / "1" / "model.onnx"
    assert read_onnx_info(fall_detector.info.path).input_shape[0] == 1  # the pinned file: batch 1 only
    info = read_onnx_info(served)
    assert info.input_shape == (None, 3, 640, 640) and info.output_shapes == [["batch", 6, 8400]]
    assert fall_export.served_sha256 == sha256_file(served) != fall_export.sha256 == fall_detector.info.sha256
    frames = [cv2.imread(str(p)) for p in sample_photos]
    frames = [frames[i % 2] if i < 4 else cv2.flip(frames[i % 2], 1) for i in range(8)]
    with Detector(served, backend="onnxruntime") as dynamic:
        assert dynamic.backend.max_batch > 1 and dynamic.info.dynamic_batch
        together, _ = dynamic.predict(frames)  # one batch of 8
    one_by_one = [fall_detector(f) for f in frames]
    assert together == one_by_one and sum(len(d) for d in together) > 0


def test_dynamic_model_is_copied_as_it_is(tmp_path, default_model_path):
    out = export_triton(None, tmp_path)
    assert out.model_dir == tmp_path / "yolov3-tiny-coco" and out.model_file.name == "model.onnx"
    assert out.served_sha256 == out.sha256 == sha256_file(out.model_file) == sha256_file(default_model_path)
    assert sorted(p.name for p in out.model_dir.rglob("*")) == ["1", "config.pbtxt", "model.onnx"]


def test_existing_model_is_replaced_only_when_asked(tmp_path, default_model_path):
    export_triton(None, tmp_path, name="m")
    with pytest.raises(ConfigError, match="--force"):
        export_triton(None, tmp_path, name="m", platform="python")
    assert not (tmp_path / "m" / "1" / "model.py").exists()
    export_triton(None, tmp_path, name="m", platform="python", force=True)
    assert (tmp_path / "m" / "1" / "model.py").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging directory left behind


@pytest.mark.parametrize("kwargs, match", [
    (dict(platform="openvino"), "platform must be one of"),
    (dict(platform="tensorrt", device="cpu"), "GPU only"),
    (dict(platform="python", device="gpu"), "on the CPU"),
    (dict(input_dtype="fp16"), "--platform python"),
    (dict(input_dtype="int8", platform="python"), "fp32' or 'fp16"),
    (dict(name="../escape"), "directory"),
    (dict(max_batch=0), "max_batch"),
    (dict(preferred_batch_sizes=(4, 16)), "outside 1..max_batch_size=8"),
])
def test_bad_options_are_config_errors(tmp_path, default_model_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        export_triton(None, tmp_path / "repo", **kwargs)
    assert not (tmp_path / "repo").exists() or not any(p.name != "." for p in (tmp_path / "repo").iterdir())


def test_cli(tmp_path, capsys, default_model_path):
    assert main(["export-triton", "yolov3-tiny-coco", "--out", str(tmp_path), "--name", "yolo", "--platform",
                 "python", "--input-dtype", "fp16", "--max-batch", "4", "--preferred-batch", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "oip+http://HOST:8000/v2/models/yolo" in out
    text = (tmp_path / "yolo" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in text and "preferred_batch_size: [ 2, 4 ]" in text and "TYPE_FP16" in text
    assert main(["export-triton", "yolov3-tiny-coco", "--out", str(tmp_path), "--name", "yolo"]) == 2
    assert "already exists" in capsys.readouterr().err


def _static_graph(path: Path, *, allowzero: int = 0) -> Path:
    """x [1, 3, 4, 4] -> Reshape to [1, 48] -> Tile by [1, 2]; the Reshape's shape constant also feeds a Tile."""
    shape = numpy_helper.from_array(np.array([1, 48], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], allowzero=allowzero),
             helper.make_node("Relu", ["r"], ["y"]),
             helper.make_node("Tile", ["y", "shape"], ["z"])]
    graph = helper.make_graph(nodes, "static", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2304])], initializer=[shape])
    graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 48]))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


def test_a_shape_constant_shared_with_another_op_is_copied(tmp_path):
    src = _static_graph(tmp_path / "static.onnx")
    assert make_batch_dynamic(src, tmp_path / "dyn.onnx") == 1
    model = onnx.load(tmp_path / "dyn.onnx")
    consts = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer}
    assert consts == {"shape": [1, 48], "shape__dynamic_batch": [0, 48]}  # the Tile keeps its repeats
    assert not model.graph.value_info
    assert check_same_outputs(src, tmp_path / "dyn.onnx", batch=3) == 0.0


def test_what_cannot_be_made_batch_dynamic_is_said(tmp_path, default_model_path):
    with pytest.raises(UnsupportedModelError, match="already dynamic"):
        make_batch_dynamic(default_model_path, tmp_path / "x.onnx")
    with pytest.raises(UnsupportedModelError, match="allowzero"):
        make_batch_dynamic(_static_graph(tmp_path / "az.onnx", allowzero=1), tmp_path / "y.onnx")
