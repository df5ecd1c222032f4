"""The HTTP layer under every remote client: one session per endpoint, retries, typed errors.

:class:`~yolo_edge.remote.cloud.CloudClient` (a yolo-edge service) and
:class:`~yolo_edge.remote.oip.OipClient` (Triton, KServe, OpenVINO) keep only their encoding
and decoding; how a request travels is decided here, once, for both:

- **What is retried**: an answer with a status in :data:`RETRY_STATUS` (429, 502, 503,
  504), a connection refused or reset, a connect timeout (the request was never sent, so
  even a POST is safe to repeat), and, for GET/HEAD only, a read timeout or any other
  failure to get an answer. A slow answer to a POST is not retried: it would double the
  load of a service that is already too slow.
- **How long to wait**: full-jitter exponential backoff from ``backoff_s``, capped at
  ``max_backoff_s`` (:data:`MAX_BACKOFF_S`), or the server's ``Retry-After`` when that is
  longer, given in seconds or as an HTTP date. A ``Retry-After`` longer than the client's
  ``timeout`` is not waited for: the caller is better off elsewhere.
- **The deadline**: no retry is made that could not start before the request's deadline
  (a ``time.monotonic()`` value): the last failure is raised at once instead.
- **Errors**: every failure is a :mod:`yolo_edge.errors` type (see :func:`status_error`
  and :func:`transport_error`); the requests/urllib3 chain stays on ``error.original``.

This module imports no other client module (only :mod:`yolo_edge.errors` and
:mod:`yolo_edge.remote.wire`), and ``requests`` only when a transport is built.

>>> RetryPolicy(max_retries=1, backoff_s=0.1).delay(0, retry_after_s=None, rand=1.0)
0.1
>>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
10.0
"""

from __future__ import annotations

import email.utils
import errno
import logging
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, TypeVar

from ..errors import CloudAuthError, CloudError, CloudRequestError, CloudTimeoutError, CloudUnavailableError, ConfigError
from .values import check_flag, is_int, short_repr
from .wire import check_seconds

__all__ = ["HttpTransport", "RetryPolicy", "RETRY_STATUS", "MAX_BACKOFF_S", "IDEMPOTENT", "parse_retry_after",
           "backoff_delay", "status_error", "server_message", "transport_error", "why_unreachable",
           "check_client_args", "poll_ready", "Closing", "RemoteClient"]

logger = logging.getLogger(__name__)

#: HTTP statuses that mean "not now" rather than "never": worth retrying.
RETRY_STATUS = frozenset({429, 502, 503, 504})
#: Longest backoff between two tries without a ``Retry-After``: a detection waited on longer is rarely still wanted.
MAX_BACKOFF_S = 2.0
#: Methods a read timeout may be retried for: repeating them does no harm.
IDEMPOTENT = frozenset({"GET", "HEAD"})
#: Timeout of one readiness probe (``ready()``), whatever the client's ``timeout``.
READY_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How many tries a request gets and how long to wait between them."""

    max_retries: int = 2  # tries after the first
    backoff_s: float = 0.2  # the first retry waits within [backoff_s / 2, backoff_s)
    max_backoff_s: float = MAX_BACKOFF_S  # cap on a backoff wait (a Retry-After may ask for longer)

    def __post_init__(self) -> None:
        if not is_int(self.max_retries) or not 0 <= self.max_retries <= 20:
            raise ConfigError(f"max_retries must be an integer within 0..20, got {short_repr(self.max_retries)}")
        check_seconds("backoff_s", self.backoff_s, zero=True)
        check_seconds("max_backoff_s", self.max_backoff_s, zero=True)

    def delay(self, attempt: int, *, retry_after_s: float | None, rand: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        delay = backoff_delay(self.backoff_s, attempt, self.max_backoff_s, rand=rand)
        return delay if retry_after_s is None else max(delay, retry_after_s)


def backoff_delay(base_s: float, attempt: int, cap_s: float, *, rand: float | None = None) -> float:
    """Full-jitter exponential backoff: ``min(cap_s, base_s * 2**attempt)`` times a factor in [0.5, 1].

    The jitter spreads a crowd of clients that failed together, so they do not retry together.
    """
    factor = random.random() if rand is None else rand
    return min(cap_s, base_s * 2 ** attempt) * (0.5 + factor / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header, delta-seconds or an HTTP date (RFC 9110 10.2.3).

    None when the header is absent or unreadable.

    ``now`` is the wall-clock time (``time.time()``) an HTTP date is measured from.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is read as GMT too
        import datetime

        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# -- what an answer that is not 2xx means ------------------------------------------------------

#: What a status means when a proxy (nginx, a cloud load balancer) answered it with its own page.
_PROXY_HINTS = {
    413: "the proxy's body limit (nginx: client_max_body_size) is below this upload: send fewer or "
         "smaller images (CloudClient(downscale=True)), or raise the limit to the service's YOLO_EDGE_MAX_UPLOAD_BYTES",
    502: "no replica behind the proxy answered: check that the replicas are running and ready",
    503: "no replica behind the proxy is available: check that the replicas are running and ready",
    504: "the replicas behind the proxy did not answer in time: check their load, or raise the proxy's timeouts",
}
_TITLE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)


def server_message(resp: Any) -> str:
    """The server's error text: ``{"error": ...}``, BentoML's ``[{"error": ...}]``, a proxy's page, or raw text."""
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


