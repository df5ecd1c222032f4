"""What one ``/detect`` request carries: each frame encoded for upload, and frames fitted to the service's limits.

:func:`prepare_upload` encodes a frame as :class:`~yolo_edge.remote.cloud.CloudClient` sends
it (lossless by default, shrunk to the model's input when that changes nothing the model
sees). :func:`service_limits` reads the sizes a service holds requests to from its
``GET /metadata``; :func:`fit_request` says how many frames one request may carry, so
the client splits a batch into several requests, and :func:`check_fits` refuses a frame
that fits no request, before anything is uploaded, instead of the service's 413.

>>> limits = replace(LIMITS, max_request_bytes=32 << 20)
>>> fit_request([(10 << 20, 1000)] * 5, {}, limits)
3
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, ImageTooLargeError
from ..image import MAX_BYTES, MAX_PIXELS
from ..types import Detections
from .values import is_int, short_repr
from .wire import LIMITS, Limits, ServiceInfo

__all__ = ["check_qualities", "prepare_upload", "service_limits", "request_bytes", "fit_request", "check_fits", "to_original",
           "PART_OVERHEAD", "REQUEST_OVERHEAD"]

#: Bytes a multipart request adds around each file or field (boundary and part headers, about
#: 150 bytes; counted high so that an estimate never falls below the body actually sent).
PART_OVERHEAD = 512
#: ... and around the whole body.
REQUEST_OVERHEAD = 4096


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str
    suffix: str  # file name extension to upload under
    shape: tuple[int, int]  # (height, width) of the caller's image
    scale: tuple[float, float]  # caller pixels per uploaded pixel, (x, y)
    size: tuple[int, int] = (0, 0)  # (height, width) of the uploaded image

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


def service_limits(info: ServiceInfo) -> Limits:
    """:data:`~yolo_edge.remote.wire.LIMITS` with the sizes the service said (``/metadata`` ``limits``) in their place.

    A size the service does not say (an older service) is taken as the default, which
    every service starts from.
    """
    said = {"max_images": min(info.max_images, LIMITS.max_images), "max_request_bytes": info.max_upload_bytes,
            "max_image_bytes": info.max_image_bytes, "max_pixels": info.max_pixels,
            "max_request_pixels": info.max_request_pixels}
    return replace(LIMITS, **{k: v for k, v in said.items() if v is not None})


def request_bytes(image_bytes: Sequence[int], fields: Mapping[str, str]) -> int:
    """An upper bound on the body of a ``/detect`` request with these encoded images and form fields."""
    return (REQUEST_OVERHEAD + sum(n + PART_OVERHEAD for n in image_bytes)
            + sum(len(k) + len(v.encode()) + PART_OVERHEAD for k, v in fields.items()))


def fit_request(sizes: Sequence[tuple[int, int]], fields: Mapping[str, str], limits: Limits = LIMITS) -> int:
    """How many of the leading uploads, each ``(encoded bytes, pixels)``, one request may carry (0: not even one).

    A request holds at most ``limits.max_images`` images, ``max_request_pixels`` pixels and
    ``max_request_bytes`` bytes of body (:func:`request_bytes`); each image at most
    ``max_image_bytes`` and ``max_pixels``.
    """
    count = pixels = 0
    body = request_bytes([], fields)
    for nbytes, npixels in sizes[:limits.max_images]:
        pixels += npixels
        body += nbytes + PART_OVERHEAD
        if (nbytes > limits.max_image_bytes or npixels > limits.max_pixels or pixels > limits.max_request_pixels
                or body > limits.max_request_bytes):
            break
        count += 1
    return count


def check_fits(index: int, upload: Upload, fields: Mapping[str, str], limits: Limits, endpoint: str) -> None:
    """Raise :class:`ImageTooLargeError` if ``upload`` (image ``index``) fits no request to the service."""
    nbytes, h, w = len(upload.data), upload.size[0], upload.size[1]
    fix = ("send it smaller: CloudClient(downscale=True) (the default) shrinks arrays to the model's input, "
           "jpeg_quality=90 makes uploads 4-5x smaller")
    if upload.pixels > min(limits.max_pixels, limits.max_request_pixels):
        limit = min(limits.max_pixels, limits.max_request_pixels)
        raise ImageTooLargeError(
            f"image {index} is uploaded as {w}x{h} = {upload.pixels} pixels, above the {limit} pixels that "
            f"{endpoint} takes per image (GET /metadata limits.max_pixels, max_request_pixels): {fix}, or raise "
            "YOLO_EDGE_MAX_PIXELS on the service")
    if nbytes > limits.max_image_bytes or fit_request([(nbytes, upload.pixels)], fields, limits) == 0:
        limit = min(limits.max_image_bytes, limits.max_request_bytes - request_bytes([0], fields))
        raise ImageTooLargeError(
            f"image {index} is {nbytes} bytes encoded, above the {max(limit, 0)} bytes that one image may have in "
            f"a request to {endpoint} (GET /metadata limits.max_upload_bytes {limits.max_request_bytes}): {fix}, "
            "or raise YOLO_EDGE_MAX_UPLOAD_BYTES on the service (and the proxy's client_max_body_size)")


def is_encoded(image: Any) -> bool:
    return isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike))


def check_qualities(qualities: Sequence[int | None] | None, count: int) -> list[int | None] | None:
    """Each frame's upload encoding as a list (None: lossless PNG, 1-100: JPEG of that quality), or None for none."""
    if qualities is None:
        return None
    qualities = list(qualities)
    if len(qualities) != count or not all(q is None or (is_int(q) and 1 <= q <= 100) for q in qualities):
        raise ConfigError(f"jpeg_qualities must give one quality per image ({count}), each None "
                          f"(lossless) or an integer within 1..100, got {short_repr(qualities)}")
    return qualities


