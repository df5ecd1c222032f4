"""The members of an :class:`~yolo_edge.pool.EndpointPool`: what each is, its state, and which one a call takes.

:class:`PoolMember` is a member as given (a URL or a client, its weight, whether it is a
backup); :class:`Member` its state in the pool (guarded by the pool's lock);
:func:`choose` the pool's choice for the next try of a call; :func:`member_fault` whether a
failed request says something about the member rather than the request.

>>> PoolMember.parse({"url": "http://10.0.0.6:3000", "weight": 2})
PoolMember(url='http://10.0.0.6:3000', weight=2.0, backup=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

from .endpoint import Endpoint
from .endpoint_url import check_endpoint_url, check_table, safe_name
from .errors import CloudDeadlineExpiredError, CloudError, CloudTimeoutError, CloudUnavailableError, ConfigError
from .balancer import Health, check_share, serving
from .wire import short_repr

__all__ = ["PoolMember", "MemberState", "MemberStatus", "Member", "Kind", "choose", "member_fault", "safe_name"]


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


class MemberState(str, Enum):
    NEW = "new"  # not used yet: its model is checked on first use
    READY = "ready"  # in rotation
    OUT = "out"  # too many failures: out until its time is up, then probed
    PROBING = "probing"  # its time out is up: a call is probing it
    DISABLED = "disabled"  # serves another model: never used again


@dataclass(frozen=True)
class MemberStatus:
    """One member as :meth:`EndpointPool.members` shows it."""

    name: str
    state: MemberState
    weight: float
    backup: bool
    outstanding: int  # requests in flight now
    requests: int  # requests sent
    frames: int  # frames answered
    failures: int
    sha256: str | None  # the model it was seen to serve
    out_for_s: float  # seconds left out of rotation (0 when in rotation)
    reason: str | None  # the last failure, or why it was disabled


class Member:
    """A member's mutable state; guarded by the pool's lock."""

    def __init__(self, index: int, spec: PoolMember, client: Endpoint, owned: bool) -> None:
        self.index, self.spec, self.client, self.owned = index, spec, client, owned
        self.name = safe_name(client.endpoint)
        self.state = MemberState.NEW
        self.health = Health()
        self.busy = False  # a call is checking (joining or probing) it, or sending the pool's first request
        self.founding = False  # sending the request whose answer names the pool's model
        self.outstanding = self.requests = self.frames = self.failures = 0
        self.current = 0.0  # smooth weighted round robin among equally loaded members
        self.sha256: str | None = None
        self.reason: str | None = None

    def status(self, now: float) -> MemberStatus:
        out_for = max(0.0, self.health.out_until - now) if self.state is MemberState.OUT else 0.0
        return MemberStatus(self.name, self.state, self.spec.weight, self.spec.backup, self.outstanding,
                            self.requests, self.frames, self.failures, self.sha256, out_for, self.reason)


class Kind(Enum):
    """What a call does next."""

    SEND = "send"  # send the request to the member
    JOIN = "join"  # check the member's model (first use), then send to it
    PROBE = "probe"  # its time out is up: probe it, then choose again
    WAIT = "wait"  # another call is checking a member this one may need
    NONE = "none"  # no member is left for this call


def choose(members: Sequence[Member], tried: set[int], now: float, *,
           one_at_a_time: bool) -> tuple[Kind, Member | None]:
    """What a call that has ``tried`` these members does next; called under the pool's lock.

    Members whose time out is up are probed first. Then, among the members in rotation
    (the primaries not tried yet, else the backups), the fewest requests in flight per unit
    of weight, ties in turns by weight (nginx's smooth weighted round robin: the chosen
    member's turn counter is updated here).

    ``one_at_a_time``: the pool's model is not known yet, so it is the first member's
    (the first one listed, whatever the weights): only that member is used until its
    answer names the model, and while it is being checked every call waits. No other
    member's answer may name the pool's model, so none is sent a request before.
    """
    if one_at_a_time:
        return _founder(members, tried, now)
    usable = [m for m in members if m.state is not MemberState.DISABLED and m.index not in tried]
    for m in usable:
        if m.state is MemberState.OUT and not m.health.out(now) and not m.busy:
            return Kind.PROBE, m
    takers = serving(usable, in_rotation=lambda m: m.state in (MemberState.NEW, MemberState.READY),
                     backup=lambda m: m.spec.backup)
    free = [m for m in takers if not m.busy]
    if not free:
        if takers or any(m.busy for m in usable):
            return Kind.WAIT, None  # a member is being checked: its verdict may give this call one
        return Kind.NONE, None
    least = min(m.outstanding / m.spec.weight for m in free)
    tied = [m for m in free if m.outstanding / m.spec.weight == least]
    for m in tied:
        m.current += m.spec.weight
    chosen = max(tied, key=lambda m: m.current)
    chosen.current -= sum(m.spec.weight for m in tied)
    return (Kind.JOIN if chosen.state is MemberState.NEW else Kind.SEND), chosen


def _founder(members: Sequence[Member], tried: set[int], now: float) -> tuple[Kind, Member | None]:
    """The choice while the pool's model is unknown: the first member, or nobody."""
    if any(m.busy for m in members if m.state is not MemberState.DISABLED):
        return Kind.WAIT, None
    first = members[0]
    if first.index in tried or first.state is MemberState.DISABLED:
        return Kind.NONE, None
    if first.state is MemberState.OUT:
        return (Kind.NONE, None) if first.health.out(now) else (Kind.PROBE, first)
    return (Kind.JOIN if first.state is MemberState.NEW else Kind.SEND), first


def member_fault(exc: CloudError) -> bool:
    """Whether a failed request says something about the member (retry elsewhere) rather than the request."""
    if isinstance(exc, (CloudUnavailableError, CloudTimeoutError)):
        return True
    if isinstance(exc, CloudDeadlineExpiredError) or type(exc) is not CloudError:
        return False  # 4xx, auth, a frame's own error, an expired deadline: the same anywhere
    return exc.status_code is None or exc.status_code >= 500 or exc.status_code < 400
