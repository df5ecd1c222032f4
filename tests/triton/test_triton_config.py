"""Exported ``config.pbtxt`` files against Triton's own schema, field by field.

Triton's ``model_config.proto`` ships compiled in tritonclient (``tritonclient.grpc.
model_config_pb2``); tritonclient pins protobuf<7, so the parse runs in .venv-triton:
protobuf's ``text_format.Parse`` rejects any field, enum value or type the schema lacks,
and the parsed message comes back as JSON (every field, defaults included).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from triton_server import REPO, find_triton

from yolo_edge.errors import BackendError, ConfigError
from yolo_edge.triton.config import DynamicBatching, TensorSpec, TritonModelConfig, render_config
from yolo_edge.triton.export import export_triton

pytestmark = pytest.mark.integration  # a real Triton server

_PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = []
for path in sys.argv[1:]:
    cfg = text_format.Parse(open(path).read(), model_config_pb2.ModelConfig())
    out.append(json_format.MessageToDict(cfg, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True))
print(json.dumps(out))
"""


def parse_with_triton_schema(*paths: Path) -> list[dict]:
    proc = subprocess.run([str(find_triton().python), "-c", _PARSE, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode:
        raise AssertionError(f"Triton's ModelConfig schema refused the config:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _fake_trt():
    """The TensorRT 10 API fake of tests/backends (builds a JSON 'plan' describing what was asked)."""
    spec = importlib.util.spec_from_file_location("_trt_fakes", REPO / "tests" / "backends" / "test_tensorrt_backend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_fake_trt()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, default_model_path, fall_model_path):
    repo = tmp_path_factory.mktemp("repo")
    return {
        "yolo": export_triton(None, repo, name="yolo"),
        "fall": export_triton("yolov8s-fall", repo, name="fall", max_batch=16, preferred_batch_sizes=(4, 8, 16),
                              max_queue_delay_us=500, instances=2),
        "python": export_triton(None, repo, name="yolo_py", platform="python", input_dtype="fp16"),
        "trt": export_triton("yolov8s-fall", repo, name="fall_trt", platform="tensorrt", trt=_fake_trt()),
    }


@pytest.fixture(scope="module")
def parsed(exports) -> dict[str, dict]:
    return dict(zip(exports, parse_with_triton_schema(*(e.config_path for e in exports.values()))))


def _dims(values) -> list[int]:
    return [int(v) for v in values]  # int64 fields come back as JSON strings


def test_onnxruntime_config_field_by_field(parsed, exports, default_detector):
    cfg = parsed["yolo"]
    assert cfg["name"] == "yolo" and cfg["platform"] == "onnxruntime_onnx" and cfg["backend"] == ""
    assert cfg["max_batch_size"] == 8
    (inp,) = cfg["input"]
    assert (inp["name"], inp["data_type"], _dims(inp["dims"])) == ("images", "TYPE_FP32", [3, 416, 416])
    (out,) = cfg["output"]
    assert (out["name"], out["data_type"], _dims(out["dims"])) == ("output0", "TYPE_FP32", [2535, 85])
    (group,) = cfg["instance_group"]
    assert group["kind"] == "KIND_GPU" and group["count"] == 1
    batching = cfg["dynamic_batching"]
    assert batching["preferred_batch_size"] == [4, 8]
    assert int(batching["max_queue_delay_microseconds"]) == 2000 and batching["preserve_ordering"] is True
    policy = batching["default_queue_policy"]
    assert policy["timeout_action"] == "REJECT" and policy["allow_timeout_override"] is True
    assert int(policy["default_timeout_microseconds"]) == 60_000_000  # non-zero, or Triton ignores overrides
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    assert params["sha256"] == params["served_sha256"] == default_detector.info.sha256 == exports["yolo"].sha256
    meta = ast.literal_eval(params["metadata"])  # how Ultralytics' Triton client reads it
    assert meta["names"] == default_detector.info.names and meta["imgsz"] == [416, 416] and meta["stride"] == 32
    assert meta["sha256"] == default_detector.info.sha256 and meta["output_format"] == "anchor_based"


def test_options_reach_the_config(parsed, exports, fall_detector):
    cfg = parsed["fall"]
    assert cfg["max_batch_size"] == 16 and cfg["instance_group"][0]["count"] == 2
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [4, 8, 16]
    assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 500
    assert _dims(cfg["input"][0]["dims"]) == [3, 640, 640] and _dims(cfg["output"][0]["dims"]) == [6, 8400]
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    assert params["sha256"] == fall_detector.info.sha256
    assert params["served_sha256"] == exports["fall"].served_sha256 != params["sha256"]  # batch axis made dynamic


def test_python_platform_config(parsed, exports):
    cfg = parsed["python"]
    assert cfg["backend"] == "python" and cfg["platform"] == ""
    assert cfg["input"][0]["data_type"] == "TYPE_FP16" and cfg["output"][0]["data_type"] == "TYPE_FP32"
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    files = sorted(p.name for p in exports["python"].model_file.parent.iterdir())
    assert files == ["model.onnx", "model.py"]


def test_tensorrt_platform_builds_a_plan_with_a_batch_profile(parsed, exports):
    cfg = parsed["trt"]
    assert cfg["platform"] == "tensorrt_plan" and cfg["instance_group"][0]["kind"] == "KIND_GPU"
    plan = json.loads(exports["trt"].model_file.read_bytes())  # the fake's plan says what the builder was asked
    assert plan["flags"] == ["FP16"]
    assert plan["profiles"] == [{"images": [[1, 3, 640, 640], [4, 3, 640, 640], [8, 3, 640, 640]]}]
    assert sorted(p.name for p in exports["trt"].model_file.parent.iterdir()) == ["model.plan"]
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    assert params["precision"] == "fp16" and params["served_sha256"] == exports["trt"].served_sha256


def test_without_tensorrt_the_tensorrt_export_says_so(tmp_path, monkeypatch, default_model_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this machine
    with pytest.raises(BackendError, match="TensorRT is not installed.*--platform onnxruntime"):
        export_triton(None, tmp_path, platform="tensorrt")
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_rendered_text_escapes_what_protobuf_needs(tmp_path):
    cfg = TritonModelConfig(
        name="m", platform="onnxruntime_onnx", max_batch_size=4, input=TensorSpec("in", "FP16", (3, 32, 32)),
        outputs=(TensorSpec("a", "FP32", (6, -1)), TensorSpec("b", "FP32", (1,))), instance_kind="KIND_CPU",
        dynamic_batching=DynamicBatching(preferred_batch_size=(2, 4)),
        parameters={"note": 'quote " backslash \\ tab \t accent é'},
    )
    path = tmp_path / "config.pbtxt"
    path.write_text(render_config(cfg))
    (parsed,) = parse_with_triton_schema(path)
    assert [o["name"] for o in parsed["output"]] == ["a", "b"] and _dims(parsed["output"][0]["dims"]) == [6, -1]
    assert parsed["parameters"]["note"]["string_value"] == 'quote " backslash \\ tab \t accent é'


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_batch_size=2), "preferred batch sizes"),
    (dict(dynamic_batching=DynamicBatching(default_timeout_microseconds=0)), "ignores every request's own timeout"),
    (dict(platform="onnx"), "platform must be one of"),
    (dict(instance_kind="KIND_TPU"), "instance_group"),
])
def test_config_refuses_what_triton_would_misread(kwargs, match):
    base = dict(name="m", platform="onnxruntime_onnx", max_batch_size=8, input=TensorSpec("in", "FP32", (3, 8, 8)),
                outputs=(TensorSpec("out", "FP32", (6,)),))
    with pytest.raises(ConfigError, match=match):
        TritonModelConfig(**{**base, **kwargs})
