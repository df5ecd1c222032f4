"""TorchBackend (ONNX graph through onnx2torch) against onnxruntime, on CPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from yolo_edge.backends.base import Backend
from yolo_edge.errors import BackendError, ConfigError


torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")
ort = pytest.importorskip("onnxruntime")

from yolo_edge.backends.torch import TorchBackend, _torchvision_stub  # noqa: E402


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.fixture
def tiny(tiny_onnx):
    return tiny_onnx


def test_darknet_op_set_matches_onnxruntime(tiny):
    be = TorchBackend(tiny, device="cpu", max_batch=4)
    assert isinstance(be, Backend)
    assert be.name == "torch" and be.providers == ("cpu",) and be.max_batch == 4
    assert be.input_shape == (None, 3, 16, 16)
    assert be.output_shapes == [["batch", 512, 7]]
    assert be.metadata == {"names": "{0: 'a', 1: 'b'}"}
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    (got,) = be.run(x)
    (want,) = ort_run(tiny, x)
    assert got.dtype == np.float32 and got.shape == (3, 512, 7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    be.close()
    be.close()  # idempotent
    assert be.providers == ()
    with pytest.raises(BackendError, match="closed"):
        be.run(x)


def test_static_batch_model_takes_exactly_its_batch(make_tiny_onnx):
    path = make_tiny_onnx(dynamic_batch=False)
    be = TorchBackend(path, device="cpu", max_batch=8)
    assert be.max_batch == 1
    with pytest.raises(ConfigError, match="outside 1..1"):
        be.run(np.zeros((2, 3, 16, 16), np.float32))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((1, 3, 16, 16), np.float64), "float32"),
        (np.zeros((3, 16, 16), np.float32), "float32"),
        (np.zeros((1, 3, 32, 16), np.float32), "axis 2"),
        (np.zeros((5, 3, 16, 16), np.float32), "outside 1..4"),
    ],
)
def test_bad_batches_raise_typed_errors(tiny, bad, match):
    be = TorchBackend(tiny, device="cpu", max_batch=4)
    with pytest.raises(ConfigError, match=match):
        be.run(bad)


def test_bad_device_and_options(tiny):
    with pytest.raises(ConfigError):
        TorchBackend(tiny, device="tpu")
    with pytest.raises(ConfigError, match="half=True needs a CUDA"):
        TorchBackend(tiny, device="cpu", half=True)
    with pytest.raises(ConfigError):
        TorchBackend(tiny, device="cpu", max_batch=0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            TorchBackend(tiny, device="cuda")


def test_torchvision_stub_restores_sys_modules():
    before = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    with _torchvision_stub():
        import torchvision

        assert torchvision.__name__ == "torchvision" and not hasattr(torchvision, "__version__")
    after = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    assert after == before


def test_fall_model_parity_with_onnxruntime(model_path):
    """The real YOLOv8s export (Split/Slice/Softmax/Resize...) converts and agrees with ORT."""
    path = model_path("yolov8s-fall")
    be = TorchBackend(path, device="cpu")
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    (got,) = be.run(x)
    (want,) = ort_run(path, x)
    assert got.shape == want.shape == (1, 6, 8400)
    # boxes are in pixels (up to 640): compare relative to the output's scale
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max() + 1e-3


def test_coco_model_parity_with_onnxruntime_batch2(model_path):
    path = model_path("yolov3-tiny-coco")
    be = TorchBackend(path, device="cpu", max_batch=2)
    x = np.random.default_rng(0).random((2, 3, 416, 416), dtype=np.float32)
    (got,) = be.run(x)
    (want,) = ort_run(path, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max() + 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with a CUDA build of PyTorch")
def test_cuda_fp32_and_fp16_match_cpu(tiny):
    x = np.random.default_rng(2).random((2, 3, 16, 16), dtype=np.float32)
    (want,) = ort_run(tiny, x)
    (fp32,) = TorchBackend(tiny, device="cuda").run(x)
    np.testing.assert_allclose(fp32, want, rtol=1e-3, atol=1e-3)
    (fp16,) = TorchBackend(tiny, device="cuda", half=True).run(x)
    np.testing.assert_allclose(fp16, want, rtol=2e-2, atol=2e-2)
