import cv2
import numpy as np
import pytest

from yolo_edge.preprocess import letterbox, letterbox_params, make_batch, to_blob


@pytest.mark.parametrize("shape", [(1080, 810), (720, 1280), (1080, 1920), (1, 3000), (3000, 1), (416, 416), (100, 37)])
@pytest.mark.parametrize("new_shape", [(640, 640), (416, 416), (384, 640)])
def test_letterbox_matches_ultralytics(shape, new_shape):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, params = letterbox(img, new_shape)
    ref = LetterBox(new_shape)(image=img)
    assert ours.shape == ref.shape == (*new_shape, 3)
    np.testing.assert_array_equal(ours, ref)
    assert params.top + params.bottom + params.new_unpad[1] == new_shape[0]
    assert params.left + params.right + params.new_unpad[0] == new_shape[1]


def test_letterbox_params_known_values():
    p = letterbox_params((720, 1280), (640, 640))
    assert p.new_unpad == (640, 360) and (p.top, p.bottom, p.left, p.right) == (140, 140, 0, 0)


def test_blob_is_rgb_chw_unit_range():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    blob = to_blob([img])
    assert blob.shape == (1, 3, 4, 6) and blob.dtype == np.float32
    assert blob[0, 2].min() == 1.0 and blob[0, 0].max() == 0.0  # blue lands in the last (B of RGB) plane


def test_make_batch_stacks_different_sizes():
    a = np.zeros((100, 200, 3), np.uint8)
    b = np.zeros((300, 50, 3), np.uint8)
    blob, params = make_batch([a, b], (64, 64))
    assert blob.shape == (2, 3, 64, 64)
    assert [p.orig_shape for p in params] == [(100, 200), (300, 50)]


@pytest.mark.parametrize("shape", [(1080, 1920), (1080, 810), (416, 416), (5, 900)])
def test_make_batch_equals_letterbox_then_blob(shape):
    img = np.random.default_rng(2).integers(0, 255, (*shape, 3), dtype=np.uint8)
    fast, params = make_batch([img], (416, 416))
    boxed, p = letterbox(img, (416, 416))
    np.testing.assert_array_equal(fast, to_blob([boxed]))
    assert params == [p]
    ref = cv2.dnn.blobFromImage(boxed, 1 / 255.0, swapRB=True, crop=False, ddepth=cv2.CV_32F)
    np.testing.assert_array_equal(fast, ref)
