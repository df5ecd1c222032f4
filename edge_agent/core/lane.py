"""The local lane: the device's own workers, their queue, their runs and their speed.

:class:`LocalLane` is the part of :class:`edge_agent.core.DeviceCore` that knows the local
backend's state (warming up, ready, failed), the frames waiting for a worker (and the cloud
frames a busy worker runs next, ahead of them: hedges that came due), the runs in progress
and the service-time estimate they feed. It holds sequence numbers, never frames: the core
owns the frames and decides; the lane answers what the local workers can do and when.

>>> lane = LocalLane(workers=1, ready=True, estimator=WindowedQuantile(32), prior_s=0.1)
>>> lane.queue.append(0); lane.take()
0
>>> lane.start(0, now=1.0); lane.idle, lane.slot(1.0, 0.1, running={0})
(False, 1.1)
>>> lane.end(0, service_s=0.08, now=1.08); lane.estimate(0.5, 1.08)
0.08
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Callable, Container

from .estimators import WindowedQuantile

__all__ = ["LaneState", "LocalLane"]


class LaneState(Enum):
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"


class LocalLane:
    """``workers`` local workers; ``estimator`` learns their service time (``prior_s`` before it has any)."""

    def __init__(self, workers: int, *, ready: bool, estimator: WindowedQuantile, prior_s: float) -> None:
        self.workers = workers
        self.state = LaneState.READY if ready else LaneState.WARMING
        self.estimator = estimator
        self.prior_s = prior_s
        self.queue: deque[int] = deque()  # frames waiting for a worker, in order
        #: cloud frames a busy worker runs next, ahead of the queue (their hedge is due)
        self.next: deque[int] = deque()
        self.started: dict[int, float] = {}  # frame -> when its local run started
        self.busy = 0

    @property
    def ready(self) -> bool:
        return self.state is LaneState.READY

    @property
    def has_room(self) -> bool:
        """A worker is free."""
        return self.busy < self.workers

    @property
    def idle(self) -> bool:
        """A worker is free and nothing waits for it."""
        return self.ready and not self.queue and self.has_room

    def estimate(self, q: float, now: float) -> float:
        """The ``q`` quantile of a local run's time (the prior before any run ended)."""
        value = self.estimator.quantile(q, now)
        return self.prior_s if value is None else value

    def left(self, q: float, now: float) -> tuple[float, ...]:
        """For each run in progress, the ``q`` quantile of the time it still takes: its run time
        so far counts (a run nearly done frees its worker soon), and a run slower than any seen
        is planned as if it had just started."""
        full = self.estimate(q, now)
        out = []
        for started in self.started.values():
            rest = self.estimator.remaining(q, now - started, now)
            out.append(full if rest is None else rest)
        return tuple(out)

    def take(self) -> int:
        """The next queued frame, for a free worker."""
        return self.queue.popleft()

    def start(self, seq: int, now: float) -> None:
        self.busy += 1
        self.started[seq] = now

    def end(self, seq: int, *, service_s: float | None = None, now: float = 0.0) -> None:
        """A run ended; ``service_s`` (when it answered) feeds the estimate."""
        self.busy = max(0, self.busy - 1)
        self.started.pop(seq, None)
        if service_s is not None:
            self.estimator.update(service_s, at=now)

    def slot(self, now: float, est: float, running: Container[int]) -> float:
        """When a worker is free to start another frame (about); ``running``: frames not yet released."""
        if self.has_room:
            return now
        starts = [t for seq, t in self.started.items() if seq in running]
        return max(now, min(starts) + est) if starts else now + est

    def queue_can_wait(self, slot: float, est: float, deadline: Callable[[int], float]) -> bool:
        """Whether every queued frame still makes its deadline one run later."""
        return all(slot + (i + 2) * est <= deadline(seq) for i, seq in enumerate(self.queue))
