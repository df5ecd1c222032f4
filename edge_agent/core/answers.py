"""What comes back to the device: the end of a local run, and an endpoint's answer.

:class:`Answers` is the part of :class:`edge_agent.core.DeviceCore` that takes each answer to
the frame it answers. A frame still waiting for it is answered (``local`` or ``cloud``); a
hedged frame's first answer is its own and the second is only counted (``hedge/second_answer``);
an answer for a frame that already left is a :class:`edge_agent.core.events.LateAnswer`, counted and
never released twice. A failed local run drops its frame (``local_error``), unless the frame
is a hedge whose cloud side may still answer; a frame the endpoint answered expired or in
error runs locally if it still can (:meth:`edge_agent.core.hedge.Hedger.rescue`), else it is
dropped (``expired_at_endpoint``, ``cloud_frame_error``).

A request that failed, timed out or was not sent is not an answer: the core gives its frames
back to :class:`edge_agent.core.routing.Router`. Like the core it never reads a clock.

>>> from edge_agent.core import DeviceCore, CoreConfig, FrameCaptured, LocalDone
>>> core = DeviceCore(CoreConfig(), cloud=False)
>>> core.handle(FrameCaptured(at=0.0, seq=0))
[RunLocal(seq=0)]
>>> core.handle(LocalDone(at=0.3, seq=0, service_s=0.3))[0].results[0].outcome.value
'local'
>>> core.handle(LocalDone(at=0.4, seq=0, service_s=0.1))  # a second answer: the frame left
[LateAnswer(seq=0, route=<Route.LOCAL: 'local'>, at=0.4)]
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from yolo_edge.remote.wire import FrameStatus

from .events import CloudDone, LateAnswer, LocalDone
from .frames import Outcome, Reason, Route
from .hedge import Headroom, Hedger
from .lane import LocalLane
from .routing import Resolve
from .window import FrameState, ReleaseWindow, Stage

if TYPE_CHECKING:
    from .dispatch import CloudDispatch, Request

__all__ = ["Answers"]

#: why a frame the endpoint answered without detections is dropped, by its status on the wire
_UNANSWERED = {FrameStatus.EXPIRED: Reason.EXPIRED_AT_ENDPOINT, FrameStatus.ERROR: Reason.CLOUD_FRAME_ERROR}


class Answers:
    """Takes the answers of one device's local runs and cloud requests to their frames.

    The lane, the dispatcher, the hedger, the release window and the headroom are the core's;
    ``resolve`` is the core's too (it ends a frame: answered, or dropped).
    """

    def __init__(self, *, lane: LocalLane, dispatch: CloudDispatch, hedger: Hedger, frames: ReleaseWindow,
                 headroom: Headroom, counters: Counter, resolve: Resolve) -> None:
        self.lane, self.dispatch, self.hedger = lane, dispatch, hedger
        self._frames, self._headroom, self.counters, self._resolve = frames, headroom, counters, resolve

    def local_done(self, ev: LocalDone) -> list[LateAnswer]:
        """A local run ended, with an answer or an error."""
        self.lane.end(ev.seq, service_s=ev.service_s if ev.error is None else None, now=ev.at)
        f = self._frames.get(ev.seq)
        running = f is not None and (f.stage is Stage.LOCAL_RUN or (f.hedged and f.stage is Stage.CLOUD_FLIGHT))
        if ev.error is not None:
            self.counters["local_errors"] += 1
            self.hedger.both.over(ev.seq)
            if running and f.stage is Stage.CLOUD_FLIGHT:  # a hedge failed: the cloud may still answer
                f.hedged = False
            elif running:
                self._resolve(f, Outcome.DROPPED, Reason.LOCAL_ERROR)
            return []
        if self._second(ev.seq, Route.LOCAL):
            return []
        if not running:
            return [self._late(ev.seq, Route.LOCAL, ev.at)]
        if f.hedged:
            self.counters[("hedge", "local_first")] += 1
        self._answer(f, Route.LOCAL, ev.answer, None, ev.at)
        return []

    def cloud_done(self, req: Request, ev: CloudDone) -> list[LateAnswer]:
        """The endpoint answered ``req`` (off the dispatcher's books): each frame its answer, or
        its status on the wire (expired, an error)."""
        n = len(req.seqs)
        answers = list(ev.answers) if ev.answers is not None else [None] * n
        metas = list(ev.metas) if ev.metas is not None else [None] * n
        self.dispatch.answered(req, ev)
        out = []
        for i, (seq, answer, meta) in enumerate(zip(req.seqs, answers, metas)):
            f = self._frames.get(seq)
            current = f is not None and f.stage is Stage.CLOUD_FLIGHT and f.request == req.id
            why = ev.frame_errors.get(i)
            # an upload that brought no answer in time (on a device whose uploads share the
            # local core, each such one cost local capacity for nothing)
            self._headroom.cloud_answered(why is not None or ev.at > req.deadlines[i])
            if why is not None:
                self.counters[("endpoint", req.endpoint.name, f"frames_{why.value}")] += 1
                if current and f.hedged:
                    self.hedger.cloud_over(f)  # the local run is its chance
                else:
                    self.hedger.both.over(seq)
                    if current and not self.hedger.rescue(f, ev.at):
                        self._resolve(f, Outcome.DROPPED, _UNANSWERED[why])
            elif self._second(seq, Route.CLOUD):
                continue
            elif current:
                if f.hedged:
                    self.counters[("hedge", "cloud_first")] += 1
                self._answer(f, Route.CLOUD, answer, meta, ev.at, endpoint=req.endpoint.name)
            else:
                out.append(self._late(seq, Route.CLOUD, ev.at))
        return out

    def _answer(self, f: FrameState, route: Route, answer: Any, meta: dict | None, now: float, *,
                endpoint: str | None = None) -> None:
        f.route, f.endpoint = route, endpoint
        f.answer, f.meta, f.answered_at = answer, meta, now
        self._resolve(f, Outcome.LOCAL if route is Route.LOCAL else Outcome.CLOUD, None)

    def _second(self, seq: int, route: Route) -> bool:
        """Whether this answer is the second of a hedged frame's two (counted here, used nowhere)."""
        if self.hedger.both.second(seq):
            self.counters[("hedge", "second_answer", route.value)] += 1
            return True
        return False

    def _late(self, seq: int, route: Route, now: float) -> LateAnswer:
        """An answer for a frame that already left without one: counted, never released twice."""
        self.counters[("late_answer", route.value)] += 1
        return LateAnswer(seq, route, now)
