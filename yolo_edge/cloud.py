"""HTTP client for a yolo-edge BentoML service (``bentos/service.py``).

The client turns frames into JPEG uploads, posts them as multipart to ``/detect`` and
turns the JSON answer back into :class:`~yolo_edge.types.Detections` in the caller's
original pixel coordinates, so ``client.detect(img)`` and ``Detector()(img)`` are
interchangeable. It retries what is worth retrying (429/502/503/504, refused
connections) with exponential backoff, jitter and ``Retry-After``, and raises only
:class:`~yolo_edge.errors.CloudError` subclasses.

Wire protocol (what ``bentos/service.py`` speaks)::

    POST /detect   multipart: images=<file> (repeatable), optional form fields
                   conf, iou, max_det (numbers) and classes (JSON list of ints)
                   -> 200 [ {image_shape, names, detections, model: {name, sha256},
                            timing: {queue_ms, decode_ms, inference_ms, server_ms}}, ... ]
                   -> 4xx/5xx {"error": "...", ...}
    GET  /metadata -> {name, sha256, names, imgsz, providers, version, max_batch, ...}
    GET  /readyz   -> 200 once the model is loaded and warmed up, 503 before

>>> with CloudClient("http://127.0.0.1:3000", timeout=5) as client:  # doctest: +SKIP
...     client.wake(wait_s=30)
...     dets = client.detect("bus.jpg", conf=0.3)
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import (
    CloudAuthError,
    CloudError,
    CloudModelMismatchError,
    CloudRequestError,
    CloudTimeoutError,
    CloudUnavailableError,
    ConfigError,
)
from .types import Detections

__all__ = ["CloudClient", "RETRY_STATUS"]

logger = logging.getLogger(__name__)

#: HTTP statuses that mean "not now" rather than "never": worth retrying.
RETRY_STATUS = frozenset({429, 502, 503, 504})
#: Longest single backoff sleep, so a retry never outlives a sensible request budget.
_MAX_BACKOFF_S = 5.0
_READY_TIMEOUT_S = 2.0


class CloudClient:
    """A client for one yolo-edge service endpoint.

    ``downscale=True`` shrinks frames larger than the model's input size before upload
    (the service would letterbox them to that size anyway), which saves bandwidth; boxes
    are scaled back, so results stay in the caller's coordinates. ``expected_sha256``
    makes every response's model hash checked: a different model raises
    :class:`CloudModelMismatchError` unless ``allow_model_mismatch=True``.

    ``session`` is the transport (a ``requests.Session``; tests mount a fake adapter on
    it) and ``sleep`` the clock used between retries.

    >>> client = CloudClient("http://127.0.0.1:3000", token=None, max_retries=1)
    >>> client.endpoint
    'http://127.0.0.1:3000'
    >>> client.close()
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        jpeg_quality: int = 90,
        downscale: bool = True,
        max_retries: int = 2,
        backoff_s: float = 0.2,
        expected_sha256: str | None = None,
        allow_model_mismatch: bool = False,
        session: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint must be an http(s) URL like 'http://127.0.0.1:3000', got {endpoint!r}")
        if not timeout or timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be within 1..100, got {jpeg_quality!r}")
        if int(max_retries) < 0 or backoff_s < 0:
            raise ConfigError(f"max_retries and backoff_s must be >= 0, got {max_retries!r} and {backoff_s!r}")
        import requests  # the [cloud] extra; imported here so `import yolo_edge` stays light

        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self.jpeg_quality = int(jpeg_quality)
        self.downscale = bool(downscale)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.expected_sha256 = expected_sha256.lower() if expected_sha256 else None
        self.allow_model_mismatch = bool(allow_model_mismatch)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        self._info: dict[str, Any] | None = None

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
        deadline = time.monotonic() + max(0.0, float(wait_s))
        while True:
            if self.ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sleep(min(0.5, remaining))

    def info(self) -> dict[str, Any]:
        """GET /metadata: ``name, sha256, names, imgsz, providers, version, max_batch``."""
        resp = self._request("GET", "/metadata")
        data = _json(resp)
        if not isinstance(data, dict) or "sha256" not in data:
            raise CloudError(f"/metadata answered {str(data)[:200]!r}: expected a JSON object with 'sha256'; "
                             "is the endpoint a yolo-edge service?", status_code=resp.status_code)
        self._info = data
        return data

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check the service's model sha256; return its metadata.

        Raises :class:`CloudModelMismatchError` on a mismatch unless the client was made
        with ``allow_model_mismatch=True`` (then it only logs a warning).
        """
        expected = (expected_sha256 or self.expected_sha256 or "").lower()
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
    ) -> Any:
        """Detect in several images with ONE request; ``return_meta`` adds per-image server info.

        With ``return_meta=True`` the result is ``(detections, metas)`` where each meta is
        ``{"model": {"name", "sha256"}, "timing": {"queue_ms", "decode_ms",
        "inference_ms", "server_ms", "roundtrip_ms"}}``.
        """
        if isinstance(images, (str, bytes, np.ndarray)) or not isinstance(images, Sequence):
            raise ConfigError("detect_many expects a list of images; use detect() for a single image")
        if not images:
            return ([], []) if return_meta else []
        imgsz = self._model_imgsz() if self.downscale else None
        uploads = [prepare_upload(img, channels=channels, imgsz=imgsz, quality=self.jpeg_quality) for img in images]
        files = [("images", (f"frame{i}.jpg", up.data, up.content_type)) for i, up in enumerate(uploads)]
        form = _options_form(conf=conf, iou=iou, classes=classes, max_det=max_det)
        start = time.perf_counter()
        resp = self._request("POST", "/detect", files=files, data=form)
        roundtrip_ms = (time.perf_counter() - start) * 1000.0
        items = _json(resp)
        if not isinstance(items, list) or len(items) != len(uploads):
            raise CloudError(f"/detect answered {str(items)[:200]!r}: expected a JSON list of {len(uploads)} results",
                             status_code=resp.status_code)
        dets, metas = [], []
        for item, up in zip(items, uploads):
            model = item.get("model") or {}
            self._check_sha(str(model.get("sha256", "")), str(model.get("name", "?")))
            dets.append(_to_original(Detections.from_dict(item), up.scale, up.shape))
            metas.append({"model": model, "timing": {**(item.get("timing") or {}), "roundtrip_ms": roundtrip_ms}})
        return (dets, metas) if return_meta else dets

    # -- internals -------------------------------------------------------------------
    def _model_imgsz(self) -> tuple[int, int] | None:
        if self._info is None:
            self.info()
        imgsz = (self._info or {}).get("imgsz")
        return (int(imgsz[0]), int(imgsz[1])) if imgsz else None

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

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send with retries; return a 2xx response or raise a CloudError subclass."""
        import requests

        url = self.endpoint + path
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                resp = self._session.request(method, url, headers=self._headers(), timeout=self.timeout, **kwargs)
            except requests.Timeout as exc:  # a slow answer is not retried: it would double the load
                raise CloudTimeoutError(f"{method} {url} took longer than {self.timeout:g} s; "
                                        "raise timeout= or check the service load") from exc
            except requests.ConnectionError as exc:
                failure: CloudError = _unavailable(f"cannot connect to {url}: {exc}; is the service running "
                                                   "(or scaled to zero: call wake())?", None, None)
                failure.__cause__ = exc
            except requests.RequestException as exc:
                raise CloudError(f"{method} {url} failed: {exc}") from exc
            else:
                if resp.status_code < 300:
                    return resp
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                failure = _status_error(method, url, resp, retry_after)
                if resp.status_code not in RETRY_STATUS:
                    raise failure
            if attempt >= self.max_retries:
                raise failure
            delay = self._backoff(attempt)
            if retry_after is not None:
                if retry_after > self.timeout:  # waiting that long helps nobody: let the caller route elsewhere
                    raise failure
                delay = max(delay, retry_after)
            attempt += 1
            logger.info("%s %s: %s; retry %d/%d in %.2f s", method, path, failure, attempt, self.max_retries, delay)
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # full-jitter exponential backoff: spreads a crowd of clients retrying together
        return min(_MAX_BACKOFF_S, self.backoff_s * (2 ** attempt)) * (0.5 + random.random() / 2)


