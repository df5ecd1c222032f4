"""HTTP client for a yolo-edge BentoML service (``bentos/service.py``).

The client uploads frames as multipart to ``/detect`` and turns the JSON answer back
into :class:`~yolo_edge.types.Detections` in the caller's original pixel coordinates,
so ``client.detect(img)`` and ``Detector()(img)`` are interchangeable. The request and
the answer are :mod:`yolo_edge.wire`'s, the very code the service uses.

By default the answer *equals* the local one: files and bytes are uploaded as they are,
and arrays are shrunk to the model's input size with the interpolation the service's
letterbox would use (so the model sees the same pixels) and sent as lossless PNG.
``jpeg_quality=`` trades that for 4-5x smaller uploads: arrays (and files larger than
the model input) go as JPEG of that quality, and detections may then differ from the
local ones (on ``bus.jpg`` at quality 90, the bus was lost). ``downscale=False`` sends
arrays at full size.

It retries what is safe to retry (429/502/503/504, connections refused or timed out
before the request was sent, and read timeouts of GET requests) with exponential backoff,
jitter and ``Retry-After``, keeps one connection pool and one ``/metadata`` lookup per
client, and raises only :class:`~yolo_edge.errors.CloudError` subclasses.

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

import email.utils
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .endpoint import backoff_delay, check_client_args, frame_deadlines, image_list, poll_ready, transport_error
from .endpoint_url import HTTP_SCHEMES, check_endpoint_url
from .errors import (
    CloudAuthError,
    CloudError,
    CloudFrameError,
    CloudModelMismatchError,
    CloudRequestError,
    CloudTimeoutError,
    CloudUnavailableError,
    ConfigError,
)
from .image import MAX_BYTES, MAX_PIXELS, check_channels
from .types import Detections
from .wire import (
    BUDGETS_FIELD,
    LIMITS,
    DetectOptions,
    FrameResult,
    FrameStatus,
    ModelRef,
    ServiceInfo,
    _is_int,
    budgets_to_form,
    decode_results,
    short_repr,
)

__all__ = ["CloudClient", "RETRY_STATUS"]

logger = logging.getLogger(__name__)

#: HTTP statuses that mean "not now" rather than "never": worth retrying.
RETRY_STATUS = frozenset({429, 502, 503, 504})
#: Longest single backoff sleep, so a retry never outlives a sensible request budget.
_MAX_BACKOFF_S = 5.0
_READY_TIMEOUT_S = 2.0
_IDEMPOTENT = frozenset({"GET", "HEAD"})


class CloudClient:
    """A client for one yolo-edge service endpoint; safe to share between threads.

    ``jpeg_quality`` (1-100) makes uploads lossy and small; by default (None) they are
    lossless and the answers equal local ones (see the module docstring for what each
    setting does to the answers). ``downscale`` shrinks arrays larger than the model
    input before upload (exact: the service would shrink them the same way).
    ``expected_sha256`` makes every response's model hash checked: a different model
    raises :class:`CloudModelMismatchError` unless ``allow_model_mismatch=True``.

    ``session`` is the transport (a ``requests.Session``; tests mount a fake adapter on
    it) and ``sleep`` the clock used between retries.

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
        from .detector import check_sha256

        check_endpoint_url(endpoint, what="CloudClient endpoint", schemes=HTTP_SCHEMES)
        if not isinstance(endpoint, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", endpoint):
            raise ConfigError(f"endpoint must be an http(s) URL like 'http://127.0.0.1:3000', got {short_repr(endpoint)}")
        self.timeout, self.backoff_s = check_client_args(
            token=token, timeout=timeout, max_retries=max_retries, backoff_s=backoff_s,
            allow_model_mismatch=allow_model_mismatch, sleep=sleep)
        if jpeg_quality is not None and (not _is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100):
            raise ConfigError(f"jpeg_quality must be None (lossless) or an integer within 1..100, got {short_repr(jpeg_quality)}")
        if not isinstance(downscale, bool):
            raise ConfigError(f"downscale must be True or False, got {short_repr(downscale)}")
        import requests  # the [cloud] extra; imported here so `import yolo_edge` stays light

        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.downscale = downscale
        self.max_retries = int(max_retries)
        self.expected_sha256 = check_sha256(expected_sha256)
        self.allow_model_mismatch = allow_model_mismatch
        self._owns_session = session is None
        if session is None:
            from .upload_timing import timed_session

            session = timed_session()  # a plain requests.Session that can also say when an upload left
        self._session = session
        self._sleep = sleep
        self._service: ServiceInfo | None = None
        self._info_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._answered: ModelRef | None = None  # the model of the latest answer

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session if this client created it. Idempotent."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "CloudClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CloudClient({self.endpoint!r}, auth={'on' if self.token else 'off'})"

    # -- health ----------------------------------------------------------------------
    def ready(self) -> bool:
        """GET /readyz once with a short timeout; False on any failure, never raises."""
        import requests

        try:
            resp = self._session.get(
                self.endpoint + "/readyz", headers=self._headers(), timeout=min(_READY_TIMEOUT_S, self.timeout)
            )
        except requests.RequestException as exc:
            logger.debug("readyz %s failed: %s", self.endpoint, exc)
            return False
        return resp.status_code == 200

    def wake(self, wait_s: float = 0) -> bool:
        """Ping /readyz so a scaled-to-zero deployment starts; optionally wait until ready.

        Returns whether the service answered ready. With ``wait_s=0`` this is one
        request (the wake-up signal); with ``wait_s>0`` it polls every 0.5 s until the
        service is ready or ``wait_s`` has passed.
        """
        return poll_ready(self.ready, wait_s, self._sleep)

    def info(self) -> dict[str, Any]:
        """GET /metadata: ``name, sha256, names, imgsz, providers, version, max_batch, limits``.

        Every call asks the service (and refreshes what the client knows of it).
        """
        resp = self._request("GET", "/metadata")
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
        from .detector import check_sha256

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
        """Detect in several images, one request per ``LIMITS.max_images`` of them.

        A frame the service could not process, or that expired (see ``budgets_s`` in
        :meth:`detect_frames`), raises :class:`CloudFrameError` (use :meth:`detect_frames`
        to get every frame's own status instead). With ``return_meta=True`` the result is
        ``(detections, metas)`` where each meta is ``{"model": {"name", "sha256"},
        "timing": {"queue_ms", "decode_ms", "inference_ms", "server_ms", "batch_frames",
        "roundtrip_ms"}}``.
        """
        if not isinstance(return_meta, bool):
            raise ConfigError(f"return_meta must be True or False, got {short_repr(return_meta)}")
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
    ) -> list[FrameResult]:
        """Like :meth:`detect_many`, but every frame's own :class:`~yolo_edge.wire.FrameResult`.

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
        the time in the service.
        """
        images = image_list(images, "detect_frames")
        if jpeg_qualities is not None:
            jpeg_qualities = list(jpeg_qualities)
            if len(jpeg_qualities) != len(images) or not all(
                    q is None or (_is_int(q) and 1 <= q <= 100) for q in jpeg_qualities):
                raise ConfigError(f"jpeg_qualities must give one quality per image ({len(images)}), each None "
                                  f"(lossless) or an integer within 1..100, got {short_repr(jpeg_qualities)}")
        if on_uploaded is not None and not callable(on_uploaded):
            raise ConfigError(f"on_uploaded must be a function of the list of encoded sizes, got {short_repr(on_uploaded)}")
        return self._detect(images, conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels,
                            budgets_s=budgets_s, qualities=jpeg_qualities, on_uploaded=on_uploaded)[0]

    # -- internals -------------------------------------------------------------------
    def _detect(self, images: list[Any], *, channels: str, budgets_s: Any = None,
                qualities: list[int | None] | None = None, on_uploaded: Callable[..., None] | None = None,
                **options: Any) -> tuple[list[FrameResult], list[float]]:
        check_channels(channels)
        form = DetectOptions(**options).to_form()
        deadlines = frame_deadlines(budgets_s, len(images), time.monotonic())
        results: list[FrameResult | None] = [None] * len(images)
        roundtrips = [0.0] * len(images)
        pending = list(range(len(images)))
        while pending:
            now = time.monotonic()
            for i in pending:
                late = None if deadlines is None else deadlines[i]
                if late is not None and late <= now:
                    results[i] = self._not_sent(now - late)
            pending = [i for i in pending if results[i] is None]
            chunk, pending = pending[:LIMITS.max_images], pending[LIMITS.max_images:]
            if chunk:
                self._send(images, chunk, deadlines, form, channels, results, roundtrips, qualities, on_uploaded)
        return [r for r in results if r is not None], roundtrips

    def _send(self, images: list[Any], chunk: list[int], deadlines: list[float | None] | None, form: dict[str, str],
              channels: str, results: list[FrameResult | None], roundtrips: list[float],
              qualities: list[int | None] | None = None, on_uploaded: Callable[..., None] | None = None) -> None:
        """One request for the frames ``chunk``; their results go into ``results``."""
        quality = [self.jpeg_quality if qualities is None else qualities[i] for i in chunk]
        # the model's input size is needed only to shrink something: arrays, or files when lossy
        shrink = self.downscale and (any(q is not None for q in quality) or
                                     not all(_is_encoded(images[i]) for i in chunk))
        imgsz = self.service_info().imgsz if shrink else None
        uploads = [prepare_upload(images[i], channels=channels, imgsz=imgsz, jpeg_quality=q)
                   for i, q in zip(chunk, quality)]
        files = [("images", (f"frame{n}.{up.suffix}", up.data, up.content_type)) for n, up in enumerate(uploads)]
        last: float | None = None
        fields: dict[str, str] | Callable[[], dict[str, str]] = form
        if deadlines is not None:
            chunk_deadlines = [deadlines[i] for i in chunk]

            def with_budgets() -> dict[str, str]:  # at each try: what is left of each frame's budget then
                now = time.monotonic()
                return {**form, BUDGETS_FIELD: budgets_to_form(
                    [None if d is None else max(0.0, d - now) for d in chunk_deadlines])}

            fields = with_budgets
            if None not in chunk_deadlines:
                last = max(chunk_deadlines)  # type: ignore[type-var]
        t0 = time.perf_counter()
        if on_uploaded is None:
            resp = self._request("POST", "/detect", files=files, data=fields, deadline=last)
        else:
            from .upload_timing import on_acknowledged

            sizes = [len(up.data) for up in uploads]
            with on_acknowledged(lambda rtt_s: on_uploaded(sizes, rtt_s)):
                resp = self._request("POST", "/detect", files=files, data=fields, deadline=last)
        roundtrip_ms = (time.perf_counter() - t0) * 1000.0
        for i, result, up in zip(chunk, decode_results(_json(resp), len(uploads)), uploads):
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
        expected = expected or self.expected_sha256
        if not expected or got.lower() == expected:
            return
        msg = (f"the service runs model {name!r} with sha256 {got[:12] or '?'}..., expected {expected[:12]}...: "
               "deploy the same model file, or pass allow_model_mismatch=True to accept it")
        if self.allow_model_mismatch:
            logger.warning("%s", msg)
            return
        raise CloudModelMismatchError(msg)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, *, data: Any = None, deadline: float | None = None,
                 **kwargs: Any) -> Any:
        """Send with retries; return a 2xx response or raise a CloudError subclass.

        ``data`` may be a function giving the form fields at each try; no retry is made
        that could not start before ``deadline`` (``time.monotonic()``).
        """
        import requests

        url = self.endpoint + path
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                resp = self._session.request(method, url, headers=self._headers(), timeout=self.timeout,
                                             data=data() if callable(data) else data, **kwargs)
            except requests.RequestException as exc:
                # one line naming the cause; the library's chain stays on failure.original
                failure: CloudError = transport_error(method, url, exc, timeout_s=self.timeout, hint=_HINT)
                if not isinstance(failure, CloudUnavailableError) and not (
                        isinstance(failure, CloudTimeoutError) and method in _IDEMPOTENT):
                    raise failure from None  # a slow answer to a POST is not retried: it would double the load
            else:
                if resp.status_code < 300:
                    return resp
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                failure = _status_error(method, url, resp, retry_after)
                if resp.status_code not in RETRY_STATUS:
                    raise failure
            if attempt >= self.max_retries:
                raise failure
            delay = backoff_delay(self.backoff_s, attempt, _MAX_BACKOFF_S)
            if retry_after is not None:
                if retry_after > self.timeout:  # waiting that long helps nobody: let the caller route elsewhere
                    raise failure
                delay = max(delay, retry_after)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise failure  # every frame would expire before the retry: say the service was unavailable
            attempt += 1
            logger.info("%s %s: %s; retry %d/%d in %.2f s", method, path, failure, attempt, self.max_retries, delay)
            self._sleep(delay)



