"""Turning whatever the caller has (path, bytes, numpy array, PIL image) into a BGR frame.

Validation happens here, once, so the rest of the pipeline can trust its input: every
rejected input raises an :class:`~yolo_edge.errors.ImageError` subclass whose message
says what was expected and how to fix it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal, Union

import cv2
import numpy as np

from .errors import (
    ConfigError, ImageDecodeError, ImageError, ImageNotFoundError, ImageTooLargeError, UnsupportedImageError,
)
from .image_header import read_header
from .remote.wire import LIMITS

__all__ = [
    "ImageSource",
    "MAX_PIXELS",
    "MAX_BYTES",
    "load_image",
    "decode_image",
    "encode_image",
    "image_size_from_header",
    "read_image_file",
    "check_pixels",
]

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]
Channels = Literal["bgr", "rgb"]

#: Images above this many pixels are refused before decoding (decompression bombs); the
#: service's default, from :data:`yolo_edge.remote.wire.LIMITS`, so what the SDK reads the service takes.
MAX_PIXELS = LIMITS.max_pixels
#: Encoded images above this many bytes are refused before decoding (the service's default too).
MAX_BYTES = LIMITS.max_image_bytes


def load_image(
    source: ImageSource,
    *,
    channels: Channels = "bgr",
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Return ``source`` as a contiguous ``HxWx3`` uint8 array in BGR order.

    ``source`` may be a file path, encoded bytes (JPEG, PNG, WebP, BMP, TIFF, GIF, PNM,
    JPEG 2000: see :mod:`yolo_edge.image_header`), a numpy array (``HxW`` gray,
    ``HxWx1``, ``HxWx3`` or ``HxWx4``, uint8) whose colour order ``channels`` states, or
    a PIL image. Gray is expanded to three channels and alpha is dropped.

    >>> frame = load_image(np.zeros((48, 64, 3), np.uint8), channels="rgb")
    >>> frame.shape, frame.dtype
    ((48, 64, 3), dtype('uint8'))
    """
    check_channels(channels)
    max_pixels = check_limit("max_pixels", max_pixels)
    if isinstance(source, np.ndarray):
        return _from_array(source, channels, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(source, max_pixels)
    if _is_pil(source):
        return _from_pil(source, max_pixels)
    raise UnsupportedImageError(
        f"unsupported image type {type(source).__name__}: expected a file path, encoded "
        "bytes (JPEG/PNG), a numpy uint8 array HxWx3, or a PIL.Image"
    )


def check_channels(channels: Any) -> None:
    if not isinstance(channels, str) or channels not in ("bgr", "rgb"):
        raise UnsupportedImageError(f"channels must be 'bgr' or 'rgb', got {channels!r}")


def check_limit(name: str, value: Any) -> int:
    """A positive integer limit (pixels, bytes), or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode encoded image bytes to BGR, refusing oversized images before decoding.

    The size is read from the header first (:func:`yolo_edge.image_header.read_header`);
    a format whose size cannot be read that way is refused, never decoded.

    >>> decode_image(b"not an image")
    Traceback (most recent call last):
    ...
    yolo_edge.errors.ImageDecodeError: could not decode 12 bytes as an image (starts with b'not an imag'): expected JPEG, PNG, WebP, BMP, TIFF, GIF, PNM, Sun raster or JPEG 2000 data; check the file is complete and not another format
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnsupportedImageError(f"decode_image expects encoded bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"encoded image is {len(data)} bytes, above the limit of {max_bytes}: downscale or re-encode it first"
        )
    header = read_header(data)
    check_pixels(header.width, header.height, max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # always 8-bit BGR: a 16-bit or RGBA file decodes straight to 3 bytes per pixel
        # (no 6- or 8-byte intermediate), and EXIF orientation is ignored as for arrays
        img = cv2.imdecode(buf, _DECODE_FLAGS)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        raise ImageDecodeError(f"could not decode {len(data)} bytes as {header.format.upper()}: {exc}") from exc
    if img is None or img.size == 0:
        raise ImageDecodeError(
            f"could not decode {len(data)} bytes of {header.format.upper()} data ({header.width}x{header.height} "
            "by its header): expected a complete image; check the file is not truncated or damaged"
        )
    return _from_array(img, "bgr", max_pixels)


_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def encode_image(image: np.ndarray, fmt: str = ".jpg", *, quality: int = 90, png_level: int = 1) -> bytes:
    """Encode a BGR ``HxWx3`` uint8 frame as JPEG (``quality`` 1-100) or lossless PNG bytes.

    ``png_level`` is zlib's effort (0-9): 1 is several times faster than the default 3 and
    at most a few percent larger on photos.

    >>> len(encode_image(np.zeros((8, 8, 3), np.uint8), ".png")) > 0
    True
    """
    if not isinstance(fmt, str):
        raise UnsupportedImageError(f"fmt must be a string like '.jpg' or '.png', got {fmt!r}")
    fmt = (fmt if fmt.startswith(".") else "." + fmt).lower()
    if fmt not in (".jpg", ".jpeg", ".png", ".webp", ".bmp"):
        raise UnsupportedImageError(f"unsupported encoding {fmt!r}: use '.jpg', '.png', '.webp' or '.bmp'")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be an integer within 1..100, got {quality!r}")
    if isinstance(png_level, bool) or not isinstance(png_level, (int, np.integer)) or not 0 <= png_level <= 9:
        raise ConfigError(f"png_level must be an integer within 0..9, got {png_level!r}")
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"encode_image expects a numpy HxWx3 uint8 array, got {type(image).__name__}")
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, int(quality)], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(quality)],
              ".png": [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]}.get(fmt, [])
    ok, buf = cv2.imencode(fmt, _from_array(image, "bgr", MAX_PIXELS), [int(p) for p in params])
    if not ok:
        raise UnsupportedImageError(f"OpenCV could not encode a {image.shape} array as {fmt}")
    return buf.tobytes()


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from the header of any accepted format, or None if unreadable.

    Reading the header first lets us refuse a decompression bomb without decoding it.
    """
    try:
        header = read_header(data)
    except ImageError:
        return None
    return header.width, header.height


def check_pixels(width: int, height: int, max_pixels: int) -> None:
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
    check_pixels(w, h, max_pixels)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGR if channels == "rgb" else cv2.COLOR_BGRA2BGR)
    if channels == "rgb":
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def read_image_file(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The encoded bytes of an image file, or an :class:`ImageError` naming the path.

    The size is checked before reading, so a huge file is refused without being read.
    """
    max_bytes = check_limit("max_bytes", max_bytes)
    try:
        path = Path(path)
        info = path.stat()
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        if isinstance(exc, FileNotFoundError):
            raise ImageNotFoundError(f"image file not found: {str(path)!r}; check the path") from None
        raise ImageDecodeError(f"cannot open image file {str(path)!r}: {exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ImageDecodeError(f"{str(path)!r} is {what}: expected an image file")
    if info.st_size > max_bytes:
        raise ImageTooLargeError(f"image file {str(path)!r} is {info.st_size} bytes, above the limit of "
                                 f"{max_bytes}: downscale or re-encode it first")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise ImageDecodeError(f"could not read image file {str(path)!r}: {exc}") from exc
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image file {str(path)!r} grew above the limit of {max_bytes} bytes while read")
    return data


def _from_path(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    data = read_image_file(path)
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise type(exc)(f"{os.fspath(path)}: {exc}") from exc


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "mode") and hasattr(obj, "size")


def _from_pil(img: Any, max_pixels: int) -> np.ndarray:
    check_pixels(img.size[0], img.size[1], max_pixels)
    if img.mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGB")
    return _from_array(np.asarray(img), "rgb", max_pixels)
