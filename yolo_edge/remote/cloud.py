"""HTTP client for a yolo-edge BentoML service (``bentos/service.py``).

The client uploads frames as multipart to ``/detect`` and turns the JSON answer back
into :class:`~yolo_edge.types.Detections` in the caller's original pixel coordinates,
so ``client.detect(img)`` and ``Detector()(img)`` are interchangeable. The request and
the answer are :mod:`yolo_edge.remote.wire`'s, the very code the service uses.

By default the answer *equals* the local one: files and bytes are uploaded as they are,
and arrays are shrunk to the model's input size with the interpolation the service's
letterbox would use (so the model sees the same pixels) and sent as lossless PNG.
``jpeg_quality=`` trades that for 4-5x smaller uploads: arrays (and files larger than
the model input) go as JPEG of that quality, and detections may then differ from the
local ones (on ``bus.jpg`` at quality 90, the bus was lost). ``downscale=False`` sends
arrays at full size.

Requests travel over :class:`~yolo_edge.remote.transport.HttpTransport`, the transport the
OIP client uses too: it retries what is safe to retry (429/502/503/504, connections
refused or timed out before the request was sent, and read timeouts of GET requests) with
capped exponential backoff, jitter and ``Retry-After``, and raises only
:class:`~yolo_edge.errors.CloudError` subclasses. The client keeps one connection pool and
one ``/metadata`` lookup.

Before its first upload the client asks the service for the sizes it takes (``GET
/metadata``, once per client): a batch is split into as many requests as those take, a
file above them is shrunk to the model's input like an array (with ``downscale``), and a
frame that fits no request raises :class:`~yolo_edge.errors.ImageTooLargeError` saying the
limit and how to fix it, before anything is uploaded, rather than the service's 413.

``budgets_s=`` gives each frame the seconds it has left. They travel with the request
(recomputed at each try, so waiting spends them), the service answers a frame that cannot
be answered by its deadline as ``expired`` without computing it, and a frame
whose budget is spent before it could be sent is not uploaded at all: it is answered
``expired`` here (no request at all when every frame is). A retry is not made when it
could not start before the last frame's deadline.

>>> with CloudClient("http://127.0.0.1:3000", timeout=5) as client:  # doctest: +SKIP
...     client.wake(wait_s=30)
...     dets = client.detect("bus.jpg", conf=0.3)
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from typing import Any, Callable, Sequence

from ..errors import CloudError, CloudFrameError, CloudModelMismatchError, ConfigError
from ..image import check_channels
from ..types import Detections
from .cloud_upload import Upload, check_fits, check_qualities, fit_request, prepare_upload, service_limits
from .cloud_upload import to_original as _to_original  # its old name, for the benchmarks
from .endpoint_url import HTTP_SCHEMES, check_endpoint_url
from .transport import RETRY_STATUS, HttpTransport, RemoteClient, RetryPolicy, check_client_args
from .values import check_flag, is_int, short_repr
from .wire import (
    BUDGETS_FIELD,
    DetectOptions,
    FrameResult,
    FrameStatus,
    ModelRef,
    ServiceInfo,
    budgets_to_form,
    decode_results,
    frame_deadlines,
    image_list,
    unexpired,
)

__all__ = ["CloudClient", "RETRY_STATUS"]

logger = logging.getLogger(__name__)

_HINT = "is the service running at that address (or scaled to zero: call wake())?"


class CloudClient(RemoteClient):
    """A client for one yolo-edge service endpoint; safe to share between threads.

    ``jpeg_quality`` (1-100) makes uploads lossy and small; by default (None) they are
    lossless and the answers equal local ones (see the module docstring for what each
    setting does to the answers). ``downscale`` shrinks arrays larger than the model
    input before upload (exact: the service would shrink them the same way).
    ``expected_sha256`` makes every response's model hash checked: a different model
    raises :class:`CloudModelMismatchError` unless ``allow_model_mismatch=True``.

    ``session`` is the ``requests.Session`` the transport sends with (tests mount a fake
    adapter on it) and ``sleep`` what waits between retries.

    >>> client = CloudClient("http://127.0.0.1:3000", token=None, max_retries=1)
    >>> client.endpoint
    'http://127.0.0.1:3000'
    >>> client.close()
    """

    #: :meth:`detect_frames` takes each frame's encoding and reports when an upload has left
    upload_encodings = True

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        jpeg_quality: int | None = None,
        downscale: bool = True,
        max_retries: int = 2,
        backoff_s: float = 0.2,
        expected_sha256: str | None = None,
        allow_model_mismatch: bool = False,
        session: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from ..detector import check_sha256

        check_endpoint_url(endpoint, what="CloudClient endpoint", schemes=HTTP_SCHEMES)
        if not isinstance(endpoint, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", endpoint):
            raise ConfigError(f"endpoint must be an http(s) URL like 'http://127.0.0.1:3000', got {short_repr(endpoint)}")
        self.timeout, self.backoff_s = check_client_args(
            token=token, timeout=timeout, max_retries=max_retries, backoff_s=backoff_s,
            allow_model_mismatch=allow_model_mismatch, sleep=sleep)
        if jpeg_quality is not None and (not is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100):
            raise ConfigError(f"jpeg_quality must be None (lossless) or an integer within 1..100, got {short_repr(jpeg_quality)}")
        check_flag(downscale, "downscale")
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.downscale = downscale
        self.max_retries = int(max_retries)
        self.expected_sha256 = check_sha256(expected_sha256)
        self.allow_model_mismatch = allow_model_mismatch
        self._transport = HttpTransport(self.endpoint, client="CloudClient", hint=_HINT, token=token,
                                        timeout=self.timeout, session=session, sleep=sleep,
                                        retry=RetryPolicy(max_retries=self.max_retries, backoff_s=self.backoff_s))
        self._sleep = sleep
        self._service: ServiceInfo | None = None
        self._info_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._answered: ModelRef | None = None  # the model of the latest answer

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session if this client created it. Idempotent."""
        self._transport.close()

    def __repr__(self) -> str:
        return f"CloudClient({self.endpoint!r}, auth={'on' if self.token else 'off'})"

    # -- health ----------------------------------------------------------------------
    def ready(self) -> bool:
        """GET /readyz once with a short timeout; False on any failure, never raises."""
        return self._transport.probe("/readyz")

    def info(self) -> dict[str, Any]:
        """GET /metadata: ``name, sha256, names, imgsz, providers, version, max_batch, limits``.

        Every call asks the service (and refreshes what the client knows of it).
        """
        resp = self._transport.request("GET", "/metadata")
        data = _json(resp)
        service = ServiceInfo.from_dict(data)
        with self._info_lock:
            self._service = service
        return data

    def service_info(self) -> ServiceInfo:
        """What the service runs, asked once per client (``/metadata``) and then remembered."""
        with self._lookup_lock:  # concurrent first callers wait for one lookup, not one each
            if self._service is None:
                self.info()
            assert self._service is not None  # set by info()
            return self._service

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check the service's model sha256; return its metadata.

        Raises :class:`CloudModelMismatchError` on a mismatch unless the client was made
        with ``allow_model_mismatch=True`` (then it only logs a warning).
        """
        from ..detector import check_sha256

        expected = check_sha256(expected_sha256) or self.expected_sha256
        if not expected:
            raise ConfigError("verify_model needs the expected sha256: pass it, or create the client "
                              "with expected_sha256=Detector().info.sha256")
        info = self.info()
        self._check_sha(str(info.get("sha256", "")), str(info.get("name", "?")), expected)
        return info

    # -- detection -------------------------------------------------------------------
    def detect(
        self,
        image: Any,
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
    ) -> Detections:
        """Detect objects in one image (path, bytes, numpy HxWx3, PIL) on the service.

        Options left as None use the service's defaults. Boxes are in ``image``'s own
        pixel coordinates even when the frame was downscaled for upload.
        """
        return self.detect_many([image], conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)[0]

    def detect_many(
        self,
        images: Sequence[Any],
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
        return_meta: bool = False,
        budgets_s: Sequence[float | None] | float | None = None,
    ) -> Any:
        """Detect in several images, in as few requests as the service's limits allow.

        A frame the service could not process, or that expired (see ``budgets_s`` in
        :meth:`detect_frames`), raises :class:`CloudFrameError` (use :meth:`detect_frames`
        to get every frame's own status instead). With ``return_meta=True`` the result is
        ``(detections, metas)`` where each meta is ``{"model": {"name", "sha256"},
        "timing": {"queue_ms", "decode_ms", "inference_ms", "server_ms", "batch_frames",
        "roundtrip_ms"}}``.
        """
        check_flag(return_meta, "return_meta")
        results, roundtrips = self._detect(image_list(images, "detect_many"), conf=conf, iou=iou, classes=classes,
                                           max_det=max_det, channels=channels, budgets_s=budgets_s)
        for i, result in enumerate(results):
            if not result.ok:
                raise CloudFrameError(f"the service did not detect in image {i} ({result.status.value}): {result.error}",
                                      index=i, frame_status=result.status.value)
        dets = [r.detections for r in results]
        if not return_meta:
            return dets
        metas = [{"model": {"name": r.model.name, "sha256": r.model.sha256},
                  "timing": {**r.timing.to_dict(), "roundtrip_ms": rt}} for r, rt in zip(results, roundtrips)]
        return dets, metas

    def detect_frames(
        self,
        images: Sequence[Any],
        *,
        budgets_s: Sequence[float | None] | float | None = None,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
        jpeg_qualities: Sequence[int | None] | None = None,
        on_uploaded: Callable[[list[int], float | None], None] | None = None,
        on_not_sent: Callable[[int], None] | None = None,
        on_encoded: Callable[[list[int]], None] | None = None,
    ) -> list[FrameResult]:
        """Like :meth:`detect_many`, but every frame's own :class:`~yolo_edge.remote.wire.FrameResult`.

        A frame the service could not process, or that expired, is returned with its
        status and reason instead of failing the others; detections of OK frames are in
        the caller's coordinates. ``budgets_s`` is each frame's remaining time in seconds
        (one number for all, or one per image, None for no deadline): a frame whose
        budget is spent before it is sent is not uploaded, and one whose deadline passes
        in the service's queue is not computed; both come back with status EXPIRED.

        ``jpeg_qualities`` chooses each frame's upload encoding (None: lossless PNG, 1-100:
        JPEG of that quality), overriding the client's ``jpeg_quality``. ``on_uploaded`` is
        called in this thread with the encoded size of each frame of a request, in order,
        once the service has acknowledged the request's last byte (when the upload has
        left the device; once per try): the caller can then tell the time on the wire from
        the time in the service. ``on_not_sent`` is called with the index of each frame that
        is not uploaded because its budget ran out first (its result is EXPIRED too, but
        the service never saw it). ``on_encoded`` is called once, before anything is
        uploaded, with each frame's encoded size in bytes (0 for a frame not uploaded):
        the caller can plan the upload's time on its link from the real bytes.
        """
        images = image_list(images, "detect_frames")
        jpeg_qualities = check_qualities(jpeg_qualities, len(images))
        for name, fn, of in (("on_uploaded", on_uploaded, "the list of encoded sizes"),
                             ("on_not_sent", on_not_sent, "a frame's index"),
                             ("on_encoded", on_encoded, "the list of encoded sizes")):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be a function of {of}, got {short_repr(fn)}")
        return self._detect(images, conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels,
                            budgets_s=budgets_s, qualities=jpeg_qualities, on_uploaded=on_uploaded,
                            on_not_sent=on_not_sent, on_encoded=on_encoded)[0]

    # -- internals -------------------------------------------------------------------
    def _detect(self, images: list[Any], *, channels: str, budgets_s: Any = None,
                qualities: list[int | None] | None = None, on_uploaded: Callable[..., None] | None = None,
                on_not_sent: Callable[[int], None] | None = None, on_encoded: Callable[[list[int]], None] | None = None,
                **options: Any) -> tuple[list[FrameResult], list[float]]:
        """Every frame's result: frames not expired are encoded, checked against the service's
        limits (all of them, before anything is uploaded), and sent in as many requests as
        those limits take."""
        check_channels(channels)
        form = DetectOptions(**options).to_form()
        deadlines = frame_deadlines(budgets_s, len(images), time.monotonic())
        results: list[FrameResult | None] = [None] * len(images)
        roundtrips = [0.0] * len(images)

        def not_sent(i: int, late_s: float) -> FrameResult:
            if on_not_sent is not None:
                on_not_sent(i)
            return self._not_sent(late_s)

        pending = unexpired(range(len(images)), deadlines, results, time.monotonic(), not_sent)
        uploads: dict[int, Upload] = {}
        if pending:
            info = self.service_info()
            limits = service_limits(info)
            for i in pending:
                quality = self.jpeg_quality if qualities is None else qualities[i]
                uploads[i] = prepare_upload(images[i], channels=channels, imgsz=info.imgsz if self.downscale else None,
                                            jpeg_quality=quality, limits=limits)
                check_fits(i, uploads[i], _form_fields(form, deadlines, [i]), limits, self.endpoint)
            pending = unexpired(pending, deadlines, results, time.monotonic(), not_sent)  # encoding took time
        if on_encoded is not None:
            going = set(pending)
            on_encoded([len(uploads[i].data) if i in going else 0 for i in range(len(images))])
        while pending:
            head = pending[:limits.max_images]
            # each frame fits a request alone (checked above): at least one goes, whatever the others
            count = max(1, fit_request([(len(uploads[i].data), uploads[i].pixels) for i in head],
                                       _form_fields(form, deadlines, head), limits))
            self._send(pending[:count], uploads, deadlines, form, results, roundtrips, on_uploaded)
            pending = unexpired(pending[count:], deadlines, results, time.monotonic(), not_sent)
        return [r for r in results if r is not None], roundtrips

    def _send(self, chunk: list[int], uploads: dict[int, Upload], deadlines: list[float | None] | None,
              form: dict[str, str], results: list[FrameResult | None], roundtrips: list[float],
              on_uploaded: Callable[..., None] | None = None) -> None:
        """One request for the frames ``chunk``; their results go into ``results``."""
        sent = [uploads[i] for i in chunk]
        files = [("images", (f"frame{n}.{up.suffix}", up.data, up.content_type)) for n, up in enumerate(sent)]
        last: float | None = None
        if deadlines is not None and None not in (chunk_deadlines := [deadlines[i] for i in chunk]):
            last = max(chunk_deadlines)  # type: ignore[type-var]

        def fields() -> dict[str, Any]:  # at each try: what is left of each frame's budget then
            return {"data": _form_fields(form, deadlines, chunk)}

        from .upload_timing import on_acknowledged

        sizes = [len(up.data) for up in sent]
        t0 = time.perf_counter()
        with contextlib.nullcontext() if on_uploaded is None else on_acknowledged(lambda rtt: on_uploaded(sizes, rtt)):
            resp = self._transport.request("POST", "/detect", files=files, prepare=fields, deadline=last)
        roundtrip_ms = (time.perf_counter() - t0) * 1000.0
        for i, result, up in zip(chunk, decode_results(_json(resp), len(sent)), sent):
            self._check_sha(result.model.sha256, result.model.name)
            self._answered = result.model
            if result.detections is not None:
                result = _replace_detections(result, _to_original(result.detections, up.scale, up.shape))
            results[i] = result
            roundtrips[i] = roundtrip_ms

    def _not_sent(self, late_s: float) -> FrameResult:
        """The EXPIRED result of a frame whose budget ran out before it could be sent."""
        service = self._service
        model = self._answered or (ModelRef(service.name, service.sha256) if service is not None
                                   else ModelRef("?", self.expected_sha256 or ""))
        return FrameResult(status=FrameStatus.EXPIRED, model=model,
                           error=f"its budget ran out {late_s * 1e3:.1f} ms before it could be sent: not uploaded")

    def _check_sha(self, got: str, name: str, expected: str | None = None) -> None:
        _check_model(got, name, expected or self.expected_sha256, self.allow_model_mismatch)


def _form_fields(form: dict[str, str], deadlines: list[float | None] | None, chunk: list[int]) -> dict[str, str]:
    """The form fields of a request for ``chunk``, with each frame's budget as it is left now."""
    if deadlines is None:
        return form
    now = time.monotonic()
    return {**form, BUDGETS_FIELD: budgets_to_form(
        [None if deadlines[i] is None else max(0.0, deadlines[i] - now) for i in chunk])}  # type: ignore[operator]


def _check_model(got: str, name: str, expected: str | None, allow_mismatch: bool) -> None:
    """Raise CloudModelMismatchError (or only log it, when allowed) if ``got`` is not the ``expected`` sha256."""
    if not expected or got.lower() == expected:
        return
    msg = (f"the service runs model {name!r} with sha256 {got[:12] or '?'}..., expected {expected[:12]}...: "
           "deploy the same model file, or pass allow_model_mismatch=True to accept it")
    if allow_mismatch:
        logger.warning("%s", msg)
        return
    raise CloudModelMismatchError(msg)


def _replace_detections(result: FrameResult, dets: Detections) -> FrameResult:
    return FrameResult(status=result.status, model=result.model, timing=result.timing, detections=dets)


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise CloudError(f"{resp.url} answered non-JSON ({resp.headers.get('Content-Type')}): "
                         f"{resp.text[:200]!r}", status_code=resp.status_code) from exc