def _options_form(**opts: Any) -> dict[str, str]:
    form: dict[str, str] = {}
    for key, value in opts.items():
        if value is None:
            continue
        if key == "classes":
            form[key] = json.dumps([int(c) for c in value])
        else:
            form[key] = json.dumps(value)
    return form


def _to_original(dets: Detections, scale: tuple[float, float], shape: tuple[int, int] | None) -> Detections:
    """Map boxes from the uploaded frame back to the caller's frame."""
    sx, sy = scale
    if shape is None:
        return dets
    xyxy = dets.xyxy
    if (sx, sy) != (1.0, 1.0) and len(dets):
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


def _unavailable(msg: str, status: int | None, retry_after: float | None) -> CloudUnavailableError:
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
    shape: tuple[int, int]  # (height, width) of the caller's image
    scale: tuple[float, float]  # caller pixels per uploaded pixel, (x, y)


_MAGIC = ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"BM", "image/bmp"),
          (b"RIFF", "image/webp"), (b"GIF8", "image/gif"))


def prepare_upload(image: Any, *, channels: str = "bgr", imgsz: tuple[int, int] | None = None,
                   quality: int = 90) -> _Upload:
    """Encoded bytes to upload for ``image``, shrunk to fit ``imgsz`` (h, w) when given.

    Already-encoded input (bytes or a file path) that needs no shrinking is sent as it
    is: no decode, no second JPEG loss, so the service sees exactly the caller's file.
    """
    from .image import decode_image, encode_image, image_size_from_header, load_image

    frame = None
    if isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
        raw = _read_encoded(image)
        size = image_size_from_header(raw)
        ctype = next((t for magic, t in _MAGIC if raw.startswith(magic)), None)
        if size is not None and ctype is not None and (imgsz is None or (size[1] <= imgsz[0] and size[0] <= imgsz[1])):
            return _Upload(raw, ctype, (int(size[1]), int(size[0])), (1.0, 1.0))
        frame = decode_image(raw)  # raises ImageDecodeError naming the problem
    else:
        frame = load_image(image, channels=channels)  # type: ignore[arg-type]
    h, w = frame.shape[:2]
    scale = (1.0, 1.0)
    if imgsz is not None and (h > imgsz[0] or w > imgsz[1]):
        import cv2

        from .preprocess import letterbox_params

        # the very size and interpolation the service's letterbox would use, so the only
        # difference from sending the full frame is the JPEG re-encode
        nw, nh = letterbox_params((h, w), imgsz).new_unpad
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        scale = (w / nw, h / nh)
    return _Upload(encode_image(frame, ".jpg", quality=quality), "image/jpeg", (h, w), scale)


def _read_encoded(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    from .image import read_image_file

    return read_image_file(image)
