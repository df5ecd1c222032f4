"""The release window: a device's frames in capture order, each leaving once, in that order.

:class:`ReleaseWindow` is the part of :class:`edge_agent.core.DeviceCore` that owns the
frames not yet released: their states (:class:`FrameState`), their deadlines, and the
in-order release. A frame moves through the stages of :data:`TRANSITIONS` and nowhere
else; :meth:`FrameState.move` refuses any other move before it changes anything.

Release is honest: the head of the window leaves as soon as it is resolved; a frame still
unanswered at its deadline is resolved then (by the core, which knows where it waits) and
every frame before it leaves with it; an answered frame that would leave after its
deadline is reported ``late[released_late]``.

>>> w = ReleaseWindow(size=8)
>>> f = w.add(FrameState(0, captured=0.0, deadline=0.5, budget=0.5, stage=Stage.LOCAL_QUEUE))
>>> w.release(0.1, leave=None)
()
>>> f.move(Stage.LOCAL_RUN); f.move(Stage.DONE); f.outcome, f.route = Outcome.LOCAL, Route.LOCAL
>>> [(r.seq, r.outcome.value) for r in w.release(0.2, leave=None)]
[(0, 'local')]
>>> f.move(Stage.LOCAL_RUN)
Traceback (most recent call last):
...
edge_agent.core.window.StageError: frame 0 cannot move from DONE to LOCAL_RUN (allowed: none)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator

from .frames import FrameResult, Outcome, Reason, Route
from .link import Rung

__all__ = ["Stage", "TRANSITIONS", "StageError", "FrameState", "ReleaseWindow"]


class Stage(Enum):
    NEW = 0  # seen, not yet routed
    LOCAL_QUEUE = 1
    LOCAL_RUN = 2
    CLOUD_QUEUE = 3
    CLOUD_FLIGHT = 4
    DONE = 5


#: every move a frame may make; DONE (answered, late or dropped) is final. A frame the local
#: lane took stays there. A cloud frame can come back to the local lane: a hedge moves a
#: queued one (LOCAL_RUN), the policy re-routes one whose request failed or could not be sent
#: (LOCAL_QUEUE or the cloud queue again), a rescue re-queues one the endpoint answered
#: expired; a frame in flight that also runs locally (a hedge) stays CLOUD_FLIGHT until one
#: run ends, and becomes LOCAL_RUN if its request fails first.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.NEW: frozenset({Stage.LOCAL_QUEUE, Stage.CLOUD_QUEUE, Stage.DONE}),
    Stage.LOCAL_QUEUE: frozenset({Stage.LOCAL_RUN, Stage.DONE}),
    Stage.LOCAL_RUN: frozenset({Stage.DONE}),
    Stage.CLOUD_QUEUE: frozenset({Stage.CLOUD_QUEUE, Stage.CLOUD_FLIGHT, Stage.LOCAL_QUEUE, Stage.LOCAL_RUN,
                                  Stage.DONE}),
    Stage.CLOUD_FLIGHT: frozenset({Stage.CLOUD_QUEUE, Stage.LOCAL_QUEUE, Stage.LOCAL_RUN, Stage.DONE}),
    Stage.DONE: frozenset(),
}


class StageError(RuntimeError):
    """A frame was asked to make a move :data:`TRANSITIONS` does not allow (a bug in the core)."""


@dataclass
class FrameState:
    """One frame the device has seen and not yet released."""

    seq: int
    captured: float
    deadline: float
    budget: float
    stage: Stage = Stage.NEW
    reason: Reason | None = None
    route: Route | None = None
    outcome: Outcome | None = None
    answer: Any = None
    meta: dict | None = None
    answered_at: float | None = None
    endpoint: str | None = None
    request: int | None = None
    hedged: bool = False  # also running locally while its request is out
    rung: Rung | None = None  # how it was (or is being) uploaded
    nbytes: int | None = None  # its encoded size, once the driver said

    def move(self, stage: Stage) -> None:
        """Move to ``stage``; a move the table does not allow raises before anything changes."""
        if stage not in TRANSITIONS[self.stage]:
            allowed = ", ".join(s.name for s in TRANSITIONS[self.stage]) or "none"
            raise StageError(f"frame {self.seq} cannot move from {self.stage.name} to {stage.name} (allowed: {allowed})")
        self.stage = stage


class ReleaseWindow:
    """The frames not yet released, by sequence number, with their deadlines; released in order.

    ``size`` bounds the window: with more frames than that waiting, the oldest is forced out.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._frames: dict[int, FrameState] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._head = 0  # the next frame to leave
        self._force_upto = -1  # every frame up to this one leaves now, answered or not

    def add(self, f: FrameState) -> FrameState:
        self._frames[f.seq] = f
        heapq.heappush(self._deadlines, (f.deadline, f.seq))
        return f

    def get(self, seq: int) -> FrameState | None:
        return self._frames.get(seq)

    def __getitem__(self, seq: int) -> FrameState:
        return self._frames[seq]

    def __contains__(self, seq: object) -> bool:
        return seq in self._frames

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[FrameState]:
        return iter(list(self._frames.values()))

    def due(self, now: float) -> Iterator[FrameState]:
        """The frames whose deadline has come, once each; every frame before each leaves with it.

        The caller resolves those still unanswered (it knows where they wait) before :meth:`release`.
        """
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq = heapq.heappop(self._deadlines)
            f = self._frames.get(seq)
            if f is None:
                continue
            yield f
            # an answered frame must not wait past its own deadline behind an older one
            # (possible only with per-frame budgets): everything before it leaves now
            self._force_upto = max(self._force_upto, seq)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a frame still in the window."""
        while self._deadlines and self._deadlines[0][1] not in self._frames:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def release(self, now: float, leave: Callable[[FrameState, Reason], None] | None) -> tuple[FrameResult, ...]:
        """Every frame that can leave now, in order. ``leave(frame, why)`` resolves one that must
        leave unanswered (``held_order``: a later frame's deadline came; ``window_full``)."""
        out: list[FrameResult] = []
        while self._head in self._frames:
            f = self._frames[self._head]
            if f.stage is not Stage.DONE:
                if f.seq <= self._force_upto:
                    why = Reason.HELD_ORDER
                elif len(self._frames) > self.size:
                    why = Reason.WINDOW_FULL
                else:
                    break
                if leave is None:
                    raise StageError(f"frame {f.seq} must leave unanswered ({why}) and no one can resolve it")
                leave(f, why)
            out.append(self._result(f, now))
            del self._frames[self._head]
            self._head += 1
        return tuple(out)

    @staticmethod
    def _result(f: FrameState, now: float) -> FrameResult:
        outcome, reason = f.outcome, f.reason
        if outcome.within_budget and now > f.deadline:
            # answered in time but held past its deadline: it did not reach the sinks in budget
            outcome, reason = Outcome.LATE, Reason.RELEASED_LATE
        upload = None
        if f.route is Route.CLOUD and f.rung is not None:
            upload = {"encoding": f.rung.name, "bytes": f.nbytes, "exact": f.rung.exact}
        return FrameResult(
            seq=f.seq, outcome=outcome, route=f.route, reason=reason, captured_at=f.captured, deadline=f.deadline,
            released_at=now, answered_at=f.answered_at, detections=f.answer, meta=f.meta or {},
            endpoint=f.endpoint, upload=upload, hedged=f.hedged,
        )
