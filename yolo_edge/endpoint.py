"""What every remote detection endpoint offers, whichever server is behind it.

:class:`Endpoint` is the small interface the SDK's ``detect(endpoint=...)`` and the
agent's endpoint pool use, satisfied by :class:`~yolo_edge.cloud.CloudClient` (a
yolo-edge BentoML service) and :class:`~yolo_edge.oip.OipClient` (Triton, KServe,
OpenVINO Model Server). :func:`open_endpoint` picks the client from the URL:

==================================================  ==============================
``http://HOST:PORT``, ``https://...``                a yolo-edge service (CloudClient)
``oip+http://HOST:PORT/v2/models/NAME[/versions/V]`` an Open Inference Protocol model (OipClient)
==================================================  ==============================

The agent calls :meth:`Endpoint.detect_frames`: one result per frame, each with its own
status (``ok``, ``expired``: its deadline passed before it was computed, ``error``) and
the model that answered it, and every frame's remaining budget on the wire.

>>> client = open_endpoint("http://127.0.0.1:3000")
>>> isinstance(client, Endpoint), type(client).__name__
(True, 'CloudClient')
>>> client.close()
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import random
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import CloudError, CloudTimeoutError, CloudUnavailableError, ConfigError
from .wire import _is_int, check_budgets, check_seconds, short_repr

if TYPE_CHECKING:
    from .wire import FrameResult

__all__ = ["Endpoint", "open_endpoint", "client_options", "poll_ready", "check_client_args", "image_list",
           "frame_deadlines", "backoff_delay", "why_unreachable", "transport_error"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Endpoint(Protocol):
    """A remote detector: health, model identity, batched detection."""

    #: the URL it was opened with, for logs and metrics labels
    endpoint: str

    def ready(self) -> bool:
        """One quick readiness probe; False on any failure, never raises."""
        ...

    def wake(self, wait_s: float = 0) -> bool:
        """Probe readiness (waking a scaled-to-zero deployment), polling up to ``wait_s``."""
        ...

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check the served model's sha256; raise CloudModelMismatchError when it differs."""
        ...

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
        """Detections for ``images`` (and per-image ``{"model", "timing"}`` metas with ``return_meta``)."""
        ...

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
    ) -> "list[FrameResult]":
        """One :class:`~yolo_edge.wire.FrameResult` per image, in order, each with its own status.

        ``budgets_s`` is each frame's remaining time in seconds (one number for all, one
        per image, or None: no deadline). A frame whose budget is spent (<= 0) is not
        sent; one whose deadline passes on the server before it is computed comes back
        EXPIRED, not computed: an outcome, not an error, and no fault of the endpoint.
        OK results carry detections in the caller's coordinates. ``result.model``
        carries the served model's sha256. Failures of the endpoint itself (unreachable,
        overloaded, another model) raise :class:`~yolo_edge.errors.CloudError` subclasses.
        """
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


def open_endpoint(url: str, *, model: str | os.PathLike | None = None, **options: Any) -> Endpoint:
    """The client for ``url``: an :class:`~yolo_edge.oip.OipClient` for ``oip+http(s)://``, else a CloudClient.

    ``model`` is the local model an OIP endpoint must serve (it decodes the answers; a
    yolo-edge service decodes on its side, so there it is not used); ``options`` go to
    the client's constructor.
    """
    from .oip_wire import OIP_SCHEMES

    if isinstance(url, str) and url.startswith(OIP_SCHEMES):
        from .oip import OipClient

        return OipClient(url, model=model, **options)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        from .cloud import CloudClient

        return CloudClient(url, **options)
    raise ConfigError(f"endpoint must be 'http(s)://HOST:PORT' (a yolo-edge service) or "
                      f"'oip+http(s)://HOST:PORT/v2/models/NAME' (Triton, KServe, OpenVINO), got {url!r}")


def client_options(url: str) -> frozenset[str]:
    """The keyword options :func:`open_endpoint` takes for ``url`` (the client's constructor's, less ``model``)."""
    from .oip_wire import OIP_SCHEMES

    if isinstance(url, str) and url.startswith(OIP_SCHEMES):
        from .oip import OipClient as client_type
    else:
        from .cloud import CloudClient as client_type
    params = inspect.signature(client_type.__init__).parameters
    return frozenset(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY and name != "model")


def poll_ready(ready: Callable[[], bool], wait_s: float, sleep: Callable[[float], None] = time.sleep,
               every_s: float = 0.5) -> bool:
    """Call ``ready()`` until it says True or ``wait_s`` has passed; once when ``wait_s`` is 0.

    What ``wake(wait_s)`` does: the first probe is the wake-up signal for a deployment
    scaled to zero, the next ones wait for it. ``wait_s`` is a non-negative finite number
    of seconds (ConfigError otherwise).
    """
    deadline = time.monotonic() + check_seconds("wait_s", wait_s, zero=True)
    while True:
        if ready():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sleep(min(every_s, remaining))


# -- what every client checks and computes alike --------------------------------------------

