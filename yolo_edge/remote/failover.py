"""One request to a pool, with failover: :class:`Failover` drives a pool's :class:`~yolo_edge.remote.balancer.Balancer`.

The balancer decides (which member a try takes, who is in rotation, out, back or
disabled); :class:`Failover` holds it under a lock, reads the clock, does the I/O it asks
for (a member's model check, a probe, the request itself) and feeds back what came of it.
:class:`yolo_edge.remote.pool.EndpointPool` is the public face; it hands its own logger in, so
what happens to a member is logged under ``yolo_edge.remote.pool``.
"""

from __future__ import annotations

import logging
import threading
from enum import Enum
from typing import Callable, TypeVar

from ..errors import CloudError, CloudModelMismatchError, CloudUnavailableError, ConfigError
from .balancer import Balancer, Change, Kind, Member, MemberState, MemberStatus, Note
from .endpoint import Endpoint
from .pool_members import member_fault

__all__ = ["Failover", "Joined"]

T = TypeVar("T")


class Joined(Enum):
    """How a member's check (``verify_model``) ended."""

    READY = "ready"  # it serves the pool's model: in rotation
    UNKNOWN = "unknown"  # it cannot name its model, and the pool has none yet: its first answer will
    FAILED = "failed"  # unreachable or failing: counted against its health
    DISABLED = "disabled"  # another model: out for good


class Failover:
    """Members tried in turn until one answers with the pool's model; safe to share between threads.

    ``clock`` (seconds, monotonic) times the health rule; ``logger`` says what happened to
    members (taken out, back, disabled, the pool's model named).
    """

    def __init__(self, balancer: Balancer, *, clock: Callable[[], float], logger: logging.Logger) -> None:
        self.balancer = balancer
        self.clock = clock
        self.lock = threading.Condition()
        self._logger = logger

    @property
    def sha256(self) -> str | None:
        return self.balancer.model.sha256

    def status(self) -> list[MemberStatus]:
        with self.lock:
            return self.balancer.status(self.clock())

    def usable(self) -> list[Member]:
        with self.lock:
            return self.balancer.usable()

    def verify(self) -> dict[str, str]:
        """Check every member in rotation now (the first one first while the pool has no model): ``{name: state}``."""
        if self.sha256 is None:
            first = self.balancer.members[0]
            if self._claim_first() and self._join(first) is Joined.UNKNOWN:
                self._step(lambda b: b.unclaim(first))
                raise ConfigError(f"verify_model needs the expected sha256: the pool's model is the first endpoint's, "
                                  f"and {first.name} does not say which model it serves; pass it, or create the "
                                  "pool with expected_sha256=Detector().info.sha256")
            if self.sha256 is None:
                raise self.exhausted([], None)
        for m in self.usable():
            if m.state in (MemberState.NEW, MemberState.READY) and self._claim(m):
                self._join(m)
        states = {s.name: s.state.value for s in self.status()}
        if MemberState.READY.value not in states.values():
            raise self.exhausted([], None)
        return states

    def exhausted(self, failures: list[str], last: CloudError | None) -> CloudError:
        """The error of a call no member could answer."""
        return _exhausted(self.status(), failures, last, self.sha256)

    def call(self, work: Callable[[Endpoint], T], *, models: Callable[[T], list[str]],
             alive: Callable[[T], bool]) -> tuple[T, Member]:
        """``work(client)`` on members in turn until one answers with the pool's model; the answer and who gave it."""
        tried: set[int] = set()
        failures: list[str] = []
        last: CloudError | None = None
        while True:
            member = self._acquire(tried, failures)
            if member is None:
                raise self.exhausted(failures, last)
            tried.add(member.index)
            try:
                answer = work(member.client)
            except CloudModelMismatchError as exc:
                self._release(member)
                self._disable(member, str(exc))
                failures.append(f"{member.name}: another model")
                last = exc
                continue
            except CloudError as exc:
                self._release(member)
                if not member_fault(exc):
                    raise
                self._failed(member, exc)
                failures.append(f"{member.name}: {exc}")
                last = exc
                continue
            except BaseException:
                self._release(member)
                raise
            accepted = self._answered(member, models(answer), alive(answer))
            self._release(member)
            if accepted:
                return answer, member
            failures.append(f"{member.name}: answered from another model")
            last = CloudModelMismatchError(f"{member.name} answered from another model")

    def _acquire(self, tried: set[int], failures: list[str]) -> Member | None:
        """The member for the next try (its request counted), checking members on the way; None: no one left.

        Members whose check fails on the way are ``tried`` and their failure noted in ``failures``.
        """
        while True:
            with self.lock:
                kind, member = self.balancer.next(tried, self.clock())
                while kind is Kind.WAIT:
                    self.lock.wait(0.5)
                    kind, member = self.balancer.next(tried, self.clock())
            if member is None or kind is Kind.SEND:
                return member
            if kind is Kind.PROBE:
                self._probe(member)
                continue
            joined = self._join(member)
            if joined is Joined.UNKNOWN:  # its first answer names the pool's model: it stays claimed till then
                self._step(lambda b: b.sent(member, founding=True))
                return member
            if joined is Joined.READY and self._step(lambda b: b.take(member)):
                return member
            tried.add(member.index)
            failures.append(f"{member.name}: {member.reason}")

    def _release(self, member: Member) -> None:
        self._step(lambda b: b.done(member))

    # -- members joining, failing, coming back: I/O here, the verdicts the balancer's ------
    def _step(self, change: Callable[[Balancer], T]) -> T:
        """``change(balancer)`` under the lock, waking the calls that wait on a member; then its notes, logged."""
        with self.lock:
            result = change(self.balancer)
            notes = self.balancer.take_notes()
            self.lock.notify_all()
        for note in notes:
            _log(self._logger, note, self.sha256)
        return result

    def _claim_first(self) -> bool:
        """Claim the first member to learn the pool's model, once no call is checking one; False: not usable."""
        with self.lock:
            while (kind := self.balancer.claim_first()) is Kind.WAIT:
                self.lock.wait(0.5)
        return kind is Kind.JOIN

    def _claim(self, member: Member) -> bool:
        return self._step(lambda b: b.claim(member))

    def _join(self, member: Member) -> "Joined":
        """Check a claimed member's model (``verify_model``); it is in rotation only if it serves the pool's.

        The claim ends here, except when the member cannot name its model and the pool has
        none yet (UNKNOWN): then the caller holds it.
        """
        expected = self.sha256
        try:
            info = member.client.verify_model(expected)
        except ConfigError:
            if expected is None:
                return Joined.UNKNOWN  # a client with no model to hold it to: its first answer will say
            self._abandon(member)
            raise
        except CloudModelMismatchError as exc:
            self._disable(member, str(exc))
            return Joined.DISABLED
        except CloudError as exc:
            self._failed(member, exc, checking=True)
            return Joined.FAILED
        except BaseException:
            self._abandon(member)
            raise
        sha, name = str(info.get("sha256") or ""), str(info.get("name") or "?")
        return Joined.READY if self._step(lambda b: b.joined(member, sha, name)) else Joined.DISABLED

    def _probe(self, member: Member) -> None:
        """A member whose time out is up: ``ready()``, then its model, before it rejoins."""
        try:
            ready = member.client.ready()
        except BaseException:  # a client breaking its promise never to raise
            self._abandon(member)
            raise
        if not ready:
            self._step(lambda b: b.not_ready(member, now=self.clock()))
        elif self._join(member) is Joined.UNKNOWN:  # the pool has no model yet: back to its first use
            self._step(lambda b: b.unnamed(member))

    def _abandon(self, member: Member) -> None:
        """End a claim that an unexpected error cut short; a member being probed is out again."""
        self._step(lambda b: b.abandon(member, self.clock()))

    def _answered(self, member: Member, shas: list[str], alive: bool) -> bool:
        """Account an answer; False (and the member disabled) when it came from another model."""
        return self._step(lambda b: b.answered(member, shas, alive=alive))

    def _failed(self, member: Member, exc: CloudError, *, checking: bool = False) -> None:
        """A request to ``member`` (or, ``checking``, its check: the claim ends here) failed through its fault."""
        retry_after = exc.retry_after_s if isinstance(exc, CloudUnavailableError) else None
        self._step(lambda b: b.failed(member, str(exc), now=self.clock(), retry_after_s=retry_after,
                                      checking=checking))

    def _disable(self, member: Member, why: str) -> None:
        self._step(lambda b: b.disable(member, why))


