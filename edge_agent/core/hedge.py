"""Hedging: which of the frames at the cloud also run locally, and when.

:class:`Hedger` is the part of :class:`edge_agent.core.DeviceCore` that decides it: an idle
worker takes a cloud frame that is running out of time (a queued one moves, one in flight
runs on both routes and the first answer wins), a busy lane runs such a frame next when
every queued frame can wait one run, a frame the endpoint answered expired is rescued
locally when that still answers it in time, and while local looks too slow for any frame
one runs anyway: the probe that shows when a slow spell is over. :class:`Hedges` books the
frames that run on both routes: the first answer is the frame's, the second is only
counted. :class:`Headroom` says whether the device has capacity to spare for a hedge ahead
of its local queue (few frames dropped for lack of capacity in the last second), the flow
of frames the policy wants at the cloud, and how much of the cloud's recent work came back
expired. All are fed event times.

>>> h = Hedges(); h.start(7)
>>> h.second(7), h.second(7), 7 in h
(False, True, False)
>>> room = Headroom()
>>> for t in (0.1, 0.2, 0.3): room.frame(t)
>>> room.dropped(Reason.CLOUD_FAILING, 0.3); room.spare(0.5)
False
>>> room.spare(1.4)
True
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import TYPE_CHECKING

from .events import RunLocal
from .frames import Reason
from .window import FrameState, ReleaseWindow, Stage

if TYPE_CHECKING:  # (the dispatcher imports Headroom from here)
    from .dispatch import CloudDispatch
    from .lane import LocalLane
    from .pool import CloudPool

__all__ = ["Hedger", "Hedges", "Headroom", "NOT_SHORT"]

#: a cloud request older than this quantile of answer times is overdue: a hedge may go ahead
_HEDGE_QUANTILE = 0.9

#: drop reasons that do not mean the device was short of capacity
NOT_SHORT = frozenset({Reason.EXPIRED, Reason.SHUTDOWN, Reason.LOCAL_WARMING, Reason.LOCAL_ERROR,
                       Reason.EXPIRED_AT_ENDPOINT, Reason.CLOUD_FRAME_ERROR})


class Hedges:
    """Hedged frames whose two runs have not both ended, and which of them have one answer."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._answered: set[int] = set()

    def start(self, seq: int) -> None:
        self._open.add(seq)

    def second(self, seq: int) -> bool:
        """An answer came for ``seq``: whether it is the second of a hedged frame's two."""
        if seq not in self._open:
            return False
        if seq in self._answered:
            self.over(seq)
            return True
        self._answered.add(seq)
        return False

    def over(self, seq: int) -> None:
        """One of the two runs ended without an answer: no second answer will come."""
        self._open.discard(seq)
        self._answered.discard(seq)

    def __contains__(self, seq: object) -> bool:
        return seq in self._open

    def __len__(self) -> int:
        return len(self._open)


class Headroom:
    """The last ``window_s`` of frames, of drops for lack of capacity and of frames the policy
    wanted the cloud for; how the cloud's last frames came back.

    ``spare``: at most ``short_share`` of the window's frames were dropped short of capacity.
    ``cloud_rate``: frames a second the policy wanted the cloud for (the flow the uplink carries).
    """

    def __init__(self, *, window_s: float = 1.0, short_share: float = 0.05, answers: int = 20) -> None:
        self.window_s, self.short_share = window_s, short_share
        self._frames: deque[float] = deque()
        self._short: deque[float] = deque()
        self._cloud: deque[float] = deque()
        self._missed: deque[bool] = deque(maxlen=answers)

    def frame(self, at: float) -> None:
        self._add(self._frames, at)

    def dropped(self, reason: Reason | None, at: float) -> None:
        """A frame was dropped for ``reason``; counted when it means the device was short."""
        if reason not in NOT_SHORT:
            self._add(self._short, at)

    def wanted_cloud(self, at: float) -> None:
        """The policy sent a frame to the cloud, or dropped it because the cloud could not take it."""
        self._add(self._cloud, at)

    def spare(self, now: float) -> bool:
        self._prune(self._frames, now)
        self._prune(self._short, now)
        return len(self._short) <= self.short_share * len(self._frames)

    def cloud_rate(self, now: float) -> float:
        self._prune(self._cloud, now)
        return len(self._cloud) / self.window_s

    def _add(self, q: deque[float], at: float) -> None:
        q.append(at)
        self._prune(q, at)  # (a window nobody asks about for hours still stays a window long)

    def _prune(self, q: deque[float], now: float) -> None:
        while q and q[0] < now - self.window_s:
            q.popleft()

    def cloud_answered(self, missed: bool) -> None:
        """The cloud answered a frame: in time, or ``missed`` (expired, an error, or after its deadline)."""
        self._missed.append(missed)

    @property
    def missing(self) -> float:
        """The share of the cloud's recent frame answers that did not answer the frame in time."""
        return sum(self._missed) / len(self._missed) if self._missed else 0.0


