"""The wire format between :class:`~yolo_edge.remote.cloud.CloudClient` and the service, defined once.

Both sides import this module: the client encodes the request options and decodes the
answers with it, the service (``bentos/service.py``) decodes the options and encodes the
answers with it, and :class:`~yolo_edge.Detector` checks its arguments against the same
:data:`LIMITS`. What one side accepts, the other side accepts::

    POST /detect     multipart/form-data
        images       a file, 1 to LIMITS.max_images times (JPEG, PNG, WebP, ...)
        conf, iou    a number within [0, 1]                       optional
        max_det      an integer within 1..LIMITS.max_det           optional
        classes      a JSON list of class ids of the model, [0, 2]  optional
        budgets_s    a JSON list, one entry per image in upload order: the seconds   optional
                     left to that frame (0..LIMITS.max_budget_s), or null for none
      -> 200         a JSON list with one FrameResult per image, in upload order:
                     {"status": "ok", "image_shape", "names", "detections", "model", "timing"}
                     or {"status": "expired" | "error", "error": "...", "model", "timing"}
      -> 4xx / 5xx   {"error": "what was wrong and how to fix it", "status": <code>}
    GET  /metadata   ServiceInfo: model name, sha256, classes, input size, limits

A frame's status is its own: one frame that could not be processed never fails the
others, and a frame that is not ``ok`` carries no detections, so it cannot be mistaken
for an empty image. Options left out take the service's defaults.

Budgets are relative (seconds left when the request was sent), never absolute times: the
device's clock and the service's differ. The service turns each into a deadline on its
own clock when the request arrives, and a frame whose deadline has passed when its model
batch starts (or falls before the batch's expected end) is answered ``expired``, never
computed.

>>> opts = DetectOptions(conf=0.3, classes=[0, 2])
>>> opts.to_form()
{'conf': '0.3', 'classes': '[0, 2]'}
>>> DetectOptions.from_form(opts.to_form().items()) == opts
True
>>> DetectOptions(max_det=10**30)
Traceback (most recent call last):
...
yolo_edge.errors.ConfigError: max_det must be an integer within 1..1000, got 1000000000000000000000000000000
>>> budgets_to_form([0.25, None])
'[0.25, null]'
>>> parse_form([("conf", "0.3"), ("budgets_s", "[0.25, null]")], image_count=2)
(DetectOptions(conf=0.3, iou=None, max_det=None, classes=None), (0.25, None))
"""

from __future__ import annotations

import enum
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import CloudError, ConfigError
from ..types import Detections
from .values import is_int as _is_int
from .values import is_real as _is_real
from .values import short_repr

