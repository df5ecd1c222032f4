"""Endpoint URLs, checked once where a client or a pool is built: scheme, host, port, IPv6 brackets.

Used by :class:`~yolo_edge.remote.cloud.CloudClient`, :class:`~yolo_edge.remote.oip.OipClient`,
:class:`~yolo_edge.remote.pool.EndpointPool` and the edge agent's configuration, so a bad URL is
a :class:`~yolo_edge.errors.ConfigError` naming it and saying what was expected, when the
object is built, not a bare ``ValueError`` from deep in a request (or, for port 0, a
request silently sent to port 80).

>>> check_endpoint_url("http://[::1]:3000/prefix")
'http://[::1]:3000/prefix'
>>> check_endpoint_url("http://127.0.0.1:99999", what="pool member")
Traceback (most recent call last):
...
yolo_edge.errors.ConfigError: pool member 'http://127.0.0.1:99999': port 99999 is out of range; expected http(s)://HOST[:PORT][/PATH] or oip+http(s)://HOST[:PORT][/PREFIX]/v2/models/NAME, with a port within 1-65535 and an IPv6 address in brackets (http://[::1]:3000)
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from .wire import short_repr

__all__ = ["check_endpoint_url", "check_table", "safe_name", "HTTP_SCHEMES", "OIP_SCHEMES", "ENDPOINT_SCHEMES"]

HTTP_SCHEMES = ("http", "https")  # a yolo-edge service
OIP_SCHEMES = ("oip+http", "oip+https")  # an Open Inference Protocol model (Triton, KServe)
ENDPOINT_SCHEMES = HTTP_SCHEMES + OIP_SCHEMES

_FORMS = {"http": "http(s)://HOST[:PORT][/PATH]", "oip+http": "oip+http(s)://HOST[:PORT][/PREFIX]/v2/models/NAME"}
_DIGITS = re.compile(r"[0-9]+")
_HOST = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]+")  # a name or IPv4 address: RFC 3986 reg-name characters


def check_endpoint_url(url: Any, *, what: str = "endpoint", schemes: tuple[str, ...] = ENDPOINT_SCHEMES) -> str:
    """``url`` itself when it is a usable endpoint URL of one of ``schemes``; else a ConfigError naming it.

    ``what`` names the entry in the message ("pool member", "cloud endpoint", ...).
    """
    forms = " or ".join(form for key, form in _FORMS.items() if key in schemes)
    expected = f"expected {forms}, with a port within 1-65535 and an IPv6 address in brackets (http://[::1]:3000)"
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{what} must be a URL: {expected}; got {short_repr(url)}")

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{what} {url!r}: {problem}; {expected}")

    if any(c.isspace() for c in url):
        raise bad("it contains white space")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        raise bad(f"the scheme must be one of {', '.join(s + '://' for s in schemes)}")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]  # after any user:password@
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            raise bad("an IPv6 address opened with '[' is not closed with ']'")
        host, after = host_port[1:end], host_port[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise bad(f"{after!r} after the IPv6 address: only ':PORT' may follow ']'")
        port = after[1:] if after else None
    else:
        if host_port.count(":") > 1:
            raise bad("an IPv6 address must be in brackets")
        host, colon, port_text = host_port.partition(":")
        port = port_text if colon else None
        if host and not _HOST.fullmatch(host):
            raise bad(f"{host!r} is not a host name or address")
    if not host:
        raise bad("no host")
    if port is not None:
        if not _DIGITS.fullmatch(port):
            raise bad("':' with no port after it" if not port else f"port {port!r} is not a number")
        if not 1 <= int(port) <= 65535:
            raise bad(f"port {int(port)} is out of range" + (" (0 is not 'the default port': leave the port out)"
                                                               if int(port) == 0 else ""))
    return url


def safe_name(url: str) -> str:
    """The URL without credentials or query: safe in logs, metrics labels and status (IPv6 keeps its brackets).

    >>> safe_name("https://user:secret@[::1]:3000/v2/models/yolo?token=x")
    'https://[::1]:3000/v2/models/yolo'
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


def check_table(item: Mapping[str, Any], known: Iterable[str], *, what: str) -> dict[str, Any]:
    """An endpoint given as a table (``{"url": ..., "weight": 2}``) as a dict: it has a url, and no unknown key."""
    known = sorted(known)
    unknown = sorted(set(item) - set(known))
    if unknown or "url" not in item:
        raise ConfigError(f"{what} {short_repr(dict(item))}: {'unknown key(s) ' + str(unknown) if unknown else 'no url'};"
                          f" known keys are {known}")
    return dict(item)