class Hedger:
    """Runs cloud frames locally as well, when that is their better chance.

    ``enabled`` False (a baseline policy, or hedging turned off): it never hedges or rescues.
    The lane, the dispatcher, the release window, the pool and the headroom are the core's;
    the hedger moves frames between them and books the frames that run on both routes
    (``both``).
    """

    def __init__(self, *, enabled: bool, lane: LocalLane, dispatch: CloudDispatch, frames: ReleaseWindow,
                 pool: CloudPool, headroom: Headroom, counters: Counter, local_quantile: float,
                 probe_after_s: float, uploads_share_local_cpu: bool) -> None:
        self.enabled = enabled
        self.lane, self.dispatch, self._frames, self.pool = lane, dispatch, frames, pool
        self._headroom, self.counters = headroom, counters
        self.local_quantile, self.probe_after_s = local_quantile, probe_after_s
        self.uploads_share_local_cpu = uploads_share_local_cpu
        self.both = Hedges()  # frames running on both routes

    def next_due(self, now: float) -> float | None:
        """When an idle worker's hedge next comes due (None: none will, as things stand)."""
        if not self.enabled or not self.lane.idle:
            return None
        est = self.lane.estimate(self.local_quantile, now)
        times = [f.deadline - est for f in self.dispatch.waiting()]
        due = min(times, default=None)
        return None if due is None or due <= now else due

    def step(self, now: float) -> list[RunLocal]:
        """An idle local worker takes a cloud frame that is running out of time (queued: it moves;
        in flight: it runs on both, the first answer wins), or, while local looks too slow for any
        frame, runs one anyway: the probe that shows when the slow spell is over. With every
        worker busy, a frame only a local run started next can still answer goes next in line."""
        if not self.enabled:
            return []
        out = []
        while self.lane.idle:
            f = self._pick(now)
            if f is None:
                break
            out.append(self.start(f, now))
        if self.lane.ready and not self.lane.has_room and not self.lane.next and self._spare(now):
            f = self._ahead(now)
            if f is not None:
                self.lane.next.append(f.seq)
                self.counters[("hedge", "next_in_line")] += 1
        return out

    def start(self, f: FrameState, now: float) -> RunLocal:
        """Run cloud frame ``f`` on a free local worker now."""
        if f.stage is Stage.CLOUD_QUEUE:
            self.dispatch.queue.remove(f.seq)
            f.move(Stage.LOCAL_RUN)
            self.counters[("hedge", "moved_local")] += 1
        else:
            f.hedged = True
            self.both.start(f.seq)
            self.counters[("hedge", "started")] += 1
        self.lane.start(f.seq, now)
        return RunLocal(f.seq)

    def cloud_over(self, f: FrameState) -> None:
        """The cloud side of hedged frame ``f`` ended without an answer: its local run, under way,
        is its chance now."""
        f.move(Stage.LOCAL_RUN)
        f.request, f.hedged = None, False
        self.both.over(f.seq)

    def rescue(self, f: FrameState, now: float) -> bool:
        """A cloud frame came back unanswered (expired at the endpoint, an error): it runs
        locally next if that can still answer it in time at no other frame's expense."""
        if not self.enabled or not self.lane.ready or not self._spare(now):
            return False
        if self.uploads_share_local_cpu and self._headroom.missing > 0.5:
            return False  # a cloud missing most frames: rescuing them all would starve the local queue
        est = self.lane.estimate(self.local_quantile, now)
        slot = self.lane.slot(now, est, self._frames)
        if slot + self.lane.estimate(0.25, now) > f.deadline or not self._queue_can_wait(slot, est):
            return False
        f.move(Stage.LOCAL_QUEUE)
        f.request = None
        self.lane.queue.appendleft(f.seq)
        self.counters[("hedge", "rescued_local")] += 1
        return True

    def _spare(self, now: float) -> bool:
        """Whether a frame a hedge displaces from the local lane still has somewhere to go: the
        cloud has answered lately (over a dead link or a dead cloud, a hedge ahead of the local
        queue would only trade one local frame for another)."""
        last = self.pool.model.last_at
        if last is None or now - last > self.probe_after_s:
            return False
        # a device dropping more than a few frames in a second for lack of capacity has none to spare
        return self._headroom.spare(now)

    def _queue_can_wait(self, slot: float, est: float) -> bool:
        """Whether every frame in the local queue still makes its deadline one run later."""
        return self.lane.queue_can_wait(slot, est, lambda seq: self._frames[seq].deadline)

    def _cloud_likely_in_time(self, f: FrameState, now: float) -> bool:
        """Whether the cloud's answer to an in-flight frame is still likely by its deadline (its
        request is younger than most answers take, and they come in time): then a hedge
        would most likely be a local run wasted."""
        if f.stage is not Stage.CLOUD_FLIGHT:
            return False
        req = self.dispatch.requests.get(f.request)
        if req is None:
            return False
        p90 = self.pool.model.quantile(req.pool_depth, _HEDGE_QUANTILE, now)
        if p90 is None:
            return False
        link = self.dispatch.link
        if req.uploaded_at is None:  # still on the uplink: its answer comes after the upload
            return link.upload_end(now, 0) + p90 <= f.deadline and not link.overdue(now)
        return now - req.since <= p90 and req.since + p90 <= f.deadline

    def _ahead(self, now: float) -> FrameState | None:
        """With every worker busy: a cloud frame whose answer is not back, that only a local run
        started next (ahead of the local queue) can still answer in time, when each frame in the
        local queue still makes its deadline one run later."""
        est = self.lane.estimate(self.local_quantile, now)
        low = self.lane.estimate(0.25, now)
        slot = self.lane.slot(now, est, self._frames)
        # due: the next free slot is the last one whose run can still finish by the deadline
        if slot + 2 * est < min((f.deadline for f in self.dispatch.waiting()), default=math.inf):
            return None  # nothing due yet: the cloud still has time
        # a frame sent on a chance (local had no room for it) is not put ahead of frames local took
        due = [f for f in self.dispatch.waiting()
               if slot + 2 * est >= f.deadline >= slot + low and f.reason != Reason.CLOUD_CHANCE
               and not self._cloud_likely_in_time(f, now)]
        if not due:
            return None
        if not self._queue_can_wait(slot, est):
            return None  # the local queue has no room to spare
        return min(due, key=lambda f: f.deadline)

    def _pick(self, now: float) -> FrameState | None:
        """The cloud frame an idle worker takes now, if any."""
        est = self.lane.estimate(self.local_quantile, now)
        low = self.lane.estimate(0.25, now)
        frames = list(self.dispatch.waiting())
        # due: no answer yet by the last moment a local run could still finish; and it still can
        can = [f for f in frames if f.deadline - est <= now and now + low <= f.deadline]
        if can:
            return min(can, key=lambda f: f.deadline)
        if self.dispatch.link_stalled(now):
            # the uplink carries nothing for now: frames still waiting to leave on it are the idle
            # worker's to take at once (a stalled upload answers nothing, an idle worker may)
            stuck = [f for f in frames if now + low <= f.deadline and
                     (f.stage is Stage.CLOUD_QUEUE or self.dispatch.requests[f.request].uploaded_at is None)]
            if stuck:
                return min(stuck, key=lambda f: f.deadline)
        flying = [f for f in frames if f.stage is Stage.CLOUD_FLIGHT]
        if flying and all(now + low > f.deadline for f in frames):
            return max(flying, key=lambda f: f.deadline)  # the probe: a copy, the cloud still answers it
        return None