__all__ = [
    "LIMITS",
    "Limits",
    "DetectOptions",
    "FrameStatus",
    "FrameResult",
    "FrameTiming",
    "ModelRef",
    "ServiceInfo",
    "check_unit",
    "check_max_det",
    "check_classes",
    "check_budgets",
    "frame_deadlines",
    "unexpired",
    "image_list",
    "check_seconds",
    "budgets_to_form",
    "parse_form",
    "BUDGETS_FIELD",
    "decode_results",
    "short_repr",
]


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds every request and every ``Detector`` call is held to, defined once.

    The sizes are the defaults of every part that holds an upload to a size: the SDK
    (:mod:`yolo_edge.image` reads and decodes no larger image), the service (its
    ``YOLO_EDGE_MAX_UPLOAD_BYTES``, ``_MAX_IMAGE_BYTES``, ``_MAX_PIXELS`` and
    ``_MAX_REQUEST_PIXELS`` start from them), the service's guard (the body limit) and the nginx template
    (``client_max_body_size``; a test holds ``deploy/`` to them). A service may be set to
    other values: it says which in ``GET /metadata`` (``limits``), and the client holds
    its requests to those (:func:`yolo_edge.remote.cloud_upload.service_limits`).
    """

    max_det: int = 1000  # detections kept per image
    max_images: int = 32  # images per request
    max_classes: int = 1024  # ids in one classes filter
    max_class_id: int = 65535  # no model has more classes than this
    max_field_chars: int = 8192  # one form field's text
    max_budget_s: float = 3600.0  # a frame's remaining time budget
    max_pixels: int = 40_000_000  # one image, width x height (decompression bombs are refused before decoding)
    max_request_pixels: int = 80_000_000  # all images of one request together: two at the per-image limit
    max_image_bytes: int = 32 << 20  # one encoded image
    max_request_bytes: int = 32 << 20  # one request body, multipart and all (the guard's and the proxy's limit)


LIMITS = Limits()

_OPTION_NAMES = ("conf", "iou", "max_det", "classes")
#: The form field of the frames' remaining budgets (a JSON list parallel to ``images``).
BUDGETS_FIELD = "budgets_s"
_FORM_FIELDS = "images, " + ", ".join(_OPTION_NAMES) + ", " + BUDGETS_FIELD


# -- option checks, shared with Detector ------------------------------------------------------

def check_unit(name: str, value: Any) -> float:
    """A finite real number within [0, 1] (``conf``, ``iou``), as a float."""
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) else None
    except (OverflowError, ValueError):  # an int too large for a float
        number = None
    if number is None or not 0.0 <= number <= 1.0:  # NaN fails this too
        raise ConfigError(f"{name} must be a number within [0, 1], got {short_repr(value)}")
    return number


def check_seconds(name: str, value: Any, *, zero: bool = False) -> float:
    """A finite number of seconds, positive (or zero, with ``zero``), as a float."""
    number = float(value) if _is_real(value) else math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ConfigError(f"{name} must be a {'non-negative' if zero else 'positive'} finite number of seconds, "
                          f"got {short_repr(value)}")
    return number


def check_max_det(value: Any) -> int:
    """An integer within 1..LIMITS.max_det."""
    if not _is_int(value) or not 1 <= value <= LIMITS.max_det:
        raise ConfigError(f"max_det must be an integer within 1..{LIMITS.max_det}, got {short_repr(value)}")
    return int(value)


def check_classes(value: Any, num_classes: int | None = None) -> tuple[int, ...]:
    """Class ids as a tuple: one id or a list of them, each a class of the model.

    ``num_classes`` is the model's class count, when known.
    """
    if _is_int(value):
        value = [value]
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"classes must be a list of class ids like [0, 2], got {short_repr(value)}")
    if len(value) > LIMITS.max_classes:
        raise ConfigError(f"classes lists {len(value)} ids: expected at most {LIMITS.max_classes}")
    top = LIMITS.max_class_id if num_classes is None else num_classes - 1
    for c in value:
        if not _is_int(c) or not 0 <= c <= top:
            where = f"the model's classes 0..{top}" if num_classes is not None else f"0..{top}"
            raise ConfigError(f"classes must hold class ids within {where}, got {short_repr(c)} in {short_repr(value)}")
    return tuple(int(c) for c in value)


def check_budgets(value: Any, count: int, *, spent_ok: bool = False) -> tuple[float | None, ...] | None:
    """Per-frame remaining budgets in seconds, one per image: a tuple of ``count`` floats (or None).

    ``value`` is None (no budgets), one number for every frame, or a sequence with one
    entry per image, each a number or None (that frame has no deadline). Each number is
    finite and at most ``LIMITS.max_budget_s``; it must be >= 0 unless ``spent_ok`` (the
    client's side, where a budget already spent means "do not send this frame").
    """
    if value is None:
        return None
    if _is_real(value):
        value = [value] * count
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"budgets_s must be seconds left per frame: one number, or a list with one number (or None) "
                          f"per image, got {short_repr(value)}")
    if len(value) != count:
        raise ConfigError(f"budgets_s lists {len(value)} budgets for {count} images: give one per image, in order")
    low = -math.inf if spent_ok else 0.0
    out: list[float | None] = []
    for b in value:
        number = float(b) if _is_real(b) else math.nan if b is not None else None
        if number is not None and not low <= number <= LIMITS.max_budget_s:  # NaN fails this too
            bounds = f"at most {LIMITS.max_budget_s:g}" if spent_ok else f"within 0..{LIMITS.max_budget_s:g}"
            raise ConfigError(f"budgets_s must hold finite numbers of seconds {bounds} (or None for no deadline), "
                              f"got {short_repr(b)} in {short_repr(value)}")
        out.append(number)
    return tuple(out)


def frame_deadlines(budgets_s: Any, count: int, now: float) -> list[float | None] | None:
    """Each frame's deadline on the clock that read ``now`` (None: no deadline); None without budgets.

    ``budgets_s`` as the clients' ``detect_frames`` take it, checked by :func:`check_budgets`
    (a spent budget is allowed: that frame is not sent).
    """
    budgets = check_budgets(budgets_s, count, spent_ok=True)
    return None if budgets is None else [None if b is None else now + b for b in budgets]


def unexpired(pending: Sequence[int], deadlines: Sequence[float | None] | None, results: list[Any], now: float,
              expired: Callable[[int, float], Any]) -> list[int]:
    """The frames of ``pending`` with no result yet and budget left at ``now``.

    A frame whose deadline has passed gets ``expired(index, seconds late)`` in ``results``.
    """
    for i in pending:
        late = None if deadlines is None else deadlines[i]
        if results[i] is None and late is not None and late <= now:
            results[i] = expired(i, now - late)
    return [i for i in pending if results[i] is None]


def image_list(images: Any, what: str) -> list[Any]:
    """``images`` as a list; ConfigError for one image (a path, bytes, an array) or no sequence at all."""
    if isinstance(images, (str, bytes, np.ndarray)) or not isinstance(images, Sequence):
        raise ConfigError(f"{what} expects a list of images, got {type(images).__name__}; use detect() for one image")
    return list(images)


def budgets_to_form(budgets: Sequence[float | None]) -> str:
    """The ``budgets_s`` form field: a JSON list, microsecond precision."""
    return json.dumps([None if b is None else round(float(b), 6) for b in budgets])


# -- request options ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DetectOptions:
    """Per-request detection options; None means "the service's (or Detector's) default".

    Validated on construction and hashable, so the service can group a batch by them.
    """

    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.conf is not None:
            object.__setattr__(self, "conf", check_unit("conf", self.conf))
        if self.iou is not None:
            object.__setattr__(self, "iou", check_unit("iou", self.iou))
        if self.max_det is not None:
            object.__setattr__(self, "max_det", check_max_det(self.max_det))
        if self.classes is not None:
            object.__setattr__(self, "classes", check_classes(self.classes))

    def for_model(self, num_classes: int) -> "DetectOptions":
        """These options, once every class id is checked to be a class of the model."""
        if self.classes is not None and num_classes > 0:
            check_classes(self.classes, num_classes)
        return self

    def kwargs(self) -> dict[str, Any]:
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "classes": None if self.classes is None else list(self.classes)}

    def to_form(self) -> dict[str, str]:
        """The multipart form fields (only the options that are set)."""
        return {name: json.dumps(list(value) if name == "classes" else value)
                for name, value in ((n, getattr(self, n)) for n in _OPTION_NAMES) if value is not None}

    @classmethod
    def from_form(cls, fields: Iterable[tuple[str, Any]]) -> "DetectOptions":
        """Parse form fields (name, text) strictly: unknown, repeated or malformed ones are errors."""
        values: dict[str, Any] = {}
        for name, text in fields:
            if name not in _OPTION_NAMES:
                raise ConfigError(f"unknown form field {short_repr(name, 40)}: expected {_FORM_FIELDS}")
            if name in values:
                raise ConfigError(f"form field {name!r} is given twice: send it once")
            values[name] = _parse_field(name, text)
        return cls(**values)


def parse_form(fields: Iterable[tuple[str, Any]], *, image_count: int
               ) -> tuple[DetectOptions, tuple[float | None, ...] | None]:
    """A request's form fields other than ``images``: its options and its frames' budgets.

    Strict like :meth:`DetectOptions.from_form`; ``budgets_s`` must list one budget per
    image (``image_count``), each within 0..LIMITS.max_budget_s or null.
    """
    options: list[tuple[str, Any]] = []
    budgets: tuple[float | None, ...] | None = None
    seen = False
    for name, text in fields:
        if name != BUDGETS_FIELD:
            options.append((name, text))
            continue
        if seen:
            raise ConfigError(f"form field {BUDGETS_FIELD!r} is given twice: send it once")
        seen = True
        value = _parse_field(name, text)
        if not isinstance(value, list):
            raise ConfigError(f"form field {BUDGETS_FIELD!r} must be a JSON list with one budget in seconds per image "
                              f"(like [0.25, 0.3]), got {short_repr(text, 50)}")
        budgets = check_budgets(value, image_count)
    return DetectOptions.from_form(options), budgets


def _parse_field(name: str, text: Any) -> Any:
    if not isinstance(text, str):
        raise ConfigError(f"form field {name!r} must be a plain value, not a file")
    if len(text) > LIMITS.max_field_chars:
        raise ConfigError(f"form field {name!r} is {len(text)} characters long: expected at most {LIMITS.max_field_chars}")
    # a valid value is a number or one flat list: refusing nesting up front keeps the JSON
    # parser from recursing on [[[[...]]]] (which would raise RecursionError)
    if text.count("[") + text.count("{") > 1:
        raise ConfigError(f"form field {name!r} must be a number or a flat JSON list like [0, 2], got {short_repr(text, 50)}")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:  # JSONDecodeError, and ints too long to convert
        raise ConfigError(f"form field {name!r} must be a number or a JSON list like [0, 2], got {short_repr(text, 50)}") from None
    if value is None:
        raise ConfigError(f"form field {name!r} is null: leave the field out to take the default")
    if name == "classes" and not isinstance(value, list):
        raise ConfigError(f"form field 'classes' must be a JSON list of class ids like [0, 2], got {short_repr(text, 50)}")
    return value


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a finite number")


# -- the result envelope ----------------------------------------------------------------------------

class FrameStatus(str, enum.Enum):
    """What happened to one frame of a request."""

    OK = "ok"  # detected: the result carries detections
    EXPIRED = "expired"  # it could not be answered by its deadline: not computed (or not sent)
    ERROR = "error"  # could not be processed: the result says why


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: compare ``sha256``, not ``name``."""

    name: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class FrameTiming:
    """Where a frame's time went on the service, in milliseconds."""

    queue_ms: float = 0.0  # from its request's arrival to its batch's start
    decode_ms: float = 0.0
    inference_ms: float = 0.0  # its batch's letterbox, model run and NMS
    server_ms: float = 0.0  # from arrival to its result
    batch_frames: int = 0  # frames in the model batch it ran in

    def to_dict(self) -> dict[str, Any]:
        return {"queue_ms": round(self.queue_ms, 3), "decode_ms": round(self.decode_ms, 3),
                "inference_ms": round(self.inference_ms, 3), "server_ms": round(self.server_ms, 3),
                "batch_frames": self.batch_frames}


@dataclass(frozen=True, kw_only=True)
class FrameResult:
    """The service's answer for one frame: detections when ``status`` is OK, else ``error``."""

    status: FrameStatus
    model: ModelRef
    timing: FrameTiming = field(default_factory=FrameTiming)
    detections: Detections | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", FrameStatus(self.status))
        if (self.status is FrameStatus.OK) != (self.detections is not None):
            raise ConfigError("a FrameResult has detections exactly when its status is 'ok'")
        if self.status is not FrameStatus.OK and not self.error:
            raise ConfigError(f"a FrameResult with status {self.status.value!r} must say why (error=...)")

    @property
    def ok(self) -> bool:
        return self.status is FrameStatus.OK

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {"status": self.status.value}
        body = self.detections.to_dict() if self.detections is not None else {"error": self.error}
        return {**head, **body, "model": {"name": self.model.name, "sha256": self.model.sha256},
                "timing": self.timing.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "FrameResult":
        """Inverse of :meth:`to_dict`; raises :class:`CloudError` for anything else.

        An answer without ``status`` (a service older than the status field) is read as OK.
        """
        try:
            status = FrameStatus(data.get("status", "ok"))
            model = data.get("model") or {}
            ref = ModelRef(str(model.get("name", "?")), str(model.get("sha256", "")))
            timing = _timing(data.get("timing") or {})
            if status is FrameStatus.OK:
                return cls(status=status, model=ref, timing=timing, detections=Detections.from_dict(data))
            return cls(status=status, model=ref, timing=timing, error=str(data.get("error") or "no reason given"))
        except (AttributeError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise CloudError(f"the service answered a frame result this client cannot read ({exc}): "
                             f"{short_repr(data, 200)}; is the endpoint a yolo-edge service of a compatible version?") from exc


def _timing(data: Mapping[str, Any]) -> FrameTiming:
    def ms(key: str) -> float:
        value = data.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"timing {key} is {value!r}")
        return float(value)

    frames = data.get("batch_frames", 0)
    return FrameTiming(queue_ms=ms("queue_ms"), decode_ms=ms("decode_ms"), inference_ms=ms("inference_ms"),
                       server_ms=ms("server_ms"), batch_frames=int(frames) if _is_int(frames) else 0)


def decode_results(data: Any, count: int) -> list[FrameResult]:
    """The ``/detect`` answer for ``count`` images, one FrameResult each, or a CloudError."""
    if not isinstance(data, list) or len(data) != count:
        raise CloudError(f"/detect answered {short_repr(data, 200)}: expected a JSON list of {count} results")
    return [FrameResult.from_dict(item) for item in data]


# -- service metadata ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ServiceInfo:
    """``GET /metadata``: the model a service runs and the limits it holds requests to."""

    name: str
    sha256: str
    names: Mapping[int, str]
    imgsz: tuple[int, int]  # (height, width) the model takes
    version: str = ""
    max_batch: int = 1
    max_images: int = LIMITS.max_images
    max_upload_bytes: int | None = None  # one request body (YOLO_EDGE_MAX_UPLOAD_BYTES)
    max_image_bytes: int | None = None  # one encoded image
    max_pixels: int | None = None  # per image
    max_request_pixels: int | None = None  # all images of one request together
    extra: Mapping[str, Any] = field(default_factory=dict)  # backend, providers...: informative

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "name": self.name, "sha256": self.sha256,
                "names": {str(k): v for k, v in self.names.items()}, "imgsz": list(self.imgsz),
                "version": self.version, "max_batch": self.max_batch,
                "limits": {"max_images": self.max_images, "max_upload_bytes": self.max_upload_bytes,
                           "max_image_bytes": self.max_image_bytes, "max_pixels": self.max_pixels,
                           "max_request_pixels": self.max_request_pixels, "max_det": LIMITS.max_det}}

    @classmethod
    def from_dict(cls, data: Any) -> "ServiceInfo":
        try:
            limits = data.get("limits") or {}
            imgsz = data["imgsz"]
            known = {"name", "sha256", "names", "imgsz", "version", "max_batch", "limits"}
            return cls(
                name=str(data["name"]), sha256=str(data["sha256"]).lower(),
                names={int(k): str(v) for k, v in (data.get("names") or {}).items()},
                imgsz=(int(imgsz[0]), int(imgsz[1])), version=str(data.get("version", "")),
                max_batch=int(data.get("max_batch", 1)), max_images=int(limits.get("max_images", LIMITS.max_images)),
                max_upload_bytes=_size(limits, "max_upload_bytes"), max_image_bytes=_size(limits, "max_image_bytes"),
                max_pixels=_size(limits, "max_pixels"), max_request_pixels=_size(limits, "max_request_pixels"),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise CloudError(f"/metadata answered {short_repr(data, 200)}: expected a JSON object with name, sha256, "
                             "names and imgsz; is the endpoint a yolo-edge service?") from exc


def _size(limits: Mapping[str, Any], key: str) -> int | None:
    """A limit from ``/metadata``: a positive integer, or None when the service does not say."""
    value = limits.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise ValueError(f"limits.{key} is {value!r}: expected a positive integer")
    return int(value)
