"""Backend selection: the auto order, loud fallbacks, explicit choices that never fall back."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest

from yolo_edge.backends import select
from yolo_edge.backends.providers import CPU_EP, CUDA_EP, TRT_EP, check_fallback
from yolo_edge.backends.select import GpuEnvironment, describe_backend, select_backend
from yolo_edge.errors import BackendError, ConfigError

JETSON = GpuEnvironment(tensorrt=True, cuda_devices=1, ort_providers=(CPU_EP,))
GPU_ORT = GpuEnvironment(tensorrt=False, cuda_devices=0, ort_providers=(TRT_EP, CUDA_EP, CPU_EP))
CPU_ONLY = GpuEnvironment(tensorrt=False, cuda_devices=0, ort_providers=(CPU_EP,))


class FakeBackend:
    def __init__(self, name, providers, max_batch=8):
        self.name, self._providers, self.max_batch, self.input_shape = name, tuple(providers), max_batch, (None, 3, 16, 16)

    @property
    def providers(self):
        return self._providers

    def run(self, batch):
        return [batch]

    def close(self):
        pass


@pytest.fixture
def calls(monkeypatch):
    """Replace the factories; record what was asked of each."""
    log = []

    def trt(path, opts):
        log.append(("tensorrt", dict(opts)))
        if opts.get("fail"):
            raise BackendError("engine build failed: out of memory")
        return FakeBackend("tensorrt", ["TensorRT", "cuda:0"])

    def ort(path, providers, threads):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        log.append(("onnxruntime", names))
        # What a machine whose CUDA libraries load would activate; tests override to fail.
        active = [n for n in names if n in log_active.get("ok", names)] or [CPU_EP]
        check_fallback(providers, active)  # as OnnxRuntimeBackend does on every session
        return FakeBackend("onnxruntime", active)

    log_active: dict = {}
    monkeypatch.setitem(select._FACTORIES, "tensorrt", trt)
    monkeypatch.setitem(select._FACTORIES, "onnxruntime", ort)
    monkeypatch.setattr(select, "_OPTION_NAMES", select._OPTION_NAMES | {"fail"})
    return types.SimpleNamespace(log=log, active=log_active)


def test_auto_prefers_tensorrt_on_a_jetson(calls, tiny_onnx, caplog):
    with caplog.at_level(logging.INFO):
        be = select_backend(tiny_onnx, env=JETSON, precision="fp16", max_batch=4)
    assert be.name == "tensorrt" and calls.log == [("tensorrt", {"precision": "fp16", "max_batch": 4})]
    assert be.selected.startswith("auto: tensorrt") and "auto: tensorrt" in caplog.text
    assert describe_backend(be)["selected"] == be.selected


def test_auto_tensorrt_failure_falls_back_loudly(calls, tiny_onnx, caplog):
    be = select_backend(tiny_onnx, env=JETSON, fail=True)
    assert be.name == "onnxruntime" and be.providers == (CPU_EP,)
    assert "TensorRT is installed but failed" in caplog.text and "out of memory" in caplog.text
    assert "TensorRT failed" in be.selected


def test_auto_uses_ort_cuda_when_it_really_activates(calls, tiny_onnx):
    be = select_backend(tiny_onnx, env=GPU_ORT)
    assert calls.log == [("onnxruntime", [CUDA_EP, CPU_EP])]  # auto asks CUDA, not the TensorRT EP
    assert be.providers == (CUDA_EP, CPU_EP) and CUDA_EP in be.selected


def test_auto_ort_cuda_silently_on_cpu_is_caught(calls, tiny_onnx, caplog):
    calls.active["ok"] = [CPU_EP]  # onnxruntime-gpu without loadable CUDA libraries
    with caplog.at_level(logging.WARNING):
        be = select_backend(tiny_onnx, env=GPU_ORT)
    assert be.providers == (CPU_EP,)
    assert "fell back" in caplog.text and CUDA_EP in caplog.text
    assert "failed to activate" in be.selected
    assert len(calls.log) == 1  # the CPU session is kept, not loaded a second time


def test_auto_on_cpu_only(calls, tiny_onnx):
    be = select_backend(tiny_onnx, env=CPU_ONLY)
    assert calls.log == [("onnxruntime", [CPU_EP])] and "no TensorRT" in be.selected


def test_explicit_providers_mean_onnxruntime(calls, tiny_onnx):
    be = select_backend(tiny_onnx, env=JETSON, providers=[CPU_EP])
    assert be.name == "onnxruntime" and calls.log == [("onnxruntime", [CPU_EP])]


def test_explicit_tensorrt_never_falls_back(calls, tiny_onnx):
    with pytest.raises(BackendError, match="out of memory"):
        select_backend(tiny_onnx, backend="tensorrt", env=CPU_ONLY, fail=True)
    assert [c[0] for c in calls.log] == ["tensorrt"]


def test_explicit_onnxruntime_builds_provider_options(calls, tiny_onnx, tmp_path):
    select_backend(tiny_onnx, backend="onnxruntime", env=GPU_ORT, cache_dir=tmp_path)
    assert calls.log == [("onnxruntime", [TRT_EP, CUDA_EP, CPU_EP])]


@pytest.mark.parametrize("kwargs", [{"backend": "openvino"}, {"backend": "auto", "precison": "fp16"}])
def test_bad_names_raise_config_error(tiny_onnx, kwargs):
    with pytest.raises(ConfigError):
        select_backend(tiny_onnx, env=CPU_ONLY, **kwargs)


# -- real backends on this machine ------------------------------------------------------


def test_real_auto_on_this_machine_runs(tiny_onnx):
    be = select_backend(tiny_onnx)  # real probe, real onnxruntime
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    assert be.run(x)[0].shape == (2, 512, 7)
    info = describe_backend(be)
    assert info["name"] in ("tensorrt", "onnxruntime") and info["providers"] and info["selected"].startswith("auto:")


def test_real_ort_fallback_detected(tiny_onnx, caplog):
    """A CPU onnxruntime told it has CUDA (as onnxruntime-gpu without libraries claims)."""
    import onnxruntime as ort

    if CUDA_EP in ort.get_available_providers():
        pytest.skip("this onnxruntime really has CUDA")
    fake_claim = GpuEnvironment(tensorrt=False, cuda_devices=0, ort_providers=(CUDA_EP, CPU_EP))
    be = select_backend(tiny_onnx, env=fake_claim)
    assert be.name == "onnxruntime" and list(be.providers) == [CPU_EP]
    assert "fell back" in caplog.text and "failed to activate" in be.selected


def test_real_torch_backend_by_name(tiny_onnx):
    pytest.importorskip("torch")
    be = select_backend(tiny_onnx, backend="torch", env=CPU_ONLY, device="cpu")
    assert be.name == "torch" and be.providers == ("cpu",)


def test_real_tensorrt_by_name_without_tensorrt_says_how_to_fix(tiny_onnx):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        select_backend(tiny_onnx, backend="tensorrt")