def prepare_upload(image: Any, *, channels: str = "bgr", imgsz: tuple[int, int] | None = None,
                   jpeg_quality: int | None = None, max_bytes: int = MAX_BYTES,
                   limits: Limits | None = None) -> Upload:
    """Encoded bytes to upload for ``image``, shrunk to fit ``imgsz`` (h, w) when given.

    Already-encoded input (bytes or a file path) is sent as it is (after its header is
    checked, so a bomb or a format the service refuses fails here) unless
    ``jpeg_quality`` asks for a smaller, lossy upload and the image is larger than
    ``imgsz``, or it is above ``limits``' per-image bytes or pixels (then it is shrunk to
    ``imgsz`` like an array: the model sees the same pixels). Arrays are resized exactly
    as the service's letterbox would resize them and sent as PNG (lossless) or, with
    ``jpeg_quality``, as JPEG.
    """
    from ..image import check_pixels, decode_image, encode_image, load_image, read_image_file
    from ..image_header import read_header

    if is_encoded(image):
        raw = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else read_image_file(image, max_bytes=max_bytes)
        header = read_header(raw)
        check_pixels(header.width, header.height, MAX_PIXELS)
        fits = imgsz is None or (header.height <= imgsz[0] and header.width <= imgsz[1])
        too_large = limits is not None and (len(raw) > limits.max_image_bytes
                                            or header.width * header.height > limits.max_pixels)
        if fits or (jpeg_quality is None and not too_large):
            size = (header.height, header.width)
            return Upload(raw, header.mime, header.format, size, (1.0, 1.0), size)
        frame = decode_image(raw, max_bytes=max_bytes)
    else:
        frame = load_image(image, channels=channels)  # type: ignore[arg-type]
    h, w = frame.shape[:2]
    scale = (1.0, 1.0)
    if imgsz is not None and (h > imgsz[0] or w > imgsz[1]):
        import cv2

        from ..preprocess import letterbox_params

        # the very size and interpolation the service's letterbox would use: the model
        # then sees the same pixels as if the full frame had been sent
        nw, nh = letterbox_params((h, w), imgsz).new_unpad
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        scale = (w / nw, h / nh)
    size = frame.shape[:2]
    if jpeg_quality is None:
        return Upload(encode_image(frame, ".png"), "image/png", "png", (h, w), scale, size)
    return Upload(encode_image(frame, ".jpg", quality=jpeg_quality), "image/jpeg", "jpg", (h, w), scale, size)


def to_original(dets: Detections, scale: tuple[float, float], shape: tuple[int, int]) -> Detections:
    """Map boxes from the uploaded frame back to the caller's frame."""
    sx, sy = scale
    xyxy = dets.xyxy
    if (sx, sy) != (1.0, 1.0) and len(dets):
        # the service divided by gain 1 on the uploaded frame; the local pipeline divides
        # by the letterbox gain (uploaded / original): multiplying by its inverse is the same map
        xyxy = dets.xyxy * np.array([sx, sy, sx, sy], np.float32)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, shape[1])
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, shape[0])
    return Detections(xyxy, dets.confidence, dets.class_id, dets.names, shape)
