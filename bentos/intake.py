"""From a multipart ``/detect`` request to validated, decoded frames, before any batching.

Everything a request can get wrong is found here, in the request's own path, and
answered with its own 4xx: the form (multipart, at most ``LIMITS.max_images`` images),
the options (:class:`yolo_edge.remote.wire.DetectOptions`, class ids within the model's
classes), every image's format and size read from its header (nothing is decoded that
the header does not vouch for), the pixels of the whole request, and finally the decode.
Nothing invalid ever reaches a model batch shared with other requests.

A frame's remaining budget (the ``budgets_s`` field) becomes its deadline on this
worker's clock, counted from the moment the request arrived (the Guard stamps it, before
the body is read: uploading spends the budget too).

The request is parsed here rather than by BentoML's multipart reader so that uploads
are read straight from memory and a text field is never taken for a URL to download.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

import numpy as np

from bentos.guard import ARRIVED, ON_END
from yolo_edge.errors import ConfigError, ImageError, ImageTooLargeError, UnsupportedImageError
from yolo_edge.image import check_pixels, decode_image
from yolo_edge.image_header import ImageHeader, read_header
from yolo_edge.remote.wire import LIMITS, DetectOptions, parse_form

__all__ = ["Frame", "IntakeLimits", "PixelBudget", "Rejected", "arrival", "read_form", "decode_frames"]

#: Bytes of one option field as multipart carries it (the wire limit is in characters).
_MAX_FIELD_BYTES = 4 * LIMITS.max_field_chars


class Rejected(Exception):
    """The request is refused with ``status`` (a 4xx) and a message saying what to fix."""

    def __init__(self, status: HTTPStatus, message: str, outcome: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome  # the yolo_edge_frames outcome it counts as


@dataclass(frozen=True, kw_only=True)
class IntakeLimits:
    """What one request may carry; the service's settings fill it in."""

    max_image_bytes: int  # one encoded image
    max_pixels: int  # per image
    max_request_pixels: int  # all images of the request together
    num_classes: int  # class ids must be below this (0: unknown, not checked)


class PixelBudget:
    """The decoded pixels this worker's requests may hold at once, from decode to answer.

    Per-image and per-request limits bound one request; this bounds them all together,
    so that many large requests at once cannot add up to gigabytes (a decode briefly
    takes twice its image's memory in OpenCV, then the frame waits for its batch).
    """

    def __init__(self, capacity: int, on_change: Callable[[int], None] = lambda used: None) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()
        self._on_change = on_change

    def acquire(self, pixels: int) -> Callable[[], None]:
        """Take ``pixels`` (or raise Rejected 503); returns the idempotent release."""
        with self._lock:
            if self.used + pixels > self.capacity:
                raise Rejected(HTTPStatus.SERVICE_UNAVAILABLE,
                               f"the service is decoding {self.used / 1e6:.0f} MP for other requests (at most "
                               f"{self.capacity / 1e6:.0f} MP at once): retry shortly", outcome="busy")
            self.used += pixels
            self._on_change(self.used)
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.used -= pixels
                    self._on_change(self.used)

        return release


@dataclass
class Frame:
    """One decoded upload on its way through the batcher."""

    image: np.ndarray
    options: DetectOptions
    received: float  # perf_counter when its request arrived
    decode_s: float
    deadline: float | None = None  # perf_counter past which it is not worth computing; None: no deadline


@dataclass(frozen=True)
class Upload:
    """One image of a request, with what its header promises."""

    index: int
    data: bytes
    header: ImageHeader
    budget_s: float | None = None  # seconds left to it when its request arrived


