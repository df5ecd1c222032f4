"""One sans-I/O balancer for every endpoint pool, fed ``now`` and outcomes: no clock, thread or socket.

Two drivers run the same :class:`Balancer`: :class:`yolo_edge.remote.pool.EndpointPool` (through
:class:`yolo_edge.remote.failover.Failover`) with its clock, under its lock, doing the I/O it
asks for; and the edge agent's device core (``edge_agent.core.pool.CloudPool``) with the
core's event times, adding only its answer-time estimates. So an SDK pool and an agent
choose, take out, bring back and hold to a model by the same rules, on the same state:

- **Who serves**: the endpoints in rotation, the primaries; the backups only while no
  primary is (:meth:`Balancer.serving`). Among them the least loaded per unit of weight,
  within each member's ``max_inflight``: the SDK's next try in weighted turns
  (:meth:`Balancer.next`), the device's batch among the members whose answer, by the
  driver's estimate, comes by the batch's deadline (:meth:`Balancer.pick`).
- **Health** (nginx's ``max_fails`` within ``fail_timeout``, :mod:`yolo_edge.remote.health`): a
  failure (:func:`failed`) says whether it is the one that took the endpoint out; an
  endpoint whose time out is up is probed, and one whose probe fails is out again
  (:func:`probe_failed`); a success clears it (:func:`on_success`).
- **One model, fixed, never voted** (:class:`ModelRule`): the model given, else the first
  endpoint listed names it with its answer; every other model is refused.

>>> rule = ModelRule()
>>> rule.judge("b" * 64, "fall", first=False)  # a second endpoint cannot name the pool's model
"the pool's model is the first endpoint's, which has not named it yet"
>>> rule.judge("a" * 64, "coco", first=True), rule.sha256[:4]
(None, 'aaaa')
>>> rule.judge("b" * 64, "fall")
"it serves model 'fall' with sha256 bbbbbbbbbbbb..., not the pool's aaaaaaaaaaaa..."
>>> cfg = HealthConfig(max_fails=2, fail_timeout_s=1.0)
>>> h, out = failed(Health(), now=0.0, cfg=cfg)
>>> h, out = failed(h, now=0.5, cfg=cfg)
>>> out, h.out_until, probe_failed(now=1.5, cfg=cfg).out_until
(True, 1.5, 2.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Sequence, TypeVar

from ..errors import CloudModelMismatchError, ConfigError
from .health import Health, HealthConfig, failed, on_failure, on_success, probe_failed
from .values import check_flag
from .wire import short_repr

__all__ = ["Balancer", "Member", "MemberState", "MemberStatus", "Kind", "Change", "Note", "ModelRule", "check_share",
           "serving", "failed", "probe_failed", "Health", "HealthConfig", "on_failure", "on_success"]

T = TypeVar("T")


class ModelRule:
    """The pool's model: ``sha256`` as given, else (None) the first endpoint's once its answer names it."""

    def __init__(self, sha256: str | None = None, name: str = "?") -> None:
        self.sha256 = sha256.lower() if sha256 else None
        self.name = name

    def judge(self, sha256: str, name: str = "?", *, first: bool = False) -> str | None:
        """None when ``sha256`` is the pool's model, else what is wrong (for the log and the status).

        ``first``: the answer comes from the first endpoint listed, whose model becomes the
        pool's when none was given. No other endpoint's answer can name it.
        """
        sha = sha256.lower()
        if self.sha256 is None and not first:
            return "the pool's model is the first endpoint's, which has not named it yet"
        if not sha:
            return "it does not say which model it serves"
        if self.sha256 is None:
            self.sha256, self.name = sha, name
        if sha == self.sha256:
            if self.name == "?":
                self.name = name
            return None
        return f"it serves model {name!r} with sha256 {sha[:12]}..., not the pool's {self.sha256[:12]}..."


def check_share(label: str, weight: object, backup: object) -> float:
    """A member's share as configured: ``weight`` a positive number (returned as a float), ``backup`` True or False."""
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{label}: weight must be a positive number (its share relative to the others), "
                          f"got {short_repr(weight)}")
    check_flag(backup, f"{label}: backup")
    return float(weight)


