"""The members of an :class:`~yolo_edge.remote.pool.EndpointPool` as given, and what a failure says about one.

:class:`PoolMember` is a member as given (a URL or a client, its weight, whether it is a
backup); :func:`member_fault` whether a failed request says something about the member
rather than the request. A member's state in the pool, and which one a call takes, are the
balancer's (:class:`yolo_edge.remote.balancer.Balancer`).

>>> PoolMember.parse({"url": "http://10.0.0.6:3000", "weight": 2})
PoolMember(url='http://10.0.0.6:3000', weight=2.0, backup=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import CloudDeadlineExpiredError, CloudError, CloudTimeoutError, CloudUnavailableError, ConfigError
from .balancer import check_share
from .endpoint import Endpoint
from .endpoint_url import check_endpoint_url, check_table
from .wire import short_repr

__all__ = ["PoolMember", "member_fault"]


@dataclass(frozen=True, kw_only=True)
class PoolMember:
    """One member of a pool: a URL (or a client already built) and its share of the traffic."""

    url: str | Endpoint
    weight: float = 1.0  # share relative to the others
    backup: bool = False  # serves only what no primary in rotation is left for

    def __post_init__(self) -> None:
        if not isinstance(self.url, (str, Endpoint)):
            raise ConfigError(f"a pool member is a URL ('http://HOST:PORT', 'oip+http://HOST:PORT/v2/models/NAME') "
                              f"or a client (CloudClient, OipClient), got {short_repr(self.url)}")
        if isinstance(self.url, str):
            check_endpoint_url(self.url, what="pool member")
        object.__setattr__(self, "weight", check_share(f"pool member {self.label}", self.weight, self.backup))

    @property
    def label(self) -> str:
        return self.url if isinstance(self.url, str) else self.url.endpoint

    @classmethod
    def parse(cls, item: Any) -> "PoolMember":
        """A URL, a client, a PoolMember, or a table ``{"url": ..., "weight": 2, "backup": False}``."""
        if isinstance(item, PoolMember):
            return item
        if isinstance(item, (str, Endpoint)):
            return cls(url=item)
        if not isinstance(item, Mapping):
            raise ConfigError(f"a pool member is a URL, a client or a table {{'url', 'weight', 'backup'}}, "
                              f"got {short_repr(item)}")
        return cls(**check_table(item, ("url", "weight", "backup"), what="pool member"))


def member_fault(exc: CloudError) -> bool:
    """Whether a failed request says something about the member (retry elsewhere) rather than the request."""
    if isinstance(exc, (CloudUnavailableError, CloudTimeoutError)):
        return True
    if isinstance(exc, CloudDeadlineExpiredError) or type(exc) is not CloudError:
        return False  # 4xx, auth, a frame's own error, an expired deadline: the same anywhere
    return exc.status_code is None or exc.status_code >= 500 or exc.status_code < 400