def _replace_detections(result: FrameResult, dets: Detections) -> FrameResult:
    return FrameResult(status=result.status, model=result.model, timing=result.timing, detections=dets)


def _to_original(dets: Detections, scale: tuple[float, float], shape: tuple[int, int]) -> Detections:
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


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise CloudError(f"{resp.url} answered non-JSON ({resp.headers.get('Content-Type')}): "
                         f"{resp.text[:200]!r}", status_code=resp.status_code) from exc


def _server_message(resp: Any) -> str:
    """The service's error text: {"error": ...}, BentoML's [{"error": ...}], a proxy's page, or raw text."""
    try:
        data = resp.json()
    except ValueError:
        return _proxy_page_message(resp) or resp.text[:300].strip() or resp.reason or ""
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        data = data[0]
    if isinstance(data, Mapping):
        msg = str(data.get("error", ""))
        detail = data.get("detail")
        return f"{msg}: {detail}" if detail else msg
    return str(data)[:300]


#: What a status means when a proxy (nginx, a cloud load balancer) answered it with its own page.
_PROXY_HINTS = {
    413: "the proxy's body limit (nginx: client_max_body_size) is below this upload: send fewer or "
         "smaller images (CloudClient(downscale=True)), or raise the limit to the service's YOLO_EDGE_MAX_UPLOAD_BYTES",
    502: "no replica behind the proxy answered: check that the replicas are running and ready",
    503: "no replica behind the proxy is available: check that the replicas are running and ready",
    504: "the replicas behind the proxy did not answer in time: check their load, or raise the proxy's timeouts",
}
_TITLE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)


