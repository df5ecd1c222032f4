"""ORT provider lists and loud fallback detection (pure, plus one real CPU-only session)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from yolo_edge.backends.providers import CPU_EP, CUDA_EP, TRT_EP, check_fallback, ort_providers
from yolo_edge.errors import ConfigError

GPU_BUILD = [TRT_EP, CUDA_EP, CPU_EP]  # what onnxruntime-gpu reports, libraries or not
CPU_BUILD = [CPU_EP]


def names(specs):
    return [s[0] if isinstance(s, tuple) else s for s in specs]


def test_default_order_on_gpu_build_with_cache(tmp_path):
    specs = ort_providers(GPU_BUILD, prefer=None, cache_dir=tmp_path, fp16=True, device_id=1)
    assert names(specs) == [TRT_EP, CUDA_EP, CPU_EP]
    trt_opts = specs[0][1]
    assert trt_opts["device_id"] == 1 and trt_opts["trt_fp16_enable"] is True
    assert trt_opts["trt_engine_cache_enable"] is True and trt_opts["trt_timing_cache_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == str(tmp_path / "ort-trt")
    assert specs[1][1] == {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC"}


def test_no_cache_dir_means_no_cache_options():
    trt_opts = ort_providers(GPU_BUILD, prefer=["trt"], cache_dir=None, fp16=False, device_id=0)[0][1]
    assert trt_opts == {"device_id": 0, "trt_fp16_enable": False}


def test_cpu_build_gives_cpu_only_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert ort_providers(CPU_BUILD, prefer=None, cache_dir=None, fp16=False, device_id=0) == [CPU_EP]
    assert caplog.text == ""


def test_explicit_wish_missing_warns(caplog):
    specs = ort_providers(CPU_BUILD, prefer=["cuda", "cpu"], cache_dir=None, fp16=False, device_id=0)
    assert specs == [CPU_EP]
    assert "CUDAExecutionProvider requested" in caplog.text


def test_prefer_order_aliases_and_cpu_last():
    specs = ort_providers(GPU_BUILD, prefer=["cpu", "cuda", "CUDAExecutionProvider"], cache_dir=None, fp16=False, device_id=0)
    assert names(specs) == [CUDA_EP, CPU_EP]


@pytest.mark.parametrize("bad", [{"prefer": ["rocm-ish"]}, {"device_id": -1}])
def test_bad_wishes_raise_config_error(bad):
    kwargs = dict(prefer=None, cache_dir=None, fp16=False, device_id=0) | bad
    with pytest.raises(ConfigError):
        ort_providers(GPU_BUILD, **kwargs)


def test_check_fallback_pure(caplog):
    requested = [(TRT_EP, {}), (CUDA_EP, {}), CPU_EP]
    assert check_fallback(requested, [TRT_EP, CUDA_EP, CPU_EP]) == []
    assert caplog.text == ""
    assert check_fallback(requested, [CUDA_EP, CPU_EP]) == [TRT_EP]
    assert check_fallback(requested, [CPU_EP]) == [TRT_EP, CUDA_EP]
    assert "fell back" in caplog.text and "CUDAExecutionProvider" in caplog.text


def test_real_cpu_onnxruntime_falls_back_and_we_notice(tmp_path, caplog):
    """A CPU build given a CUDA request runs on CPU: get_providers() tells, we warn."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    path = Path(tmp_path) / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    if CUDA_EP in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback case cannot be provoked here")
    requested = [(CUDA_EP, {"device_id": 0}), CPU_EP]
    sess = ort.InferenceSession(str(path), providers=requested)
    assert sess.run(None, {"x": np.array([[-1.0, 2.0]], np.float32)})[0].tolist() == [[0.0, 2.0]]
    assert check_fallback(requested, sess.get_providers()) == [CUDA_EP]
    assert "fell back" in caplog.text
