"""GPU letterbox (torch) against the CPU letterbox: same geometry, pixels within one grey level."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from yolo_edge.errors import UnsupportedImageError
from yolo_edge.preprocess import make_batch

torch = pytest.importorskip("torch", reason="GPU pre-processing needs PyTorch")

from yolo_edge.backends.gpu_preprocess import letterbox_batch_torch  # noqa: E402


def real_photos() -> list[np.ndarray]:
    import cv2

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        return []
    assets = Path(spec.origin).parent / "assets"
    return [cv2.imread(str(p)) for p in sorted(assets.glob("*.jpg"))]


def synthetic() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.ones((9, 9, 1), np.uint8))
    return [
        smooth,  # 270x360: upscaled
        rng.integers(0, 256, (1080, 811, 3), dtype=np.uint8),  # noise, odd width, downscaled
        rng.integers(0, 256, (640, 640, 3), dtype=np.uint8),  # exact size: no resize at all
        rng.integers(0, 256, (7, 1000, 3), dtype=np.uint8),  # extreme aspect ratio
    ]


@pytest.mark.parametrize("shape", [(640, 640), (416, 416), (384, 640)])
def test_matches_cpu_letterbox(shape):
    images = real_photos() + synthetic()
    want, want_params = make_batch(images, shape)
    got, params = letterbox_batch_torch(images, shape, device="cpu")
    assert params == want_params  # identical geometry, box mapping is exact
    got = got.numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    diff = np.abs(got - want)
    # OpenCV's 11-bit fixed-point bilinear vs exact float: never more than one grey level,
    # on up to ~13% of the pixels of a resized image (measured 2-13%, noise being the worst).
    assert diff.max() <= 1.0 / 255 + 1e-6
    assert (diff > 1e-6).mean() < 0.15
    # Padding is exactly 114 and the exact-size image is exact.
    i_exact = len(real_photos()) + 2
    if shape == (640, 640):
        np.testing.assert_allclose(got[i_exact], want[i_exact], atol=1e-6)


def test_channel_order_is_rgb():
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    got, _ = letterbox_batch_torch([img], (64, 64), device="cpu")
    assert got[0, 2].min() == 1.0 and got[0, 0].max() == 0.0


@pytest.mark.parametrize(
    "bad", [[], [np.zeros((4, 4), np.uint8)], [np.zeros((4, 4, 3), np.float32)], [np.zeros((4, 4, 4), np.uint8)], ["x.jpg"]]
)
def test_bad_input_raises_typed_error(bad):
    with pytest.raises(UnsupportedImageError):
        letterbox_batch_torch(bad, (32, 32), device="cpu")


def test_feeds_torch_backend_without_host_copy(tiny_onnx):
    from yolo_edge.backends.torch import TorchBackend
    from yolo_edge.errors import ConfigError

    be = TorchBackend(tiny_onnx, device="cpu", max_batch=4)
    imgs = synthetic()[:2]
    x, _ = letterbox_batch_torch(imgs, (16, 16), device="cpu")
    np.testing.assert_allclose(be.run_tensor(x)[0], be.run(x.numpy())[0], rtol=1e-6)
    with pytest.raises(ConfigError):
        be.run_tensor(x.to(torch.uint8))
    with pytest.raises(ConfigError, match="outside"):
        be.run_tensor(torch.zeros(5, 3, 16, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with a CUDA build of PyTorch")
def test_cuda_matches_cpu():
    images = real_photos() + synthetic()
    cpu, _ = letterbox_batch_torch(images, (640, 640), device="cpu")
    gpu, _ = letterbox_batch_torch(images, (640, 640), device="cuda")
    assert (gpu.cpu() - cpu).abs().max().item() <= 1.0 / 255 + 1e-6