def serving(members: Sequence[T], *, in_rotation: Callable[[T], bool], backup: Callable[[T], bool]) -> list[T]:
    """The members that take requests now: the primaries in rotation, else the backups in rotation."""
    rotation = [m for m in members if in_rotation(m)]
    return [m for m in rotation if not backup(m)] or rotation


class MemberState(str, Enum):
    NEW = "new"  # not used yet: its model is checked on first use
    READY = "ready"  # in rotation
    OUT = "out"  # too many failures: out until its time is up, then probed
    PROBING = "probing"  # its time out is up: a call is probing it
    DISABLED = "disabled"  # serves another model: never used again


@dataclass(frozen=True)
class MemberStatus:
    """One member as :meth:`yolo_edge.remote.pool.EndpointPool.members` shows it."""

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
    """One member's mutable state in a :class:`Balancer`; guarded by its driver's lock."""

    def __init__(self, index: int, name: str, *, weight: float = 1.0, backup: bool = False, client: Any = None,
                 max_inflight: int | None = None, max_batch: int | None = None) -> None:
        self.index, self.name, self.weight, self.backup = index, name, weight, backup
        self.client = client  # the driver's handle on it: never called here
        self.max_inflight, self.max_batch = max_inflight, max_batch  # requests at once, frames a request (None: any)
        self.state = MemberState.NEW
        self.health = Health()
        self.busy = False  # a call is checking (joining or probing) it, or sending the pool's first request
        self.founding = False  # sending the request whose answer names the pool's model
        self.outstanding = self.requests = self.frames = self.failures = 0
        self.outstanding_frames = 0  # frames in the requests in flight
        self.current = 0.0  # smooth weighted round robin among equally loaded members
        self.sha256: str | None = None
        self.reason: str | None = None

    def free(self) -> bool:
        """Not claimed, and a request slot free."""
        return not self.busy and (self.max_inflight is None or self.outstanding < self.max_inflight)

    def status(self, now: float) -> MemberStatus:
        out_for = max(0.0, self.health.out_until - now) if self.state is MemberState.OUT else 0.0
        return MemberStatus(self.name, self.state, self.weight, self.backup, self.outstanding,
                            self.requests, self.frames, self.failures, self.sha256, out_for, self.reason)


class Kind(Enum):
    """What a call does next."""

    SEND = "send"  # send the request to the member (counted)
    JOIN = "join"  # check the member's model (first use; it is claimed), then send to it
    PROBE = "probe"  # its time out is up (it is claimed, PROBING): probe it, then choose again
    WAIT = "wait"  # another call is checking a member this one may need
    NONE = "none"  # no member is left for this call


class Change(Enum):
    """What a driver is told happened to a member (for its log)."""

    FOUNDED = "founded"  # its model is the pool's from now on (the first endpoint's)
    BACK = "back"  # back in rotation after a time out
    OUT = "out"  # taken out of rotation for a while
    STILL_OUT = "still out"  # probed, not ready: out again
    FAILED = "failed"  # a failure that did not take it out
    DISABLED = "disabled"  # serves another model: out for good


@dataclass(frozen=True)
class Note:
    change: Change
    member: Member
    why: str | None = None  # OUT, FAILED, DISABLED: the failure, or the other model; FOUNDED: the model's name
    out_for_s: float = 0.0  # OUT: for how long
    check: bool = False  # FAILED: the failure was its model check's


