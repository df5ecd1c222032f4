import io

import cv2
import numpy as np
import pytest

from yolo_edge.errors import ImageDecodeError, ImageNotFoundError, ImageTooLargeError, UnsupportedImageError
from yolo_edge.image import decode_image, encode_image, image_size_from_header, load_image


def test_all_input_kinds_agree(bus_jpg):
    from PIL import Image

    ref = cv2.imread(str(bus_jpg))
    data = bus_jpg.read_bytes()
    np.testing.assert_array_equal(load_image(bus_jpg), ref)
    np.testing.assert_array_equal(load_image(str(bus_jpg)), ref)
    np.testing.assert_array_equal(load_image(data), ref)
    np.testing.assert_array_equal(load_image(ref[..., ::-1].copy(), channels="rgb"), ref)
    pil = Image.fromarray(ref[..., ::-1])
    np.testing.assert_array_equal(load_image(pil), ref)


def test_gray_and_rgba_are_expanded():
    gray = np.full((5, 7), 9, np.uint8)
    assert load_image(gray).shape == (5, 7, 3)
    assert load_image(gray[..., None]).shape == (5, 7, 3)
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    out = load_image(rgba, channels="rgb")
    assert out.shape == (5, 7, 3) and out[0, 0].tolist() == [0, 0, 200]


def test_png_roundtrip_and_header_size():
    img = np.random.default_rng(0).integers(0, 255, (33, 47, 3), dtype=np.uint8)
    png = encode_image(img, ".png")
    assert image_size_from_header(png) == (47, 33)
    np.testing.assert_array_equal(decode_image(png), img)
    assert image_size_from_header(encode_image(img, ".jpg")) == (47, 33)


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"\xff\xd8\xff" + b"garbage" * 20, b"GIF89a"])
def test_corrupt_or_empty_bytes(data):
    with pytest.raises(ImageDecodeError, match="expected"):
        load_image(data)


def test_truncated_jpeg(bus_jpg):
    with pytest.raises(ImageDecodeError):
        load_image(bus_jpg.read_bytes()[:200])


def test_missing_file_is_a_file_not_found_error_of_ours():
    with pytest.raises(ImageNotFoundError, match="image file not found: '/nonexistent/bus.jpg'") as info:
        load_image("/nonexistent/bus.jpg")
    assert isinstance(info.value, FileNotFoundError) and not isinstance(info.value, ImageDecodeError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one line, no OSError chain


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "HxWx3"),
        (np.zeros((1, 3, 10, 10), np.uint8), "HxWx3"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_unsupported_arrays(arr, match):
    with pytest.raises(UnsupportedImageError, match=match):
        load_image(arr)


def test_unsupported_type_and_channels():
    with pytest.raises(UnsupportedImageError, match="expected a file path"):
        load_image(12345)
    with pytest.raises(UnsupportedImageError, match="channels"):
        load_image(np.zeros((2, 2, 3), np.uint8), channels="bgra")


def test_decompression_bomb_refused_before_decoding():
    # a valid 10000x10000 PNG header (100 MP) with no pixel data: must be refused by size, not decoded
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        load_image(png)
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((8000, 7000, 3), np.uint8))


def test_pixel_limit_is_configurable():
    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ImageTooLargeError):
        load_image(img, max_pixels=5000)