def _proxy_page_message(resp: Any) -> str | None:
    """A proxy's HTML error page (nginx's '502 Bad Gateway') as one line, not raw HTML; None otherwise."""
    text = resp.text.lstrip()
    looks_html = text[:15].lower().startswith(("<html", "<!doctype"))
    if not looks_html and "html" not in resp.headers.get("Content-Type", "").lower():
        return None
    title = _TITLE.search(text)
    what = title.group(1) if title else f"{resp.status_code} {resp.reason or ''}".strip()
    server = resp.headers.get("Server") or "a proxy"
    hint = _PROXY_HINTS.get(resp.status_code)
    return f"{what} (an HTML page from {server} in front of the service, not the service itself)" + (
        f"; {hint}" if hint else "")


_HINT = "is the service running at that address (or scaled to zero: call wake())?"


def _unavailable(msg: str, status: int | None = None, retry_after: float | None = None) -> CloudUnavailableError:
    return CloudUnavailableError(msg, status_code=status, retry_after_s=retry_after)


def _status_error(method: str, url: str, resp: Any, retry_after: float | None) -> CloudError:
    code = resp.status_code
    msg = f"{method} {url} -> {code}: {_server_message(resp)}"
    if code in (401, 403):
        return CloudAuthError(msg + " (check the token= given to CloudClient)", status_code=code)
    if code in RETRY_STATUS:
        return _unavailable(msg, code, retry_after)
    if 400 <= code < 500:
        return CloudRequestError(msg, status_code=code)
    return CloudError(msg, status_code=code)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class _Upload:
    data: bytes
    content_type: str
    suffix: str  # file name extension to upload under
    shape: tuple[int, int]  # (height, width) of the caller's image
    scale: tuple[float, float]  # caller pixels per uploaded pixel, (x, y)