class Balancer:
    """An endpoint pool's state and choices, fed ``now`` and outcomes; no clock, lock or I/O.

    The SDK's driver (:class:`yolo_edge.remote.failover.Failover`) holds it under its lock, asks
    :meth:`next` what a call does next, does that (sends, checks a model, probes) and
    feeds back what came of it (:meth:`sent`, :meth:`joined`, :meth:`not_ready`,
    :meth:`answered`, :meth:`failed`, :meth:`disable`, :meth:`done`). The device's
    (``edge_agent.core.pool.CloudPool``, ``join_on_use=False``) asks :meth:`pick`, claims
    members with :meth:`wake` and :meth:`probes_due`, and feeds back the same outcomes
    (:meth:`ready` for a wake or probe that found the member up). What happened to a
    member that a log should say is queued in :attr:`notes` (:meth:`take_notes`).

    >>> bal = Balancer([Member(0, "a"), Member(1, "b", weight=2.0)], model=ModelRule("a" * 64))
    >>> kind, m = bal.next(set(), now=0.0); kind.value, m.name
    ('join', 'b')
    >>> bal.joined(m, "a" * 64, "coco"), m.state.value  # its model check named the pool's model
    (True, 'ready')
    >>> bal.sent(m); bal.next(set(), now=0.0)[1].name  # b has a request in flight, a none
    'a'
    """

    def __init__(self, members: Sequence[Member], *, model: ModelRule, health: HealthConfig = HealthConfig(),
                 join_on_use: bool = True) -> None:
        self.members = list(members)
        self.model = model  # the pool's model: fixed, never voted
        self.health = health
        #: a NEW member is in rotation, its model checked on its first use (the SDK's pool); else (the
        #: device's) it serves only once :meth:`wake` has claimed it and :meth:`ready` said it is up
        self.join_on_use = join_on_use
        self.notes: list[Note] = []

    def take_notes(self) -> list[Note]:
        notes, self.notes = self.notes, []
        return notes

    def status(self, now: float) -> list[MemberStatus]:
        return [m.status(now) for m in self.members]

    def usable(self) -> list[Member]:
        """The members not disabled, primaries first."""
        usable = [m for m in self.members if m.state is not MemberState.DISABLED]
        return [m for m in usable if not m.backup] + [m for m in usable if m.backup]

    def checking(self) -> bool:
        """Whether a call is checking a member (or sending the pool's first request)."""
        return any(m.busy for m in self.members if m.state is not MemberState.DISABLED)

    def serving(self, now: float, among: Sequence[Member] | None = None) -> list[Member]:
        """The members (of ``among``) that take requests now: the primaries in rotation, else the backups."""
        def in_rotation(m: Member) -> bool:
            if m.state is MemberState.NEW:
                return self.join_on_use
            return m.state is MemberState.READY and not m.health.out(now)

        return serving(self.members if among is None else among, in_rotation=in_rotation, backup=lambda m: m.backup)

    # -- choice ------------------------------------------------------------------------
    def next(self, tried: set[int], now: float) -> tuple[Kind, Member | None]:
        """What a call that has ``tried`` these members does next, done here: SEND counts, JOIN and PROBE claim.

        Members whose time out is up are probed first. Then, among the members in rotation
        (the primaries not tried yet, else the backups), the fewest requests in flight per
        unit of weight, ties in turns by weight (nginx's smooth weighted round robin).

        While the pool's model is not known, it is the first member's (the first one
        listed, whatever the weights): only that member is used until its answer names the
        model, and while it is being checked every call waits. No other member's answer may
        name the pool's model, so none is sent a request before.
        """
        kind, member = self._founder(tried, now) if self.model.sha256 is None else self._choose(tried, now)
        if member is not None:
            if kind is Kind.SEND:
                self.sent(member)
            else:
                member.busy = True
                if kind is Kind.PROBE:
                    member.state = MemberState.PROBING
        return kind, member

    def _choose(self, tried: set[int], now: float) -> tuple[Kind, Member | None]:
        usable = [m for m in self.members if m.state is not MemberState.DISABLED and m.index not in tried]
        for m in usable:
            if m.state is MemberState.OUT and not m.health.out(now) and not m.busy:
                return Kind.PROBE, m
        takers = self.serving(now, usable)
        free = [m for m in takers if m.free()]
        if not free:
            if takers or any(m.busy for m in usable):
                return Kind.WAIT, None  # a member is being checked: its verdict may give this call one
            return Kind.NONE, None
        least = min(m.outstanding / m.weight for m in free)
        tied = [m for m in free if m.outstanding / m.weight == least]
        for m in tied:
            m.current += m.weight
        chosen = max(tied, key=lambda m: m.current)
        chosen.current -= sum(m.weight for m in tied)
        return (Kind.JOIN if chosen.state is MemberState.NEW else Kind.SEND), chosen

    def _founder(self, tried: set[int], now: float) -> tuple[Kind, Member | None]:
        """The choice while the pool's model is unknown: the first member, or nobody."""
        if self.checking():
            return Kind.WAIT, None
        first = self.members[0]
        if first.index in tried or first.state is MemberState.DISABLED:
            return Kind.NONE, None
        if first.state is MemberState.OUT:
            return (Kind.NONE, None) if first.health.out(now) else (Kind.PROBE, first)
        return (Kind.JOIN if first.state is MemberState.NEW else Kind.SEND), first

    def pick(self, now: float, *, eta: Callable[[Member], float] = lambda m: 0.0, deadline: float = math.inf,
             typical: Callable[[Member], float] = lambda m: 0.0) -> Member | None:
        """The member for a request due by ``deadline`` (the device's choice), None while every serving one is full.

        The driver counts the request (:meth:`sent`). ``eta(m)``: how long ``m`` would take to
        answer it (the driver's estimate); ``typical(m)``: its typical answer time. Among
        the members in rotation with a free request slot, those whose answer comes before
        the deadline; of them, the fewest recent failures, then the fewest frames in flight
        (this request counted as one) per unit of weight, then the soonest ``typical``
        answer. When none fits, the one that answers soonest.
        """
        free = [m for m in self.serving(now) if m.free()]
        if not free:
            return None
        fits = [m for m in free if now + eta(m) < deadline]
        if not fits:
            return min(free, key=eta)
        return min(fits, key=lambda m: (m.health.recent(now, self.health), (m.outstanding_frames + 1) / m.weight, typical(m)))

    def wake(self) -> list[Member]:
        """Claim the NEW members to wake (the device's): the primaries, the backups too while no primary can serve.

        Each is then :meth:`ready` or, not woken, :meth:`unclaim` -ed (NEW again).
        """
        hopeful = any(m.state in (MemberState.NEW, MemberState.READY) for m in self.members if not m.backup)
        woken = [m for m in self.members if m.state is MemberState.NEW and not m.busy and (not m.backup or not hopeful)]
        for m in woken:
            m.busy = True
        return woken

    def probes_due(self, now: float) -> list[Member]:
        """Claim the members whose time out is up, each to be probed (PROBING): :meth:`ready` or :meth:`not_ready`."""
        due = [m for m in self.members if m.state is MemberState.OUT and not m.health.out(now) and not m.busy]
        for m in due:
            m.state, m.busy = MemberState.PROBING, True
        return due

    def next_probe(self) -> float | None:
        """When the next member out of rotation is due for a probe (None: none is out)."""
        return min((m.health.out_until for m in self.members if m.state is MemberState.OUT and not m.busy),
                   default=None)

    def expect(self, sha256: str) -> None:
        """Hold the pool to model ``sha256`` from now on; CloudModelMismatchError if it already holds to another."""
        if self.model.sha256 and sha256 != self.model.sha256:
            raise CloudModelMismatchError(f"the pool serves model {self.model.sha256[:12]}..., not {sha256[:12]}...")
        self.model = ModelRule(sha256, self.model.name)

    def claim_first(self) -> Kind:
        """Claim the first member to learn the pool's model: JOIN (claimed), WAIT (a call is checking one) or NONE."""
        first = self.members[0]
        if self.model.sha256 is None and self.checking():
            return Kind.WAIT
        if self.model.sha256 is not None or first.state not in (MemberState.NEW, MemberState.READY):
            return Kind.NONE
        first.busy = True
        return Kind.JOIN

    def claim(self, member: Member) -> bool:
        """Claim ``member`` for a check of its model; False: another call has it, or is learning the pool's model."""
        if member.busy or (self.model.sha256 is None and self.checking()):
            return False
        member.busy = True
        return True

    def unclaim(self, member: Member) -> None:
        member.busy = member.founding = False

    # -- outcomes ----------------------------------------------------------------------
    def sent(self, member: Member, *, founding: bool = False, frames: int = 1) -> None:
        """A request of ``frames`` goes to ``member``; ``founding``: a claimed member whose answer will name the pool's model."""
        member.outstanding += 1
        member.outstanding_frames += frames
        member.requests += 1
        if founding:
            member.founding = True

    def take(self, member: Member) -> bool:
        """A request to a member that has just joined, if it is still in rotation (counted); False: it is not."""
        if member.state is not MemberState.READY:
            return False
        self.sent(member)
        return True

    def done(self, member: Member, *, frames: int = 1) -> None:
        """A request (of ``frames``) to ``member`` is over (answered or not); the founding request ends its claim."""
        member.outstanding -= 1
        member.outstanding_frames -= frames
        if member.founding:
            self.unclaim(member)

    def joined(self, member: Member, sha256: str, name: str) -> bool:
        """A claimed member's check named its model: in rotation (True), else disabled; the claim ends."""
        if not self._holds(member, sha256.lower(), name):
            return False
        member.sha256 = sha256.lower()
        return self.ready(member)

    def ready(self, member: Member) -> bool:
        """A claimed member (joining, woken, probed or checked again) is up, its model checked: in rotation.

        The claim ends. False, and nothing else changes, when a failure took it out meanwhile
        (or it is disabled): what the check saw is older than that.
        """
        self.unclaim(member)
        if member.state in (MemberState.OUT, MemberState.DISABLED):
            return False
        if member.state is MemberState.PROBING:
            self.notes.append(Note(Change.BACK, member))
        member.state, member.health = MemberState.READY, on_success(member.health)
        return True

    def not_ready(self, member: Member, *, now: float) -> None:
        """A probed member is not ready: out again; the claim ends."""
        member.state, member.health = MemberState.OUT, probe_failed(now=now, cfg=self.health)
        self.unclaim(member)
        self.notes.append(Note(Change.STILL_OUT, member))

    def unnamed(self, member: Member) -> None:
        """A probed member is ready but cannot name its model, and the pool has none yet: back to its first use."""
        member.state, member.health = MemberState.NEW, on_success(member.health)
        self.unclaim(member)

    def abandon(self, member: Member, now: float) -> None:
        """End a claim that an unexpected error cut short; a member being probed is out again."""
        if member.state is MemberState.PROBING:
            member.state, member.health = MemberState.OUT, probe_failed(now=now, cfg=self.health)
        self.unclaim(member)

    def answered(self, member: Member, shas: Sequence[str], *, alive: bool, frames: int | None = None) -> bool:
        """Account an answer naming these models (of ``frames``, else one a model named); False (and the member
        disabled) when one is another model. ``alive``: the answer clears the member's failures."""
        for sha in shas:
            if not self._holds(member, sha.lower(), "?", answer=True):
                return False
        member.frames += len(shas) if frames is None else frames
        if shas:
            member.sha256 = shas[0].lower()
            if member.state is MemberState.NEW:
                member.state = MemberState.READY
        if alive and (member.health.fails or member.health.out_until > -math.inf):
            member.health = on_success(member.health)
        return True

    def failed(self, member: Member, reason: str, *, now: float, retry_after_s: float | None = None,
               checking: bool = False) -> None:
        """A request to ``member`` (or, ``checking``, its check: the claim ends here) failed through its fault."""
        member.failures += 1
        if member.state is not MemberState.DISABLED:  # (why it is disabled stays said)
            member.reason = reason
        if checking and member.state is MemberState.PROBING:  # probed ready, but its check failed: out again
            member.health = probe_failed(now=now, cfg=self.health, retry_after_s=retry_after_s)
            member.state = MemberState.OUT
            taken_out = True
        else:
            member.health, took_out = failed(member.health, now=now, cfg=self.health, retry_after_s=retry_after_s)
            # (a member being probed too: what its probe will say is older than this failure)
            taken_out = took_out and member.state is not MemberState.DISABLED
            if taken_out:
                member.state = MemberState.OUT
        if checking:
            self.unclaim(member)
        self.notes.append(Note(Change.OUT, member, reason, out_for_s=member.health.out_until - now) if taken_out
                          else Note(Change.FAILED, member, reason, check=checking))

    def disable(self, member: Member, why: str, *, failure: bool = False) -> None:
        """``member`` serves another model: out for good (its claim, if any, ends); ``failure``: a request's, counted."""
        member.failures += failure
        member.busy = False
        if member.state is not MemberState.DISABLED:
            member.state, member.reason = MemberState.DISABLED, why
            self.notes.append(Note(Change.DISABLED, member, why))

    def _holds(self, member: Member, sha: str, name: str, *, answer: bool = False) -> bool:
        """Whether ``sha`` is the pool's model (the first member's names it, if none was given); else disabled."""
        founding = self.model.sha256 is None
        problem = self.model.judge(sha, name, first=member is self.members[0])
        if problem:
            self.disable(member, ("it answered from another model: " if answer else "") + problem)
            return False
        if founding:
            self.notes.append(Note(Change.FOUNDED, member, name))
        return True
