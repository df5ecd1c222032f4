"""Turning whatever the caller has (path, bytes, numpy array, PIL image) into a BGR frame.

Validation happens here, once, so the rest of the pipeline can trust its input: every
rejected input raises an :class:`~yolo_edge.errors.ImageError` subclass whose message
says what was expected and how to fix it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Literal, Union

import cv2
import numpy as np

from .errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError

__all__ = [
    "ImageSource",
    "MAX_PIXELS",
    "MAX_BYTES",
    "load_image",
    "decode_image",
    "encode_image",
    "image_size_from_header",
    "read_image_file",
]

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]
Channels = Literal["bgr", "rgb"]

#: Images above this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 50_000_000
#: Encoded images above this many bytes are refused before decoding.
MAX_BYTES = 64 * 1024 * 1024


def load_image(
    source: ImageSource,
    *,
    channels: Channels = "bgr",
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Return ``source`` as a contiguous ``HxWx3`` uint8 array in BGR order.

    ``source`` may be a file path, encoded bytes (JPEG, PNG, BMP, WebP, TIFF), a numpy
    array (``HxW`` gray, ``HxWx1``, ``HxWx3`` or ``HxWx4``, uint8) whose colour order
    ``channels`` states, or a PIL image. Gray is expanded to three channels and alpha is
    dropped.

    >>> frame = load_image(np.zeros((48, 64, 3), np.uint8), channels="rgb")
    >>> frame.shape, frame.dtype
    ((48, 64, 3), dtype('uint8'))
    """
    if channels not in ("bgr", "rgb"):
        raise UnsupportedImageError(f"channels must be 'bgr' or 'rgb', got {channels!r}")
    if isinstance(source, np.ndarray):
        return _from_array(source, channels, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), max_pixels)
    if _is_pil(source):
        return _from_pil(source, max_pixels)
    raise UnsupportedImageError(
        f"unsupported image type {type(source).__name__}: expected a file path, encoded "
        "bytes (JPEG/PNG), a numpy uint8 array HxWx3, or a PIL.Image"
    )


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode encoded image bytes to BGR, refusing oversized images before decoding.

    >>> decode_image(b"not an image")
    Traceback (most recent call last):
    ...
    yolo_edge.errors.ImageDecodeError: could not decode 12 bytes as an image (starts with b'not an imag'): expected JPEG, PNG, BMP, WebP or TIFF data; check the file is complete and not another format
    """
    if not data:
        raise ImageDecodeError("got empty bytes: expected an encoded JPEG/PNG image; check the upload or file read")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"encoded image is {len(data)} bytes, above the limit of {max_bytes}: downscale or re-encode it first"
        )
    size = image_size_from_header(data)
    if size is not None:
        _check_pixels(size[0], size[1], max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        raise ImageDecodeError(f"could not decode {len(data)} bytes as an image: {exc}") from exc
    if img is None or img.size == 0:
        raise ImageDecodeError(
            f"could not decode {len(data)} bytes as an image (starts with {data[:11]!r}): expected JPEG, "
            "PNG, BMP, WebP or TIFF data; check the file is complete and not another format"
        )
    if img.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the high byte
        img = (img >> 8).astype(np.uint8)
    return _from_array(img, "bgr", max_pixels)


def encode_image(image: np.ndarray, fmt: str = ".jpg", *, quality: int = 90) -> bytes:
    """Encode a BGR ``HxWx3`` uint8 frame as JPEG (``quality`` 1-100) or PNG bytes."""
    fmt = fmt if fmt.startswith(".") else "." + fmt
    if fmt.lower() not in (".jpg", ".jpeg", ".png", ".webp", ".bmp"):
        raise UnsupportedImageError(f"unsupported encoding {fmt!r}: use '.jpg', '.png', '.webp' or '.bmp'")
    if not 1 <= int(quality) <= 100:
        raise UnsupportedImageError(f"JPEG quality must be within 1..100, got {quality}")
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if fmt.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(fmt, _from_array(image, "bgr", MAX_PIXELS), params)
    if not ok:
        raise UnsupportedImageError(f"OpenCV could not encode a {image.shape} array as {fmt}")
    return buf.tobytes()


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from a PNG, JPEG, GIF, BMP or WebP header, or None if unknown.

    Reading the header first lets us refuse a decompression bomb without decoding it.
    """
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + seg_len
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    return None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image header says {width}x{height}: expected a positive width and height")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.0f} MP: downscale it first (or raise max_pixels if you trust the source)"
        )


def _from_array(arr: np.ndarray, channels: Channels, max_pixels: int) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise UnsupportedImageError(
            f"expected a uint8 array, got dtype {arr.dtype}: convert with "
            "(arr * 255).clip(0, 255).astype(np.uint8) for [0, 1] floats"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UnsupportedImageError(
            f"expected an image array of shape HxW, HxWx3 or HxWx4, got shape {arr.shape}; "
            "for a CHW tensor use arr.transpose(1, 2, 0), for a batch pass a list of frames"
        )
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise UnsupportedImageError(f"got an empty image of shape {arr.shape}: expected height and width >= 1")
    _check_pixels(w, h, max_pixels)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGR if channels == "rgb" else cv2.COLOR_BGRA2BGR)
    if channels == "rgb":
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def read_image_file(path: str | os.PathLike) -> bytes:
    """The encoded bytes of an image file, or an :class:`ImageDecodeError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(f"image file not found: {str(path)!r}; check the path")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"could not read image file {str(path)!r}: {exc}") from exc


def _from_path(path: Path, max_pixels: int) -> np.ndarray:
    data = read_image_file(path)
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "mode") and hasattr(obj, "size")


def _from_pil(img: Any, max_pixels: int) -> np.ndarray:
    _check_pixels(img.size[0], img.size[1], max_pixels)
    if img.mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGB")
    return _from_array(np.asarray(img), "rgb", max_pixels)
