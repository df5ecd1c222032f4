"""A trace replayed through the real threaded agent, on the wall clock.

The simulator's claims are only worth what its fidelity to the device is worth. This
module runs the *threaded* :class:`~edge_agent.runner.Agent` (its threads, timers, locks
and sinks) on a trace: the local detector sleeps each frame's sampled service time, and
the cloud is the simulator's own :class:`~edge_agent.sim.SimCloud` model running on a
wall-clock event loop, answering through the :class:`~edge_agent.protocols.CloudEndpoint`
protocol like a real client. Comparing :func:`run_threaded` with
:func:`edge_agent.sim.simulate` on the same trace sample then measures exactly what the
simulator leaves out: thread scheduling, timer latency and real sleeps.

>>> from edge_agent.sim.traces import scenario
>>> r = run_threaded(scenario("steady", duration_s=1.5, warmup_s=0.5))
>>> r.stats.frames > 0, r.stats.dishonest, r.late_deliveries
(True, 0, 0)
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from yolo_edge.errors import CloudModelMismatchError, CloudTimeoutError, CloudUnavailableError
from yolo_edge.remote.wire import FrameResult as WireResult
from yolo_edge.remote.wire import FrameStatus, ModelRef

from ..config import AgentConfig
from ..core import Failure
from ..core.frames import FrameResult
from ..core.stats import RunStats
from ..runner import Agent
from . import SimCloud, core_config_for
from .traces import Trace, TraceSample, sample

__all__ = ["WallClockLoop", "TraceFrame", "TraceDetector", "TraceCloud", "ThreadedRun", "run_threaded"]


class WallClockLoop:
    """The simulator's event-loop interface (``now``, ``at``) on the wall clock, in one thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.t0 = clock()
        self._q: list = []
        self._n = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="livesim-loop", daemon=True)
        self._thread.start()

    @property
    def now(self) -> float:
        return self._clock() - self.t0

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        with self._cv:
            heapq.heappush(self._q, (t, next(self._n), fn, args))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._q or self._q[0][0] > self.now):
                    self._cv.wait(None if not self._q else self._q[0][0] - self.now)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._q)
            fn(*args)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=1)


@dataclass(frozen=True)
class TraceFrame:
    """A frame of the trace: all the fakes need is its number."""

    seq: int


def _sleep_exactly(seconds: float) -> None:
    """Sleep, then spin the last millisecond: ``time.sleep`` overshoots by 0.1-1 ms, which a
    detector's measured service time would carry and a real detector does not have."""
    end = time.perf_counter() + seconds
    if seconds > 0.0015:
        time.sleep(seconds - 0.0015)
    while time.perf_counter() < end:
        pass


class TraceDetector:
    """A local worker that takes frame ``seq``'s sampled service time."""

    def __init__(self, tsample: TraceSample, loop: WallClockLoop) -> None:
        self.s, self.loop = tsample, loop

    def __call__(self, frame: TraceFrame) -> str:
        _sleep_exactly(self.s.local_time(frame.seq, self.loop.now))
        return "local"


