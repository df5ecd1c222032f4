"""When an upload has left: the moment the peer has acknowledged every byte of a request.

A device on a slow uplink needs to know how long its uploads take on the wire, apart from
how long the service then computes. ``requests`` only says when the answer is back. This
module gives a :class:`requests.Session` whose connections, once a request's body has been
handed to the kernel, wait (before reading the answer) until the socket's send queue is
empty, that is until the peer has acknowledged the last byte (``SIOCOUTQ`` on Linux), and
then call the function set with :func:`on_acknowledged` in the sending thread. Elsewhere
(no ``SIOCOUTQ``) the function is called as soon as the body has been handed to the kernel.

Nothing changes for a caller that sets no function: the wait happens only inside
``with on_acknowledged(fn):``.

>>> import requests
>>> session = timed_session()
>>> isinstance(session, requests.Session)
True
>>> with on_acknowledged(lambda rtt: None):
...     pass
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

__all__ = ["timed_session", "on_acknowledged", "unacknowledged_bytes", "tcp_min_rtt_s"]

_ON_ACKED: contextvars.ContextVar[Callable[[float | None], None] | None] = contextvars.ContextVar("yolo_edge_on_acked",
                                                                                      default=None)
try:  # SIOCOUTQ is TIOCOUTQ on Linux: bytes in a TCP socket's send queue, not yet acknowledged
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    _SIOCOUTQ = None

#: the send queue is looked at every _POLL_S at first and near the end of the drain; in
#: between, at a fraction of the time the rest should take at the rate seen so far (and of the
#: time waited so far), never more than _MAX_POLL_S apart: a few dozen looks per upload over a
#: slow link instead of hundreds, each a wake-up of the device's CPU, and an ending seen within
#: a few percent of the upload's time. _MAX_WAIT_S: the longest wait.
_POLL_S = 0.002
_MAX_POLL_S = 0.05
_MAX_WAIT_S = 120.0


@contextlib.contextmanager
def on_acknowledged(fn: Callable[[float | None], None]) -> Iterator[None]:
    """Call ``fn(min_rtt_s)`` (in this thread) each time a request sent by a :func:`timed_session`
    inside the block has had its last byte acknowledged (once per try when retried), with the
    connection's smallest measured round trip (None where the kernel does not say)."""
    token = _ON_ACKED.set(fn)
    try:
        yield
    finally:
        _ON_ACKED.reset(token)


def unacknowledged_bytes(sock: Any) -> int | None:
    """Bytes of ``sock``'s send queue the peer has not acknowledged (None: cannot tell here)."""
    if _SIOCOUTQ is None or sock is None:
        return None
    try:
        buf = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    return int.from_bytes(buf, "little", signed=True)


def tcp_min_rtt_s(sock: Any) -> float | None:
    """The smallest round trip the kernel measured on this TCP connection (Linux ``TCP_INFO``
    ``tcpi_min_rtt``), in seconds; None where it cannot be read."""
    import socket
    import struct

    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, ValueError):
        return None
    if len(info) < _MIN_RTT_OFFSET + 4:
        return None
    (usec,) = struct.unpack_from("I", info, _MIN_RTT_OFFSET)
    return usec / 1e6 if 0 < usec < 0xFFFFFFFF else None


#: byte offset of ``tcpi_min_rtt`` (microseconds) in Linux's ``struct tcp_info`` (since 4.6)
_MIN_RTT_OFFSET = 148


def _wait_acknowledged(sock: Any, limit_s: float) -> bool:
    """Wait until every byte sent on ``sock`` is acknowledged; False if some still are not after
    ``limit_s`` (the upload has not left: nothing is reported)."""
    start = time.monotonic()
    end = start + limit_s
    first = unacknowledged_bytes(sock)
    left = first
    while left and (now := time.monotonic()) < end:
        time.sleep(_poll_interval(first, left, now - start))
        left = unacknowledged_bytes(sock)
    if left:
        logger.debug("%d bytes still unacknowledged after %.1f s", left, limit_s)
        return False
    return True


def _poll_interval(first: int | None, left: int, waited_s: float) -> float:
    """How long to sleep before looking at the send queue again: ``left`` of ``first`` bytes
    still unacknowledged after ``waited_s``."""
    interval = min(_MAX_POLL_S, 0.25 * waited_s)
    drained = (first or 0) - left
    if drained > 0 and waited_s > 0:
        interval = min(interval, 0.5 * left * waited_s / drained)  # half what the rest should take
    return max(_POLL_S, interval)


def _timed(base: type) -> type:
    class Timed(base):  # type: ignore[misc, valid-type]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            fn = _ON_ACKED.get()
            if fn is not None:
                timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
                if _wait_acknowledged(self.sock, min(timeout or _MAX_WAIT_S, _MAX_WAIT_S)):
                    try:
                        fn(tcp_min_rtt_s(self.sock))
                    except Exception:  # the observer's failure must not fail the request
                        logger.exception("upload observer failed")
            return super().getresponse(*args, **kwargs)

    Timed.__name__ = Timed.__qualname__ = f"Timed{base.__name__}"
    return Timed


def timed_session() -> Any:
    """A ``requests.Session`` whose HTTP and HTTPS connections report acknowledged uploads."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = _timed(HTTPConnection)

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _timed(HTTPSConnection)

    class TimedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}

    session = requests.Session()
    adapter = TimedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