def status_error(method: str, url: str, resp: Any, retry_after_s: float | None, *, client: str) -> CloudError:
    """The typed error for a non-2xx answer: auth, request, unavailable (retry) or a plain CloudError.

    ``client`` names the client class in the auth hint (``check the token= given to ...``).
    """
    code = resp.status_code
    msg = f"{method} {url} -> {code}: {server_message(resp)}"
    if code in (401, 403):
        return CloudAuthError(msg + f" (check the token= given to {client})", status_code=code)
    if code in RETRY_STATUS:
        return CloudUnavailableError(msg, status_code=code, retry_after_s=retry_after_s)
    if 400 <= code < 500:
        return CloudRequestError(msg, status_code=code)
    return CloudError(msg, status_code=code)


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

    A connect timeout or a connection failure is :class:`CloudUnavailableError` (the
    request was never sent), a read timeout :class:`CloudTimeoutError`; for GET/HEAD any
    other failure to get an answer is unavailable too (asking again is harmless). The
    message names the URL, the cause below HTTP and ``hint``. The chain of
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
    elif method in IDEMPOTENT:
        error = CloudUnavailableError(f"{method} {url} failed: {why_unreachable(exc)}; {hint}")
    else:
        error = CloudError(f"{method} {url} failed: {why_unreachable(exc)}")
    error.original = exc
    logger.debug("%s %s failed", method, url, exc_info=exc)
    return error


def _retryable(method: str, error: CloudError) -> bool:
    return isinstance(error, CloudUnavailableError) or (isinstance(error, CloudTimeoutError) and method in IDEMPOTENT)


# -- the transport -------------------------------------------------------------------------------

Self = TypeVar("Self", bound="Closing")