async def read_form(request: Any, limits: IntakeLimits, budget: PixelBudget | None = None
                    ) -> tuple[DetectOptions, list[Upload]]:
    """Parse and check a request (a Starlette ``Request``) without decoding any pixel.

    With a ``budget``, the request's pixels are taken from it, given back when the
    request ends (through the scope's ``ON_END`` callbacks, which the Guard runs).
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise Rejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                       f"expected multipart/form-data with one or more files in the field 'images', got "
                       f"{ctype[:60] or 'no Content-Type'!r} (curl -F images=@photo.jpg ...)")
    try:
        form = await request.form(max_files=LIMITS.max_images, max_fields=8, max_part_size=_MAX_FIELD_BYTES)
    except Exception as exc:  # starlette's MultiPartException / HTTPException, python-multipart's errors
        text = str(getattr(exc, "detail", "") or exc)
        if "Too many files" in text:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"too many images: at most {LIMITS.max_images} per request; "
                           "send the rest in another request") from None
        raise Rejected(HTTPStatus.BAD_REQUEST, f"could not parse the multipart body: {text[:200]}") from None
    files = form.getlist("images")
    if not files:
        raise Rejected(HTTPStatus.BAD_REQUEST, "no images: send one or more files in the multipart field 'images'")
    if not all(hasattr(f, "read") and hasattr(f, "filename") for f in files):
        raise Rejected(HTTPStatus.BAD_REQUEST, "'images' must be file uploads (curl -F images=@photo.jpg), not text or URLs")
    try:
        options, budgets = parse_form(((k, v) for k, v in form.multi_items() if k != "images"), image_count=len(files))
        options.for_model(limits.num_classes)
    except ConfigError as exc:
        raise Rejected(HTTPStatus.BAD_REQUEST, str(exc)) from None
    budgets = budgets or (None,) * len(files)
    uploads = [Upload(i, data, _header(i, data, limits), budget)
               for i, (data, budget) in enumerate(zip([await f.read() for f in files], budgets))]
    total = sum(u.header.pixels for u in uploads)
    if total > limits.max_request_pixels:
        raise Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"the {len(uploads)} images hold {total / 1e6:.1f} megapixels together, above the limit of "
                       f"{limits.max_request_pixels / 1e6:.0f} MP per request: send fewer or smaller images",
                       outcome="too_large")
    on_end = request.scope.get(ON_END)
    if budget is not None and on_end is not None:
        on_end.append(budget.acquire(total))
    return options, uploads


def arrival(request: Any, default: float) -> float:
    """When the request arrived: the Guard's stamp (``perf_counter``), else ``default``."""
    stamp = request.scope.get(ARRIVED)
    return stamp if isinstance(stamp, float) else default


def _header(index: int, data: bytes, limits: IntakeLimits) -> ImageHeader:
    try:
        if len(data) > limits.max_image_bytes:
            raise ImageTooLargeError(f"{len(data)} bytes, above the limit of {limits.max_image_bytes} per image")
        header = read_header(data)
        check_pixels(header.width, header.height, limits.max_pixels)
        return header
    except ImageError as exc:
        raise _rejected(index, exc) from None


def decode_frames(uploads: list[Upload], options: DetectOptions, received: float, limits: IntakeLimits,
                  on_decoded: Callable[[float], None] = lambda seconds: None) -> list[Frame]:
    """Decode checked uploads (CPU work: run it in a thread); ``received`` is when the request arrived."""
    frames = []
    for up in uploads:
        t0 = time.perf_counter()
        try:
            image = decode_image(up.data, max_pixels=limits.max_pixels, max_bytes=limits.max_image_bytes)
        except ImageError as exc:
            raise _rejected(up.index, exc) from None
        decode_s = time.perf_counter() - t0
        on_decoded(decode_s)
        deadline = None if up.budget_s is None else received + up.budget_s
        frames.append(Frame(image, options, received, decode_s, deadline))
    return frames


def _rejected(index: int, exc: ImageError) -> Rejected:
    if isinstance(exc, ImageTooLargeError):
        return Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"image {index}: {exc}", outcome="too_large")
    if isinstance(exc, UnsupportedImageError):
        return Rejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"image {index}: {exc}", outcome="unsupported")
    return Rejected(HTTPStatus.BAD_REQUEST, f"image {index}: {exc}")