def check_client_args(*, token: Any, timeout: Any, max_retries: Any, backoff_s: Any, allow_model_mismatch: Any,
                      sleep: Any) -> tuple[float, float]:
    """Check an endpoint client's common constructor arguments; ``(timeout, backoff_s)`` as floats.

    Raises ConfigError naming the argument, what it must be and what it got.
    """
    if token is not None and (not isinstance(token, str) or not token or any(c in token for c in "\r\n\0")):
        raise ConfigError("token must be a non-empty string on one line (the service's YOLO_EDGE_TOKEN), "
                          f"got {short_repr(token) if not isinstance(token, str) else 'a string with line breaks'}")
    timeout_s = check_seconds("timeout", timeout)
    if not _is_int(max_retries) or not 0 <= max_retries <= 20:
        raise ConfigError(f"max_retries must be an integer within 0..20, got {short_repr(max_retries)}")
    backoff = check_seconds("backoff_s", backoff_s, zero=True)
    if not isinstance(allow_model_mismatch, bool):
        raise ConfigError(f"allow_model_mismatch must be True or False, got {short_repr(allow_model_mismatch)}")
    if not callable(sleep):
        raise ConfigError(f"sleep must be a function of seconds, got {short_repr(sleep)}")
    return timeout_s, backoff


def image_list(images: Any, what: str) -> list[Any]:
    """``images`` as a list; ConfigError for one image (a path, bytes, an array) or no sequence at all."""
    if isinstance(images, (str, bytes, np.ndarray)) or not isinstance(images, Sequence):
        raise ConfigError(f"{what} expects a list of images, got {type(images).__name__}; use detect() for one image")
    return list(images)


def frame_deadlines(budgets_s: Any, count: int, now: float) -> list[float | None] | None:
    """Each frame's deadline on the clock that read ``now`` (None: no deadline); None without budgets.

    ``budgets_s`` as :meth:`Endpoint.detect_frames` takes it, checked by
    :func:`~yolo_edge.wire.check_budgets` (a spent budget is allowed: that frame is not sent).
    """
    budgets = check_budgets(budgets_s, count, spent_ok=True)
    return None if budgets is None else [None if b is None else now + b for b in budgets]


def backoff_delay(base_s: float, attempt: int, cap_s: float) -> float:
    """Seconds to wait before retry ``attempt``: full-jitter exponential backoff, capped.

    The jitter spreads a crowd of clients that failed together, so they do not retry together.
    """
    return min(cap_s, base_s * 2 ** attempt) * (0.5 + random.random() / 2)


# -- what a request that got no answer says ------------------------------------------------

def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (``__cause__``, ``__context__``, urllib3's ``reason``)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        reason = e.__dict__.get("reason")  # urllib3's MaxRetryError / NewConnectionError keep it here
        todo += [x for x in (e.__cause__, e.__context__, reason) if isinstance(x, BaseException)]
        todo += [x for x in e.args if isinstance(x, BaseException)]  # requests wraps urllib3's error in args
    return seen


def why_unreachable(exc: BaseException) -> str:
    """What went wrong below HTTP, in a few words: ``connection refused``, ``host name not found``, ...

    >>> why_unreachable(ConnectionRefusedError(111, "Connection refused"))
    'connection refused (nothing listens at that address and port)'
    >>> why_unreachable(socket.gaierror(-2, "Name or service not known"))
    'host name not found (DNS: Name or service not known)'
    """
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused (nothing listens at that address and port)"
        if isinstance(e, socket.gaierror):
            return f"host name not found (DNS: {e.strerror or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed ({e.__dict__.get('reason') or e})"
        if isinstance(e, ConnectionResetError):
            return "the connection was reset by the other end"
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to the host (network unreachable)"
    for e in chain:
        if isinstance(e, (TimeoutError, socket.timeout)) or "timeout" in type(e).__name__.lower():
            return "no answer in time (timed out)"
    deepest = chain[-1]
    text = str(deepest).strip() or type(deepest).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def transport_error(method: str, url: str, exc: BaseException, *, timeout_s: float, hint: str) -> CloudError:
    """A request to ``url`` got no HTTP answer: one line a user can act on, as our error.

    Connection failures and timeouts become :class:`CloudUnavailableError` /
    :class:`CloudTimeoutError` naming the URL, the cause below HTTP and ``hint``. The chain of
    requests/urllib3/socket exceptions behind it is not printed with the error (raise the
    result ``from None``); it stays on ``error.original`` and is logged at DEBUG.
    """
    import requests

    if isinstance(exc, requests.ConnectTimeout):  # before Timeout: the request was never sent
        error: CloudError = CloudUnavailableError(f"cannot connect to {url}: no connection within {timeout_s:g} s; "
                                                  f"{hint}")
    elif isinstance(exc, requests.Timeout):
        error = CloudTimeoutError(f"{method} {url} took longer than {timeout_s:g} s; raise timeout= or check the "
                                  "service's load")
    elif isinstance(exc, requests.ConnectionError):
        error = CloudUnavailableError(f"cannot connect to {url}: {why_unreachable(exc)}; {hint}")
    else:
        error = CloudError(f"{method} {url} failed: {why_unreachable(exc)}")
    error.original = exc
    logger.debug("%s %s failed", method, url, exc_info=exc)
    return error