class Closing:
    """Closed on leaving a ``with`` block; the subclass defines :meth:`close` (idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteClient(Closing):
    """What every remote client shares: :meth:`close` at the end of a ``with`` block, :meth:`wake` over :meth:`ready`."""

    _sleep: Callable[[float], None]  # how wake() waits between probes

    def ready(self) -> bool:
        raise NotImplementedError

    def wake(self, wait_s: float = 0) -> bool:
        """Probe readiness so a scaled-to-zero deployment starts; optionally wait until ready.

        Returns whether it answered ready. With ``wait_s=0`` this is one probe (the
        wake-up signal); with ``wait_s>0`` it polls every 0.5 s until ready or ``wait_s``
        has passed (:func:`poll_ready`).
        """
        return poll_ready(self.ready, wait_s, self._sleep)


class HttpTransport(Closing):
    """One endpoint's HTTP session and retry loop; safe to share between threads.

    ``base_url`` is what paths are appended to. ``client`` names the client in error
    hints, ``hint`` is what an unreachable endpoint's error suggests. ``session`` is a
    ``requests.Session`` to use instead of the transport's own (tests mount fake adapters
    on one; it is then not closed here); ``sleep`` waits between tries, ``clock`` is the
    ``time.monotonic``-like clock deadlines are on. ``refine`` may replace the typed error
    of an answer (OIP: Triton's "request timeout expired" is a deadline, not an outage);
    what it returns decides whether the request is retried.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: str,
        hint: str,
        token: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        session: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        refine: Callable[[CloudError], CloudError] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.hint = hint
        self.token = token
        self.timeout = timeout
        self.retry = retry
        self._owns_session = session is None
        if session is None:
            from .upload_timing import timed_session

            session = timed_session()  # a plain requests.Session that can also say when an upload left
        self.session = session
        self._sleep = sleep
        self._clock = clock
        self._refine = refine

    def close(self) -> None:
        """Close the session if this transport created it. Idempotent."""
        if self._owns_session:
            self.session.close()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def url(self, path: str) -> str:
        return self.base_url + path

    def probe(self, path: str) -> bool:
        """GET ``path`` once with a short timeout: whether it answered 200. Never raises, never retries."""
        import requests

        url = self.url(path)
        try:
            resp = self.session.get(url, headers=self.headers(), timeout=min(READY_TIMEOUT_S, self.timeout))
        except requests.RequestException as exc:
            logger.debug("%s failed: %s", url, exc)
            return False
        return resp.status_code == 200

    def request(self, method: str, path: str, *, deadline: float | None = None, accept: Collection[int] = (),
                prepare: Callable[[], dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        """Send ``method path`` with retries; return a 2xx answer (or one with a status in ``accept``).

        ``prepare()`` gives keyword arguments for ``session.request`` made anew at each try
        (a body that carries the time left); ``kwargs`` are the same for every try.
        ``deadline`` (on ``clock``) bounds retries: none is made that could not start
        before it. Raises a :class:`~yolo_edge.errors.CloudError` subclass otherwise.
        """
        import requests

        url = self.url(path)
        attempt = 0
        while True:
            fresh = prepare() if prepare is not None else {}
            headers = {**self.headers(), **kwargs.get("headers", {}), **fresh.pop("headers", {})}
            args = {**{k: v for k, v in kwargs.items() if k != "headers"}, **fresh}
            retry_after: float | None = None
            try:
                resp = self.session.request(method, url, headers=headers, timeout=self.timeout, **args)
            except requests.RequestException as exc:
                # one line naming the cause; the library's chain stays on failure.original
                failure = transport_error(method, url, exc, timeout_s=self.timeout, hint=self.hint)
            else:
                if resp.status_code < 300 or resp.status_code in accept:
                    return resp
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                failure = status_error(method, url, resp, retry_after, client=self.client)
                if self._refine is not None:
                    failure = self._refine(failure)
            delay = self._retry_delay(method, failure, attempt, retry_after, deadline)
            if delay is None:
                raise failure
            attempt += 1
            logger.info("%s %s: %s; retry %d/%d in %.2f s", method, path, failure, attempt,
                        self.retry.max_retries, delay)
            self._sleep(delay)

    def _retry_delay(self, method: str, failure: CloudError, attempt: int, retry_after: float | None,
                     deadline: float | None) -> float | None:
        """Seconds to wait before the next try, or None: raise ``failure`` now."""
        if not _retryable(method, failure) or attempt >= self.retry.max_retries:
            return None
        if retry_after is not None and retry_after > self.timeout:
            return None  # waiting that long helps nobody: let the caller route elsewhere
        delay = self.retry.delay(attempt, retry_after_s=retry_after)
        if deadline is not None and self._clock() + delay >= deadline:
            return None  # the retry could not start in time: say the endpoint was unavailable
        return delay


# -- what every client checks alike --------------------------------------------------------------

def check_client_args(*, token: Any, timeout: Any, max_retries: Any, backoff_s: Any, allow_model_mismatch: Any,
                      sleep: Any) -> tuple[float, float]:
    """Check an endpoint client's common constructor arguments; ``(timeout, backoff_s)`` as floats.

    Raises ConfigError naming the argument, what it must be and what it got.
    """
    if token is not None and (not isinstance(token, str) or not token or any(c in token for c in "\r\n\0")):
        raise ConfigError("token must be a non-empty string on one line (the service's YOLO_EDGE_TOKEN), "
                          f"got {short_repr(token) if not isinstance(token, str) else 'a string with line breaks'}")
    timeout_s = check_seconds("timeout", timeout)
    if not is_int(max_retries) or not 0 <= max_retries <= 20:
        raise ConfigError(f"max_retries must be an integer within 0..20, got {short_repr(max_retries)}")
    backoff = check_seconds("backoff_s", backoff_s, zero=True)
    check_flag(allow_model_mismatch, "allow_model_mismatch")
    if not callable(sleep):
        raise ConfigError(f"sleep must be a function of seconds, got {short_repr(sleep)}")
    return timeout_s, backoff


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