def _exhausted(states: list[MemberStatus], failures: list[str], last: CloudError | None,
               sha256: str | None) -> CloudError:
    if all(s.state is MemberState.DISABLED for s in states):
        error: CloudError = CloudModelMismatchError(
            f"no endpoint of the pool serves model {(sha256 or '?')[:12]}...: "
            + "; ".join(f"{s.name} {s.reason}" for s in states))
    else:
        out = [s for s in states if s.state is MemberState.OUT]
        retry = min((s.out_for_s for s in out), default=None)
        described = failures or [_describe(s) for s in states]
        first_only = "" if sha256 else (
            f". The pool's model is the one its first endpoint ({states[0].name}) serves, and that endpoint has "
            "not answered yet, so no other endpoint is used (it could serve another model): pass "
            "expected_sha256= (e.g. Detector().info.sha256) or model= to let the others serve")
        error = CloudUnavailableError("no endpoint of the pool could answer: " + "; ".join(described) + first_only,
                                      retry_after_s=retry or None)
    # each member's failure is in the message: the last one's traceback would add nothing
    error.original = last
    error.__suppress_context__ = True
    return error


def _log(logger: logging.Logger, note: Note, sha256: str | None) -> None:
    """What the balancer said happened to a member, in the pool's log."""
    name = note.member.name
    if note.change is Change.FOUNDED:
        logger.info("pool model: %s (sha256 %s...), as served by %s", note.why, (sha256 or "")[:12], name)
    elif note.change is Change.BACK:
        logger.warning("endpoint %s answers again: back in rotation", name)
    elif note.change is Change.OUT:
        logger.warning("endpoint %s out of rotation for %.2f s: %s", name, note.out_for_s, note.why)
    elif note.change is Change.STILL_OUT:
        logger.debug("endpoint %s is still not ready", name)
    elif note.change is Change.FAILED:
        logger.debug("endpoint %s failed%s: %s", name, " its check" if note.check else "", note.why)
    elif note.change is Change.DISABLED:
        logger.error("endpoint %s is out of the pool for good: %s. Results of different models are never mixed: "
                     "deploy the same model there, or leave it out of the pool.", name, note.why)


def _describe(status: MemberStatus) -> str:
    text = f"{status.name} {status.state.value}"
    if status.out_for_s:
        text += f" for {status.out_for_s:.2f} s more"
    return text + (f" ({status.reason})" if status.reason else "")
