"""The device core: every decision the edge agent makes, as one sans-I/O state machine.

:class:`DeviceCore` holds the whole state of a device (the local queue and its workers,
the cloud queue, batching and the in-flight caps, the pool of cloud endpoints with their
health, wakes, Retry-After and estimates, the request timeouts, probe frames and the
in-order release window) and is driven by timestamped events; for each event it answers
with the actions to take. It never reads a clock, sleeps, starts a thread or touches the
network, so two small drivers run the very same logic: :class:`edge_agent.runner.Agent`
(threads, the real detector and cloud clients, the wall clock) and :mod:`edge_agent.sim`
(an event heap, sampled service times, a virtual clock). This is the h11 model: bytes and
events in, events out, no socket inside.

Events in and actions out are the plain values of :mod:`edge_agent.events`. After each
event the driver asks :meth:`DeviceCore.next_timer` when to deliver the next ``Tick``.

Delivery is honest: a result counts as within budget only if it is released by its
deadline. A frame still unanswered at its deadline leaves at that moment as what it is
(``dropped`` if it never started, ``late`` if it was running), so the frames behind it
flow; an answer that comes afterwards is reported as a ``LateAnswer``, never released
twice. Order is kept and every frame ends exactly once.

>>> core = DeviceCore(CoreConfig(policy=PolicyConfig(latency_budget_s=0.5)), cloud=False)
>>> core.handle(FrameCaptured(at=0.0, seq=0))
[RunLocal(seq=0)]
>>> [a.results[0].outcome.value for a in core.handle(LocalDone(at=0.04, seq=0, service_s=0.04, answer="dets"))]
['local']
>>> core.idle
True
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from yolo_edge.errors import ConfigError

from .estimators import WindowedQuantile
from .events import (
    EVENTS, Action, Close, CloudDone, Event, Failure, Flush, FrameCaptured, FrameSkipped, LateAnswer, LocalDone,
    LocalReady, Release, RunLocal, SendBatch, Tick, Wake, WakeDone,
)
from .frames import FrameResult, Outcome, Route
from yolo_edge.health import HealthConfig
from .policy import CloudState, Observation, Policy, PolicyConfig, decide
from .pool import CloudPool, Endpoint, EndpointSnapshot, EndpointSpec

__all__ = [
    "CoreConfig", "DeviceCore", "CoreSnapshot", "EndpointSpec", "Failure",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "CloudDone", "WakeDone", "Tick", "Close", "Flush",
    "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Everything the device logic needs to know, in one frozen value."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    #: failures within fail_timeout_s that take an endpoint out, and for how long
    health: HealthConfig = field(default_factory=HealthConfig)
    #: the cloud endpoints; empty: one, named "cloud" (when the device has a cloud at all)
    endpoints: tuple[EndpointSpec, ...] = ()
    local_workers: int = 1
    #: per endpoint (unless its spec says otherwise): requests in flight at once, frames per request
    max_inflight: int = 4
    max_batch: int = 1
    #: a request with no answer after this long counts as failed; None: the latency budget
    #: (an answer later than that cannot be on time for any frame in it)
    cloud_timeout_s: float | None = None
    #: frames held for in-order release; a longer backlog forces the oldest out
    window: int = 256
    #: how long one wake may take (a scale-from-zero start)
    wake_timeout_s: float = 120.0
    #: no answer measured for this long: a frame with nowhere better to go refreshes the estimate
    probe_after_s: float = 1.0
    #: samples kept by each timing estimator, and for how long at most
    estimator_window: int = 64
    estimator_horizon_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("local_workers", "max_inflight", "max_batch", "window", "estimator_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("wake_timeout_s", "probe_after_s", "estimator_horizon_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.cloud_timeout_s is not None and not (
                isinstance(self.cloud_timeout_s, (int, float)) and math.isfinite(self.cloud_timeout_s)
                and self.cloud_timeout_s > 0):
            raise ConfigError(f"cloud_timeout_s must be a positive number of seconds or None, got {self.cloud_timeout_s!r}")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        if not all(isinstance(e, EndpointSpec) for e in self.endpoints):
            raise ConfigError(f"endpoints must be EndpointSpec values, got {self.endpoints!r}")

    @property
    def budget_s(self) -> float:
        return self.policy.latency_budget_s

    @property
    def request_timeout_s(self) -> float:
        return self.cloud_timeout_s if self.cloud_timeout_s is not None else self.budget_s


@dataclass(frozen=True)
class CoreSnapshot:
    """What /healthz and the metrics show of the device."""

    local_ready: bool
    local_queued: int
    local_busy: int
    cloud_state: CloudState
    cloud_pending: int
    pending: int
    local_service_s: float | None
    cloud_rtt_s: float | None
    endpoints: tuple[EndpointSnapshot, ...] = ()


# -- internal state ------------------------------------------------------------------------
class _Stage(Enum):
    LOCAL_QUEUE = 1
    LOCAL_RUN = 2
    CLOUD_QUEUE = 3
    CLOUD_FLIGHT = 4
    DONE = 5


@dataclass
class _Frame:
    seq: int
    captured: float
    deadline: float
    budget: float
    stage: _Stage = _Stage.DONE
    reason: str | None = None
    route: Route | None = None
    outcome: Outcome | None = None
    answer: Any = None
    meta: dict | None = None
    answered_at: float | None = None
    endpoint: str | None = None
    request: int | None = None
    cloud_since: float = 0.0  # when it joined the cloud queue
    cloud_depth: int = 0  # cloud frames ahead of it then


@dataclass
class _Request:
    id: int
    endpoint: Endpoint
    seqs: tuple[int, ...]
    sent_at: float
    depth: int  # frames the endpoint already had in flight
    timeout_at: float
    entries: tuple[tuple[float, int], ...]  # each frame's (cloud_since, cloud_depth)
    deadlines: tuple[float, ...]
    timed_out: bool = False


class _LocalState(Enum):
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"


class DeviceCore:
    """One device's logic. Not thread-safe: a driver calls it from one thread or under a lock.

    ``cloud=False`` runs local only; ``cloud_warm=True`` says the endpoints are known to be
    up (woken before the run), so they start READY instead of COLD. ``local_ready=False``
    starts with the local backend still warming up (frames go to the cloud or are dropped
    as ``local_warming`` until a :class:`LocalReady` event). ``policy`` replaces
    :func:`edge_agent.policy.decide` with ``cfg.policy`` (the simulator passes its baselines).
    """

    def __init__(self, cfg: CoreConfig, *, cloud: bool = True, cloud_warm: bool = False, local_ready: bool = True,
                 policy: Policy | None = None) -> None:
        self.cfg = cfg
        self._policy: Policy = policy or (lambda obs: decide(obs, cfg.policy))
        self._pcfg = cfg.policy
        #: decisions by (route, reason), late answers by route, per-endpoint events, ...
        self.counters: Counter = Counter()
        self._local = _LocalState.READY if local_ready else _LocalState.WARMING
        self._service = WindowedQuantile(cfg.estimator_window, horizon_s=cfg.estimator_horizon_s)
        self._local_q: deque[int] = deque()
        self._local_busy = 0
        self._cloud_q: deque[int] = deque()
        specs = (cfg.endpoints or (EndpointSpec(),)) if cloud else ()
        self.pool = CloudPool(specs, max_inflight=cfg.max_inflight, max_batch=cfg.max_batch, health=cfg.health,
                              cold=not cloud_warm, estimator_window=cfg.estimator_window,
                              estimator_horizon_s=cfg.estimator_horizon_s, counters=self.counters)
        self._requests: dict[int, _Request] = {}
        self._request_ids = 0
        self._frames: dict[int, _Frame] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._timeouts: list[tuple[float, int]] = []
        self._next_seq = 0
        self._head = 0
        self._force_upto = -1
        self._offloading = False
        self._closing = False
        self._out: list[Action] = []

    # -- public ----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions to take, in order."""
        if not isinstance(event, EVENTS):
            raise ConfigError(f"DeviceCore.handle takes a core event ({', '.join(e.__name__ for e in EVENTS)}), "
                              f"got {type(event).__name__}")
        now = event.at
        self._expire(now)
        if isinstance(event, FrameCaptured):
            self._on_frame(event)
        elif isinstance(event, FrameSkipped):
            self._on_skipped(event)
        elif isinstance(event, LocalDone):
            self._on_local_done(event)
        elif isinstance(event, CloudDone):
            self._on_cloud_done(event)
        elif isinstance(event, WakeDone):
            self._on_wake_done(event)
        elif isinstance(event, LocalReady):
            self._on_local_ready(event)
        elif isinstance(event, Close):
            self._closing = True
        elif isinstance(event, Flush):
            self._closing = True
            self._flush(now)
        if not (self._closing and self.idle):
            self._out.extend(self.pool.probes_due(now))
        self._pump_local(now)
        self._pump_cloud(now)
        self._release(now)
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """When the core next needs a ``Tick`` (a deadline, a request timeout, a probe), or None."""
        while self._deadlines and self._deadlines[0][1] not in self._frames:
            heapq.heappop(self._deadlines)
        while self._timeouts and self._timeouts[0][1] not in self._requests:
            heapq.heappop(self._timeouts)
        times = [h[0][0] for h in (self._deadlines, self._timeouts) if h]
        probe = self.pool.next_timer()
        if probe is not None and not (self._closing and self.idle):  # a closed, idle device probes nothing
            times.append(probe)
        return min(times) if times else None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def pending(self) -> int:
        """Frames seen but not yet released."""
        return len(self._frames)

    @property
    def idle(self) -> bool:
        return not self._frames

    @property
    def closing(self) -> bool:
        return self._closing

    def snapshot(self, now: float) -> CoreSnapshot:
        state, _ = self.pool.view(now)
        endpoints = tuple(self.pool.snapshot(now))
        return CoreSnapshot(
            local_ready=self._local is _LocalState.READY, local_queued=len(self._local_q), local_busy=self._local_busy,
            cloud_state=state, cloud_pending=len(self._cloud_q) + self.pool.frames, pending=len(self._frames),
            local_service_s=self._service.quantile(self._pcfg.local_quantile, now),
            cloud_rtt_s=endpoints[0].rtt_s if len(endpoints) == 1 else self.pool.model.quantile(0, 0.5, now),
            endpoints=endpoints,
        )

    # -- events ----------------------------------------------------------------------------
    def _new_frame(self, seq: int, at: float, captured_at: float | None, budget_s: float | None) -> _Frame:
        if seq != self._next_seq:
            raise ConfigError(f"frames must be numbered 0, 1, 2, ... in capture order: expected {self._next_seq}, got {seq}")
        captured = at if captured_at is None else captured_at
        budget = self.cfg.budget_s if budget_s is None else budget_s
        if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
            raise ConfigError(f"a frame's budget must be a positive number of seconds, got {budget!r}")
        self._next_seq += 1
        f = _Frame(seq, captured, captured + budget, budget)
        self._frames[seq] = f
        heapq.heappush(self._deadlines, (f.deadline, seq))
        return f

    def _on_frame(self, ev: FrameCaptured) -> None:
        f = self._new_frame(ev.seq, ev.at, ev.captured_at, ev.budget_s)
        if self._closing:
            self._resolve(f, Outcome.DROPPED, "shutdown")
        elif ev.at >= f.deadline:
            self._resolve(f, Outcome.DROPPED, "expired")
        else:
            self._route(f, ev.at)

    def _on_skipped(self, ev: FrameSkipped) -> None:
        f = self._new_frame(ev.seq, ev.at, ev.captured_at, None)
        self._resolve(f, Outcome.DROPPED, ev.reason)

    def _on_local_ready(self, ev: LocalReady) -> None:
        if ev.ok:
            self._local = _LocalState.READY
        else:
            self._local = _LocalState.FAILED
            logger.error("local backend failed to load (%s): frames go to the cloud or are dropped", ev.error)

    def _on_local_done(self, ev: LocalDone) -> None:
        self._local_busy = max(0, self._local_busy - 1)
        f = self._frames.get(ev.seq)
        current = f is not None and f.stage is _Stage.LOCAL_RUN
        if ev.error is None:
            self._service.update(ev.service_s, at=ev.at)
        if not current:
            if ev.error is None:
                self._late_answer(ev.seq, Route.LOCAL, ev.at)
            return
        if ev.error is not None:
            self.counters["local_errors"] += 1
            self._resolve(f, Outcome.DROPPED, "local_error")
        else:
            self._answer(f, Route.LOCAL, ev.answer, None, ev.at)

    def _on_cloud_done(self, ev: CloudDone) -> None:
        req = self._requests.pop(ev.request, None)
        if req is None:
            raise ConfigError(f"CloudDone for request {ev.request}, which this core never sent (or answered twice)")
        ep = req.endpoint
        if not req.timed_out:
            self.pool.finished(ep, len(req.seqs), req.id)
        if ev.failure is None:
            self._on_answer(req, ev)
            return
        self.counters[f"cloud_failure_{ev.failure.value}"] += 1
        if req.timed_out:
            return  # already counted against the endpoint when it timed out
        if ev.failure is Failure.TIMEOUT:
            self._sample(req, ev.at)  # censored: the answer takes at least this long
        self.pool.failed(ep, ev.at, ev.failure, retry_after_s=ev.retry_after_s, message=ev.message)
        for seq in req.seqs:
            f = self._frames.get(seq)
            if f is not None and f.stage is _Stage.CLOUD_FLIGHT and f.request == req.id:
                self._route(f, ev.at, fallback=True)

    def _on_answer(self, req: _Request, ev: CloudDone) -> None:
        n = len(req.seqs)
        answers = list(ev.answers) if ev.answers is not None else [None] * n
        metas = list(ev.metas) if ev.metas is not None else [None] * n
        if len(answers) != n or len(metas) != n:
            raise ConfigError(f"request {req.id} sent {n} frames but got {len(answers)} answers")
        if any(not 0 <= i < n for i in ev.frame_errors):
            raise ConfigError(f"request {req.id} has {n} frames; frame_errors names {sorted(ev.frame_errors)}")
        expired = {i for i, why in ev.frame_errors.items() if why == "expired"}
        self._sample(req, ev.at, expired)
        if len(expired) == n:
            # the endpoint judged it could not answer any of them in time: a quick "expired" is no
            # sign of speed; the answer would have taken at least until the last deadline
            self.pool.timed_out_sample(req.endpoint, sent_at=req.sent_at, depth=req.depth,
                                       now=max(ev.at, max(req.deadlines)))
            self.pool.answered(req.endpoint, n=0, sent_at=req.sent_at, depth=req.depth, now=ev.at, sample=False)
        else:
            self.pool.answered(req.endpoint, n=n - len(ev.frame_errors), sent_at=req.sent_at, depth=req.depth,
                               now=ev.at, network_s=ev.network_s)
        for i, (seq, answer, meta) in enumerate(zip(req.seqs, answers, metas)):
            f = self._frames.get(seq)
            current = f is not None and f.stage is _Stage.CLOUD_FLIGHT and f.request == req.id
            why = ev.frame_errors.get(i)
            if why is not None:
                self.counters[("endpoint", req.endpoint.name, f"frames_{'expired' if why == 'expired' else 'error'}")] += 1
                if current:
                    self._resolve(f, Outcome.DROPPED, "expired_at_endpoint" if why == "expired" else "cloud_frame_error")
            elif current:
                self._answer(f, Route.CLOUD, answer, meta, ev.at, endpoint=req.endpoint.name)
            else:
                self._late_answer(seq, Route.CLOUD, ev.at)

    def _on_wake_done(self, ev: WakeDone) -> None:
        if not 0 <= ev.endpoint < len(self.pool):
            raise ConfigError(f"WakeDone for endpoint {ev.endpoint}; this core has {len(self.pool)}")
        self.pool.woken(ev.endpoint, ev.at, ok=ev.ok, failure=ev.failure, message=ev.message)

    # -- routing ---------------------------------------------------------------------------
    def _observe(self, f: _Frame, now: float) -> Observation:
        p = self._pcfg
        state, cap = self.pool.view(now)
        pending = len(self._cloud_q) + self.pool.frames
        model = self.pool.model
        stale = model.last_at is None or now - model.last_at > self.cfg.probe_after_s
        return Observation(
            frame_age_s=now - f.captured, budget_s=f.budget, local_ready=self._local is _LocalState.READY,
            local_queued=len(self._local_q), local_busy=self._local_busy, local_workers=self.cfg.local_workers,
            local_service_s=self._service.quantile(p.local_quantile, now), cloud_state=state,
            cloud_eta_s=model.quantile(pending, p.cloud_quantile, now),
            cloud_eta_low_s=model.quantile(pending, p.cloud_chance_quantile, now),
            cloud_pending=pending, cloud_capacity=cap, offloading=self._offloading,
            cloud_probe_due=stale and pending == 0 and len(self.pool) > 0,
        )

    def _route(self, f: _Frame, now: float, *, fallback: bool = False) -> None:
        d = self._policy(self._observe(f, now))
        if not fallback:
            self._offloading = d.offloading
        self.counters[("decision", d.route.value, d.reason)] += 1
        if d.wake_cloud:
            self._out.extend(self.pool.wake(self.cfg.wake_timeout_s))
        f.reason = d.reason
        f.request = None
        if d.route is Route.LOCAL:
            if self._local is not _LocalState.READY:
                raise ConfigError(f"the policy sent frame {f.seq} to a local backend that is not ready")
            f.stage = _Stage.LOCAL_QUEUE
            self._local_q.append(f.seq)
        elif d.route is Route.CLOUD:
            if not len(self.pool):
                raise ConfigError(f"the policy sent frame {f.seq} to the cloud, but no cloud is configured")
            f.stage = _Stage.CLOUD_QUEUE
            f.cloud_since, f.cloud_depth = now, len(self._cloud_q) + self.pool.frames
            self._cloud_q.append(f.seq)
        else:
            self._resolve(f, Outcome.DROPPED, d.reason)

    def _pump_local(self, now: float) -> None:
        while self._local_q and self._local_busy < self.cfg.local_workers:
            f = self._frames[self._local_q.popleft()]
            self._local_busy += 1
            f.stage = _Stage.LOCAL_RUN
            self._out.append(RunLocal(f.seq))

    def _pump_cloud(self, now: float) -> None:
        if not self._cloud_q:
            return
        state, _ = self.pool.view(now)
        if state is not CloudState.READY:
            # the cloud went away under queued frames: they go back through the policy
            while self._cloud_q:
                self._route(self._frames[self._cloud_q.popleft()], now, fallback=True)
            return
        while self._cloud_q and (ep := self.pool.pick(now, self._frames[self._cloud_q[0]].deadline,
                                                       self._pcfg.cloud_quantile)) is not None:
            seqs = tuple(self._cloud_q.popleft() for _ in range(min(ep.max_batch, len(self._cloud_q))))
            self._send(ep, seqs, now)

    def _send(self, ep: Endpoint, seqs: tuple[int, ...], now: float) -> None:
        self._request_ids += 1
        timeout = self.cfg.request_timeout_s
        frames = [self._frames[s] for s in seqs]
        req = _Request(self._request_ids, ep, seqs, now, ep.frames, now + timeout,
                       tuple((f.cloud_since, f.cloud_depth) for f in frames), tuple(f.deadline for f in frames))
        self._requests[req.id] = req
        heapq.heappush(self._timeouts, (req.timeout_at, req.id))
        self.pool.sent(ep, len(seqs), req.id, now)
        for f in frames:
            f.stage = _Stage.CLOUD_FLIGHT
            f.request = req.id
        self.counters["requests"] += 1
        network = ep.network.quantile(0.5) or 0.0
        self._out.append(SendBatch(req.id, ep.index, seqs, timeout, tuple(f.deadline for f in frames), network))

    def _sample(self, req: _Request, now: float, expired: set[int] = frozenset()) -> None:
        for i, (since, depth) in enumerate(req.entries):
            # a frame answered expired would have been answered after its deadline at the earliest
            until = max(now, req.deadlines[i]) if i in expired else now
            self.pool.model.update(depth, until - since, at=now)

    # -- time ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        """Frames at their deadline leave as what they are; requests past their timeout fail."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq = heapq.heappop(self._deadlines)
            f = self._frames.get(seq)
            if f is None:
                continue
            if f.stage is not _Stage.DONE:
                self._leave_unanswered(f, "deadline")
            # an answered frame must not wait past its own deadline behind an older one
            # (possible only with per-frame budgets): everything before it leaves now
            self._force_upto = max(self._force_upto, seq)
        while self._timeouts and self._timeouts[0][0] <= now:
            _, rid = heapq.heappop(self._timeouts)
            req = self._requests.get(rid)
            if req is None or req.timed_out:
                continue
            req.timed_out = True
            self.pool.finished(req.endpoint, len(req.seqs), req.id)
            self.counters["cloud_timeouts"] += 1
            self._sample(req, now)  # censored: the answer takes at least this long
            self.pool.timed_out_sample(req.endpoint, sent_at=req.sent_at, depth=req.depth, now=now)
            self.pool.failed(req.endpoint, now, Failure.TIMEOUT,
                             message=f"no answer within {self.cfg.request_timeout_s:.3f} s")
            for seq in req.seqs:
                f = self._frames.get(seq)
                if f is not None and f.stage is _Stage.CLOUD_FLIGHT and f.request == rid:
                    self._route(f, now, fallback=True)

    def _leave_unanswered(self, f: _Frame, why: str) -> None:
        """Resolve a frame that has to leave now without an answer."""
        if f.stage is _Stage.LOCAL_QUEUE:
            self._local_q.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, "expired_in_queue" if why == "deadline" else why)
        elif f.stage is _Stage.CLOUD_QUEUE:
            self._cloud_q.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, "expired_in_cloud_queue" if why == "deadline" else why)
        else:  # running locally or in flight: the answer may still come, and will be counted late
            f.route = Route.LOCAL if f.stage is _Stage.LOCAL_RUN else Route.CLOUD
            self._resolve(f, Outcome.LATE, why)

    def _flush(self, now: float) -> None:
        for f in list(self._frames.values()):
            if f.stage is not _Stage.DONE:
                self._leave_unanswered(f, "shutdown")

    # -- results ---------------------------------------------------------------------------
    def _resolve(self, f: _Frame, outcome: Outcome, reason: str | None) -> None:
        f.stage = _Stage.DONE
        f.outcome = outcome
        if reason is not None:
            f.reason = reason

    def _answer(self, f: _Frame, route: Route, answer: Any, meta: dict | None, now: float, *,
                endpoint: str | None = None) -> None:
        f.route, f.endpoint = route, endpoint
        f.answer, f.meta, f.answered_at = answer, meta, now
        self._resolve(f, Outcome.LOCAL if route is Route.LOCAL else Outcome.CLOUD, None)

    def _late_answer(self, seq: int, route: Route, now: float) -> None:
        self.counters[("late_answer", route.value)] += 1
        self._out.append(LateAnswer(seq, route, now))

    def _release(self, now: float) -> None:
        """Release, in order, every frame that can leave now."""
        out: list[FrameResult] = []
        while self._head in self._frames:
            f = self._frames[self._head]
            if f.stage is not _Stage.DONE:
                if f.seq <= self._force_upto:
                    self._leave_unanswered(f, "held_order")
                elif len(self._frames) > self.cfg.window:
                    self._leave_unanswered(f, "window_full")
                else:
                    break
            outcome, reason = f.outcome, f.reason
            if outcome.within_budget and now > f.deadline:
                # answered in time but held past its deadline: it did not reach the sinks in budget
                outcome, reason = Outcome.LATE, "released_late"
            out.append(FrameResult(
                seq=f.seq, outcome=outcome, route=f.route, reason=reason, captured_at=f.captured, deadline=f.deadline,
                released_at=now, answered_at=f.answered_at, detections=f.answer, meta=f.meta or {},
                endpoint=f.endpoint,
            ))
            del self._frames[self._head]
            self._head += 1
        if out:
            self._out.append(Release(tuple(out)))
