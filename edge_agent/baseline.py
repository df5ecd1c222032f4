"""What local alone would have answered: the baseline every run's summary carries.

During a run, :class:`RunRecorder` notes when each frame reached the agent (and when it
was captured) and how long every local inference took. After the run,
:func:`replay_local_only` feeds those arrivals, one by one, to a fresh
:class:`~edge_agent.core.DeviceCore` in local-only mode (``make_policy("local")``, no cloud)
on a virtual clock: a frame the core runs locally finishes after the next measured service
time (in the order they were measured, from the start again when they run out). The
released results are counted with the agent's own :class:`~edge_agent.core.stats.RunStats`, so
"within budget" means the same thing for the run and for its baseline.

It is the same device logic on the same frames, arrival times and local speed; only the
cloud is gone. What it cannot know: a local worker that never competed with the cloud
client's threads might have been a little faster (the baseline is then a little low).

>>> rec = Recording(arrivals=[Arrival(at=i * 0.05) for i in range(40)], service_s=[0.08])
>>> from edge_agent.core import CoreConfig
>>> from edge_agent.core.policy import PolicyConfig
>>> base = replay_local_only(rec, CoreConfig(policy=PolicyConfig(latency_budget_s=0.5)))
>>> base.frames, 0.5 < base.within_share < 0.7   # frames come at 20 fps, local runs 12.5 fps
(40, True)
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

from yolo_edge.errors import ConfigError

from .core import CoreConfig, DeviceCore
from .core.events import (
    Close, Event, Flush, FrameCaptured, FrameSkipped, LateAnswer, LocalDone, LocalReady, Release, RunLocal, Tick,
)
from .core.frames import Reason
from .core.policy import make_policy
from .core.stats import RunStats, percentile
from .sources import SourceFrame

__all__ = ["Arrival", "Recording", "RunRecorder", "replay_local_only", "Baseline", "baseline_of", "METHOD"]

#: how the baseline is obtained, as the summary states it
METHOD = ("this run's frame arrival times and measured local inference times, replayed through the same device "
          "core in local-only mode (no cloud) on a virtual clock")


@dataclass(frozen=True)
class Arrival:
    """One frame as the agent got it: when (its clock), when captured, or why the source skipped it."""

    at: float
    captured_at: float | None = None
    skipped: Reason | None = None


@dataclass
class Recording:
    """What a run saw of its frames and of its local worker."""

    arrivals: list[Arrival] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)  # each local inference, in order
    #: when the local backend became ready; None: ready before the first frame (or worth waiting for)
    local_ready_at: float | None = None


class RunRecorder:
    """Records a run for its baseline: wrap the source with :meth:`frames`, the detector with :meth:`timed`.

    Thread-safe: the source is read on the agent's thread, inference on the local workers'.
    ``clock`` must be the agent's clock, so arrivals and captures share one timeline.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.recording = Recording()
        self._lock = threading.Lock()

    def frames(self, items: Iterable[Any]) -> Iterator[Any]:
        """``items`` unchanged, each noted as it is handed to the agent."""
        for item in items:
            if isinstance(item, SourceFrame):
                arrival = Arrival(self.clock(), item.captured_at, item.dropped_reason)
            else:
                arrival = Arrival(self.clock())
            with self._lock:
                self.recording.arrivals.append(arrival)
            yield item

    def timed(self, detector: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``detector`` as the agent's local worker calls it, noting how long each successful call took."""

        def run(image: Any) -> Any:
            start = time.perf_counter()
            answer = detector(image)  # a failed call raises: no service time for it (as the core counts it)
            took = time.perf_counter() - start
            with self._lock:
                self.recording.service_s.append(took)
            return answer

        return run

    def local_ready(self) -> None:
        """The local backend just became ready (it was built in the background)."""
        with self._lock:
            self.recording.local_ready_at = self.clock()


def replay_local_only(recording: Recording, cfg: CoreConfig) -> RunStats:
    """The device core alone (``cfg`` less its cloud, local-only policy) over ``recording``, on a virtual clock."""
    if not recording.service_s:
        raise ConfigError("no local inference time was measured in this run: local alone cannot be replayed")
    if any(not (s >= 0) for s in recording.service_s):
        raise ConfigError("local service times must be seconds >= 0")
    local_cfg = replace(cfg, endpoints=())
    core = DeviceCore(local_cfg, cloud=False, local_ready=recording.local_ready_at is None,
                      policy=make_policy("local", local_cfg.policy))
    stats = RunStats(budget_s=local_cfg.budget_s)
    order = itertools.count()
    queue: list[tuple[float, int, int, Event]] = []  # (time, rank at equal times, order, event)

    def at(event: Event, rank: int) -> None:
        heapq.heappush(queue, (event.at, rank, next(order), event))

    # at equal times a finished inference frees its worker before a new frame is routed
    for seq, a in enumerate(recording.arrivals):
        at(FrameSkipped(at=a.at, seq=seq, reason=a.skipped, captured_at=a.captured_at) if a.skipped
           else FrameCaptured(at=a.at, seq=seq, captured_at=a.captured_at), 2)
    if recording.local_ready_at is not None:
        at(LocalReady(at=recording.local_ready_at), 1)
    end = max((a.at for a in recording.arrivals), default=0.0)
    at(Close(at=end), 3)
    service = itertools.cycle(recording.service_s)
    ticks: set[float] = set()
    now = 0.0
    while queue:
        now, _, _, event = heapq.heappop(queue)
        if isinstance(event, Tick):
            ticks.discard(event.at)
        for action in core.handle(event):
            if isinstance(action, RunLocal):
                took = next(service)
                at(LocalDone(at=now + took, seq=action.seq, service_s=took), 0)
            elif isinstance(action, Release):
                for r in action.results:
                    stats.add(r)
            elif isinstance(action, LateAnswer):
                stats.add_late_answer(action.route)
        due = core.next_timer()
        if due is not None:
            tick = max(due, now)
            # a Tick just handled consumed every timer due by now: one still "due" now would spin
            if tick not in ticks and not (tick == now and isinstance(event, Tick)):
                ticks.add(tick)
                at(Tick(at=tick), 1)
    if not core.idle:  # nothing left to happen: what is still pending leaves now, as the agent's drain would
        for action in core.handle(Flush(at=now)):
            if isinstance(action, Release):
                for r in action.results:
                    stats.add(r)
    return stats


@dataclass(frozen=True)
class Baseline:
    """Local alone on this run's frames, and what the run gained over it."""

    frames: int
    within_budget: int
    drops: dict
    late: dict
    service_samples: int
    service_p50_ms: float | None
    gain_frames: int  # the run's frames within budget less local alone's
    gain_points: float  # the same in percentage points of all frames

    @property
    def within_share(self) -> float:
        return self.within_budget / self.frames if self.frames else 0.0

    def as_dict(self) -> dict:
        return {
            "method": METHOD, "frames": self.frames, "within_budget": self.within_budget,
            "within_budget_share": round(self.within_share, 4), "drops": self.drops, "late": self.late,
            "local_service_samples": self.service_samples, "local_service_p50_ms": self.service_p50_ms,
            "gain_frames": self.gain_frames, "gain_points": round(self.gain_points, 2),
        }

    def render(self, run_within: int) -> list[str]:
        """Two lines for the summary printed at exit."""
        return [
            f"  local alone: {self.within_budget} of {self.frames} frames within budget ({self.within_share:.1%}); "
            f"this run: {run_within} ({run_within / self.frames if self.frames else 0:.1%})",
            f"  gain over local alone: {self.gain_frames:+d} frames, {self.gain_points:+.1f} points  "
            f"(baseline: {METHOD}; {self.service_samples} local inferences measured, "
            f"p50 {self.service_p50_ms} ms)",
        ]


def baseline_of(recording: Recording, cfg: CoreConfig, run: RunStats) -> Baseline:
    """Replay ``recording`` with local alone and compare it with the run's own ``run`` stats.

    Only the frames the run counted are replayed (a run stopped by a signal may have read
    one more from its source).
    """
    if len(recording.arrivals) > run.frames:
        recording = replace(recording, arrivals=recording.arrivals[:run.frames])
    local = replay_local_only(recording, cfg)
    p50 = percentile(recording.service_s, 50)
    frames = local.frames
    gain = run.within_budget - local.within_budget
    return Baseline(
        frames=frames, within_budget=local.within_budget, drops=dict(local.drops), late=dict(local.late_reasons),
        service_samples=len(recording.service_s), service_p50_ms=None if p50 is None else round(1000 * p50, 1),
        gain_frames=gain, gain_points=100.0 * gain / frames if frames else 0.0,
    )