class TraceCloud:
    """The simulator's model of one endpoint behind the CloudEndpoint protocol, in real time."""

    expected_sha256 = None
    _MODEL = ModelRef("trace", "0" * 64)

    def __init__(self, tsample: TraceSample, cloud: SimCloud, loop: WallClockLoop, *, timeout_s: float) -> None:
        self.s, self.cloud, self.loop, self.timeout_s = tsample, cloud, loop, timeout_s
        self.endpoint = cloud.c.name

    def _call(self, start: Callable[[Callable], None], limit_s: float) -> tuple:
        done = threading.Event()
        box: list = []

        def callback(*result: Any) -> None:
            box.extend(result)
            done.set()

        self.loop.at(self.loop.now, start, callback)
        if not done.wait(limit_s + 1.0):  # the loop was stopped under us
            raise CloudTimeoutError("the trace's cloud stopped answering")
        return tuple(box)

    def detect_frames(self, images: Sequence[TraceFrame], *, budgets_s: Sequence[float] | None = None):
        first = images[0].seq
        now = self.loop.now
        network = self.s.network_time(first, now, self.cloud.c)
        deadlines = [now + b for b in (budgets_s or [self.timeout_s] * len(images))]
        failure, retry_after, expired = self._call(
            lambda cb: self.cloud.request(deadlines, network, self.timeout_s, cb), self.timeout_s)
        if failure is Failure.TIMEOUT:
            raise CloudTimeoutError(f"no answer within {self.timeout_s:.3f} s (trace)")
        if failure is Failure.MISMATCH:
            raise CloudModelMismatchError(f"{self.endpoint} serves another model (trace)")
        if failure is not None:
            raise CloudUnavailableError("refused (trace outage)", status_code=503 if retry_after else None,
                                        retry_after_s=retry_after)
        return [WireResult(status=FrameStatus.EXPIRED, model=self._MODEL, error="deadline passed before its batch")
                if i in expired else WireResult(status=FrameStatus.OK, model=self._MODEL, detections=_no_detections())
                for i in range(len(images))]

    def wake(self, wait_s: float = 0) -> bool:
        (ok,) = self._call(lambda cb: self.cloud.wake(wait_s, cb), wait_s)
        return bool(ok)

    def verify_model(self) -> dict:
        if self.cloud.c.wrong_model:
            raise CloudModelMismatchError(f"{self.endpoint} serves another model (trace)")
        return {}

    def close(self) -> None:
        pass


def _no_detections():
    from yolo_edge import Detections

    return Detections.empty()


class _Collect:
    """A sink that keeps results and checks when they arrived against their deadline."""

    wants_images = False

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.results: list[FrameResult] = []
        self.late_deliveries = 0

    def emit(self, r: FrameResult) -> None:
        if r.within_budget and self.clock() > r.deadline:
            self.late_deliveries += 1
        self.results.append(r)

    def close(self) -> None:
        pass


@dataclass
class ThreadedRun:
    trace: str
    stats: RunStats
    late_deliveries: int  # within-budget results that reached the sink after their deadline
    results: list[FrameResult] = field(repr=False, default_factory=list)


def run_threaded(trace: Trace, *, agent_config: AgentConfig | None = None) -> ThreadedRun:
    """Replay one device's sample of ``trace`` through the threaded agent; takes ``duration_s``."""
    tsample = sample(trace)
    core = core_config_for(trace)
    cfg = agent_config or AgentConfig(
        latency_budget_ms=1000 * trace.budget_s, queue_budget=trace.queue_budget, local_workers=trace.local_workers,
        max_inflight=trace.max_inflight, max_batch=trace.max_batch,
        cloud=[{"url": f"http://{c.name}", "weight": c.weight, "backup": c.backup} for c in trace.clouds])
    loop = WallClockLoop()
    clouds = [TraceCloud(tsample, SimCloud(loop, c, duration_s=trace.duration_s, net_rtt_s=trace.net_rtt_s), loop,
                         timeout_s=core.request_timeout_s) for c in trace.clouds]
    detector = TraceDetector(tsample, loop)
    sink = _Collect(time.monotonic)

    def load() -> TraceDetector:
        time.sleep(max(0.0, trace.local_warmup_s - loop.now))
        return detector

    kwargs: dict = {"load_detector": load} if trace.local_warmup_s > 0 else {"detector": detector}
    agent = Agent(cfg, cloud=clouds, sinks=[sink], **kwargs).start()
    try:
        for seq, t in enumerate(tsample.captured):
            wait = loop.t0 + float(t) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            agent.submit(TraceFrame(seq), captured_at=loop.t0 + float(t))
    finally:
        agent.close()
        loop.stop()
    stats = RunStats(budget_s=trace.budget_s, count_from=loop.t0 + trace.warmup_s)
    for r in sink.results:
        stats.add(r)
    for route, n in agent.stats.late_answers.items():
        stats.late_answers[route] += n
    return ThreadedRun(trace.name, stats, sink.late_deliveries, sink.results)