def _is_encoded(image: Any) -> bool:
    return isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike))


def prepare_upload(image: Any, *, channels: str = "bgr", imgsz: tuple[int, int] | None = None,
                   jpeg_quality: int | None = None, max_bytes: int = MAX_BYTES) -> _Upload:
    """Encoded bytes to upload for ``image``, shrunk to fit ``imgsz`` (h, w) when given.

    Already-encoded input (bytes or a file path) is sent as it is (after its header is
    checked, so a bomb or a format the service refuses fails here) unless
    ``jpeg_quality`` asks for a smaller, lossy upload and the image is larger than
    ``imgsz``. Arrays are resized exactly as the service's letterbox would resize them
    and sent as PNG (lossless) or, with ``jpeg_quality``, as JPEG.
    """
    from .image import decode_image, encode_image, load_image, read_image_file
    from .image_header import read_header

    if _is_encoded(image):
        raw = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else read_image_file(image, max_bytes=max_bytes)
        header = read_header(raw)
        from .image import check_pixels

        check_pixels(header.width, header.height, MAX_PIXELS)
        fits = imgsz is None or (header.height <= imgsz[0] and header.width <= imgsz[1])
        if jpeg_quality is None or fits:
            return _Upload(raw, header.mime, header.format, (header.height, header.width), (1.0, 1.0))
        frame = decode_image(raw, max_bytes=max_bytes)
    else:
        frame = load_image(image, channels=channels)  # type: ignore[arg-type]
    h, w = frame.shape[:2]
    scale = (1.0, 1.0)
    if imgsz is not None and (h > imgsz[0] or w > imgsz[1]):
        import cv2

        from .preprocess import letterbox_params

        # the very size and interpolation the service's letterbox would use: the model
        # then sees the same pixels as if the full frame had been sent
        nw, nh = letterbox_params((h, w), imgsz).new_unpad
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        scale = (w / nw, h / nh)
    if jpeg_quality is None:
        return _Upload(encode_image(frame, ".png"), "image/png", "png", (h, w), scale)
    return _Upload(encode_image(frame, ".jpg", quality=jpeg_quality), "image/jpeg", "jpg", (h, w), scale)
