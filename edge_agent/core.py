"""The device core: every decision the edge agent makes, as one sans-I/O state machine.

:class:`DeviceCore` holds the whole state of a device (the local queue and its workers,
the cloud queue, batching and the in-flight cap, the circuit breaker, the wake, the
request timeouts, probe frames and the in-order release window) and is driven by
timestamped events; for each event it answers with the actions to take. It never reads a
clock, sleeps, starts a thread or touches the network, so two small drivers run the very
same logic: :class:`edge_agent.runner.Agent` (threads, the real detector and cloud client,
the wall clock) and :mod:`edge_agent.sim` (an event heap, sampled service times, a
virtual clock). This is the h11 model: bytes and events in, events out, no socket inside.

Events in: :class:`FrameCaptured`, :class:`FrameSkipped`, :class:`LocalReady`,
:class:`LocalDone`, :class:`CloudDone`, :class:`WakeDone`, :class:`Tick`, :class:`Close`,
:class:`Flush`. Actions out: :class:`RunLocal`, :class:`SendBatch`, :class:`Wake`,
:class:`Release`, :class:`LateAnswer`. After each event the driver asks
:meth:`DeviceCore.next_timer` when to deliver the next :class:`Tick`.

Delivery is honest: a result counts as within budget only if it is released by its
deadline. A frame still unanswered at its deadline leaves at that moment as what it is
(``dropped`` if it never started, ``late`` if it was running), so the frames behind it
flow; an answer that comes afterwards is reported as a :class:`LateAnswer`, never
released twice. Order is kept and every frame ends exactly once.

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
from typing import Any, Sequence, Union

from yolo_edge.errors import ConfigError

from .breaker import Breaker, BreakerConfig, BreakerState, on_failure, on_success
from .estimators import SojournModel, WindowedQuantile
from .frames import FrameResult, Outcome, Route
from .policy import CloudState, Observation, Policy, PolicyConfig, decide

__all__ = [
    "CoreConfig", "DeviceCore", "Failure", "CoreSnapshot",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "CloudDone", "WakeDone", "Tick", "Close", "Flush",
    "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Everything the device logic needs to know, in one frozen value."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    local_workers: int = 1
    #: cloud requests in flight at once, and frames per request
    max_inflight: int = 4
    max_batch: int = 1
    #: a request with no answer after this long counts as failed; None: the latency budget
    #: (an answer later than that cannot be on time for any frame in it)
    cloud_timeout_s: float | None = None
    #: frames held for in-order release; a longer backlog forces the oldest out
    window: int = 256
    #: how long one wake may take (a scale-from-zero start)
    wake_timeout_s: float = 120.0
    #: no round trip for this long: a frame with nowhere better to go refreshes the estimate
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

    @property
    def budget_s(self) -> float:
        return self.policy.latency_budget_s

    @property
    def request_timeout_s(self) -> float:
        return self.cloud_timeout_s if self.cloud_timeout_s is not None else self.budget_s


class Failure(str, Enum):
    """Why a cloud request or a wake did not answer."""

    UNAVAILABLE = "unavailable"  # refused, 429/502/503/504: not now
    TIMEOUT = "timeout"
    MISMATCH = "model_mismatch"  # the endpoint serves another model: never use it
    ERROR = "error"  # anything else from the transport or the service


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameCaptured:
    """A frame arrived; ``seq`` numbers frames 0, 1, 2, ... in capture order."""

    at: float
    seq: int
    captured_at: float | None = None  # default: ``at``
    budget_s: float | None = None  # per-frame override of the latency budget


@dataclass(frozen=True)
class FrameSkipped:
    """The source could not deliver this frame (a live stream overran); it is accounted for."""

    at: float
    seq: int
    reason: str
    captured_at: float | None = None


@dataclass(frozen=True)
class LocalReady:
    """The local backend finished loading (or failed to: ``ok=False``)."""

    at: float
    ok: bool = True
    error: str | None = None


@dataclass(frozen=True)
class LocalDone:
    at: float
    seq: int
    service_s: float
    answer: Any = None
    error: str | None = None


@dataclass(frozen=True)
class CloudDone:
    """The answer of one request: ``answers``/``metas`` in the order of its frames, or a failure."""

    at: float
    request: int
    answers: Sequence[Any] | None = None
    metas: Sequence[dict] | None = None
    failure: Failure | None = None
    retry_after_s: float | None = None
    message: str = ""


@dataclass(frozen=True)
class WakeDone:
    at: float
    endpoint: int = 0
    ok: bool = True
    failure: Failure | None = None
    message: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed: deliver at (or after) :meth:`DeviceCore.next_timer`."""

    at: float


@dataclass(frozen=True)
class Close:
    """Stop taking frames; what is pending resolves by its deadline."""

    at: float


@dataclass(frozen=True)
class Flush:
    """Give up on everything still pending, now (the driver's drain time ran out)."""

    at: float


Event = Union[FrameCaptured, FrameSkipped, LocalReady, LocalDone, CloudDone, WakeDone, Tick, Close, Flush]
_EVENTS = (FrameCaptured, FrameSkipped, LocalReady, LocalDone, CloudDone, WakeDone, Tick, Close, Flush)


# -- actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLocal:
    """Run frame ``seq`` on a local worker now (the core counts the worker busy)."""

    seq: int


@dataclass(frozen=True)
class SendBatch:
    """Send these frames to cloud endpoint ``endpoint`` in one request."""

    request: int
    endpoint: int
    seqs: tuple[int, ...]
    timeout_s: float
    deadlines: tuple[float, ...]  # each frame's deadline, for the wire


@dataclass(frozen=True)
class Wake:
    """Wake endpoint ``endpoint`` (GET /readyz until ready or ``wait_s`` passes), then check its model."""

    endpoint: int
    wait_s: float


@dataclass(frozen=True)
class Release:
    """Final records, in frame order: hand them to the sinks now."""

    results: tuple[FrameResult, ...]


@dataclass(frozen=True)
class LateAnswer:
    """An answer for a frame that had already left (released as late or dropped)."""

    seq: int
    route: Route
    at: float


Action = Union[RunLocal, SendBatch, Wake, Release, LateAnswer]


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
    request: int | None = None
    cloud_since: float = 0.0  # when it joined the cloud queue
    cloud_depth: int = 0  # cloud frames ahead of it then


@dataclass
class _Request:
    id: int
    endpoint: int
    seqs: tuple[int, ...]
    sent_at: float
    timeout_at: float
    entries: tuple[tuple[float, int], ...]  # each frame's (cloud_since, cloud_depth)
    timed_out: bool = False


class _LocalState(Enum):
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"


@dataclass
class _Endpoint:
    index: int
    phase: CloudState
    sojourn: SojournModel  # answer times by frames ahead
    breaker: Breaker = field(default_factory=Breaker)
    requests: int = 0  # in flight, not timed out
    frames: int = 0  # frames in those requests

    def state(self, now: float) -> CloudState:
        if self.phase is CloudState.READY and self.breaker.state(now) is BreakerState.OPEN:
            return CloudState.FAILING
        return self.phase

    def half_open(self, now: float) -> bool:
        return self.phase is CloudState.READY and self.breaker.state(now) is BreakerState.HALF_OPEN


class DeviceCore:
    """One device's logic. Not thread-safe: a driver calls it from one thread or under a lock.

    ``cloud=False`` runs local only; ``cloud_warm=True`` says the endpoint is known to be up
    (woken before the run), so it starts READY instead of COLD. ``local_ready=False`` starts
    with the local backend still warming up (frames go to the cloud or are dropped as ``local_warming`` until a
    :class:`LocalReady` event). ``policy`` replaces :func:`edge_agent.policy.decide` with
    ``cfg.policy`` (the simulator passes its baselines here).
    """

    def __init__(self, cfg: CoreConfig, *, cloud: bool = True, cloud_warm: bool = False, local_ready: bool = True,
                 policy: Policy | None = None) -> None:
        self.cfg = cfg
        self._policy: Policy = policy or (lambda obs: decide(obs, cfg.policy))
        pcfg = cfg.policy
        self._local = _LocalState.READY if local_ready else _LocalState.WARMING
        self._service = WindowedQuantile(cfg.estimator_window, horizon_s=cfg.estimator_horizon_s)
        self._local_q: deque[int] = deque()
        self._local_busy = 0
        self._cloud_q: deque[int] = deque()
        self._endpoints: list[_Endpoint] = []
        if cloud:
            phase = CloudState.READY if cloud_warm else CloudState.COLD
            self._endpoints.append(_Endpoint(0, phase, SojournModel(
                size=cfg.estimator_window, horizon_s=cfg.estimator_horizon_s, parallel=cfg.max_inflight * cfg.max_batch)))
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
        self._pcfg = pcfg
        #: decisions by (route, reason), late answers by route, failures by kind, ...
        self.counters: Counter = Counter()

    # -- public ----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions to take, in order."""
        if not isinstance(event, _EVENTS):
            raise ConfigError(f"DeviceCore.handle takes a core event ({', '.join(e.__name__ for e in _EVENTS)}), "
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
        self._pump_local(now)
        self._pump_cloud(now)
        self._release(now)
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """When the core next needs a :class:`Tick` (a deadline or a request timeout), or None."""
        while self._deadlines and self._deadlines[0][1] not in self._frames:
            heapq.heappop(self._deadlines)
        while self._timeouts and self._timeouts[0][1] not in self._requests:
            heapq.heappop(self._timeouts)
        times = [h[0][0] for h in (self._deadlines, self._timeouts) if h]
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
        ep = self._endpoints[0] if self._endpoints else None
        return CoreSnapshot(
            local_ready=self._local is _LocalState.READY, local_queued=len(self._local_q), local_busy=self._local_busy,
            cloud_state=ep.state(now) if ep else CloudState.DISABLED,
            cloud_pending=len(self._cloud_q) + sum(e.frames for e in self._endpoints), pending=len(self._frames),
            local_service_s=self._service.quantile(self._pcfg.local_quantile),
            cloud_rtt_s=ep.sojourn.quantile(0, 0.5) if ep else None,
        )

    # -- events ----------------------------------------------------------------------------
    def _new_frame(self, seq: int, at: float, captured_at: float | None, budget_s: float | None) -> _Frame:
        if seq != self._next_seq:
            raise ConfigError(f"frames must be numbered 0, 1, 2, ... in capture order: expected {self._next_seq}, got {seq}")
        self._next_seq += 1
        captured = at if captured_at is None else captured_at
        budget = self.cfg.budget_s if budget_s is None else budget_s
        if not (math.isfinite(budget) and budget > 0):
            raise ConfigError(f"a frame's budget must be a positive number of seconds, got {budget!r}")
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
        ep = self._endpoints[req.endpoint]
        if not req.timed_out:
            ep.requests -= 1
            ep.frames -= len(req.seqs)
        if ev.failure is None:
            self._sojourn(ep, req, ev.at)
            if ep.breaker.trips:
                logger.warning("cloud endpoint %d answers again: offloading resumes", ep.index)
            ep.breaker = on_success(ep.breaker)
            answers = list(ev.answers) if ev.answers is not None else [None] * len(req.seqs)
            metas = list(ev.metas) if ev.metas is not None else [None] * len(req.seqs)
            if len(answers) != len(req.seqs) or len(metas) != len(req.seqs):
                raise ConfigError(f"request {req.id} sent {len(req.seqs)} frames but got {len(answers)} answers")
            for seq, answer, meta in zip(req.seqs, answers, metas):
                f = self._frames.get(seq)
                if f is not None and f.stage is _Stage.CLOUD_FLIGHT and f.request == req.id:
                    self._answer(f, Route.CLOUD, answer, meta, ev.at)
                else:
                    self._late_answer(seq, Route.CLOUD, ev.at)
            return
        self.counters[f"cloud_failure_{ev.failure.value}"] += 1
        if req.timed_out:
            return  # already counted against the breaker when it timed out
        if ev.failure is Failure.TIMEOUT:
            self._sojourn(ep, req, ev.at)  # censored: the answer takes at least this long
        self._cloud_failed(ep, ev.at, ev.failure, ev.retry_after_s, ev.message)
        for seq in req.seqs:
            f = self._frames.get(seq)
            if f is not None and f.stage is _Stage.CLOUD_FLIGHT and f.request == req.id:
                self._route(f, ev.at, fallback=True)

    def _on_wake_done(self, ev: WakeDone) -> None:
        ep = self._endpoints[ev.endpoint]
        if ev.failure is Failure.MISMATCH:
            self._disable(ep, ev.message)
            return
        if ep.phase is not CloudState.WAKING:
            return
        ep.phase = CloudState.READY if ev.ok else CloudState.COLD
        if ev.ok:
            logger.info("cloud endpoint %d is ready", ep.index)
        else:
            self.counters["wake_failures"] += 1
            logger.warning("cloud endpoint %d did not become ready (%s); will wake it again when needed",
                           ep.index, ev.message or "timed out")

    # -- routing ---------------------------------------------------------------------------
    def _observe(self, f: _Frame, now: float) -> Observation:
        ep = self._endpoints[0] if self._endpoints else None
        p = self._pcfg
        pending = len(self._cloud_q) + (ep.frames if ep else 0)
        if ep is None:
            state, cap, eta, low, probe = CloudState.DISABLED, 1, None, None, False
        else:
            state = ep.state(now)
            half = ep.half_open(now)
            cap = 1 if half else self.cfg.max_inflight * self.cfg.max_batch
            eta = ep.sojourn.quantile(pending, p.cloud_quantile, now)
            low = ep.sojourn.quantile(pending, p.cloud_chance_quantile, now)
            stale = ep.sojourn.last_at is None or now - ep.sojourn.last_at > self.cfg.probe_after_s
            probe = stale and pending == 0
        return Observation(
            frame_age_s=now - f.captured, budget_s=f.budget, local_ready=self._local is _LocalState.READY,
            local_queued=len(self._local_q), local_busy=self._local_busy, local_workers=self.cfg.local_workers,
            local_service_s=self._service.quantile(p.local_quantile, now), cloud_state=state, cloud_eta_s=eta,
            cloud_eta_low_s=low, cloud_pending=pending, cloud_capacity=cap,
            offloading=self._offloading, cloud_probe_due=probe,
        )

    def _route(self, f: _Frame, now: float, *, fallback: bool = False) -> None:
        d = self._policy(self._observe(f, now))
        if not fallback:
            self._offloading = d.offloading
        self.counters[("decision", d.route.value, d.reason)] += 1
        if d.wake_cloud:
            self._maybe_wake(now)
        f.reason = d.reason
        f.request = None
        if d.route is Route.LOCAL:
            if self._local is not _LocalState.READY:
                raise ConfigError(f"the policy sent frame {f.seq} to a local backend that is not ready")
            f.stage = _Stage.LOCAL_QUEUE
            self._local_q.append(f.seq)
        elif d.route is Route.CLOUD:
            if not self._endpoints:
                raise ConfigError(f"the policy sent frame {f.seq} to the cloud, but no cloud is configured")
            f.stage = _Stage.CLOUD_QUEUE
            f.cloud_since, f.cloud_depth = now, len(self._cloud_q) + sum(e.frames for e in self._endpoints)
            self._cloud_q.append(f.seq)
        else:
            self._resolve(f, Outcome.DROPPED, d.reason)

    def _maybe_wake(self, now: float) -> None:
        for ep in self._endpoints:
            if ep.phase is CloudState.COLD:
                ep.phase = CloudState.WAKING
                self.counters["wakes"] += 1
                self._out.append(Wake(ep.index, self.cfg.wake_timeout_s))

    def _pump_local(self, now: float) -> None:
        while self._local_q and self._local_busy < self.cfg.local_workers:
            f = self._frames[self._local_q.popleft()]
            self._local_busy += 1
            f.stage = _Stage.LOCAL_RUN
            self._out.append(RunLocal(f.seq))

    def _pump_cloud(self, now: float) -> None:
        if not self._cloud_q:
            return
        ep = self._endpoints[0]
        state = ep.state(now)
        if state is not CloudState.READY:
            # the cloud went away under queued frames: they go back through the policy
            while self._cloud_q:
                self._route(self._frames[self._cloud_q.popleft()], now, fallback=True)
            return
        half = ep.half_open(now)
        max_requests, batch = (1, 1) if half else (self.cfg.max_inflight, self.cfg.max_batch)
        while self._cloud_q and ep.requests < max_requests:
            seqs = tuple(self._cloud_q.popleft() for _ in range(min(batch, len(self._cloud_q))))
            self._send(ep, seqs, now)

    def _send(self, ep: _Endpoint, seqs: tuple[int, ...], now: float) -> None:
        self._request_ids += 1
        timeout = self.cfg.request_timeout_s
        frames = [self._frames[s] for s in seqs]
        req = _Request(self._request_ids, ep.index, seqs, now, now + timeout,
                       tuple((f.cloud_since, f.cloud_depth) for f in frames))
        self._requests[req.id] = req
        heapq.heappush(self._timeouts, (req.timeout_at, req.id))
        ep.requests += 1
        ep.frames += len(seqs)
        for f in frames:
            f.stage = _Stage.CLOUD_FLIGHT
            f.request = req.id
        self.counters["requests"] += 1
        self._out.append(SendBatch(req.id, ep.index, seqs, timeout, tuple(f.deadline for f in frames)))

    # -- failures --------------------------------------------------------------------------
    def _cloud_failed(self, ep: _Endpoint, now: float, failure: Failure, retry_after_s: float | None,
                      message: str) -> None:
        if failure is Failure.MISMATCH:
            self._disable(ep, message)
            return
        was_open = ep.breaker.trips > 0
        ep.breaker = on_failure(ep.breaker, now=now, cfg=self.cfg.breaker, retry_after_s=retry_after_s)
        if ep.breaker.trips and not was_open:
            logger.warning("cloud endpoint %d failing (%s%s): offloading paused, probing again in %.2f s",
                           ep.index, failure.value, f": {message}" if message else "", ep.breaker.open_until - now)
        else:
            logger.debug("cloud request failed (%s%s); breaker %s", failure.value, f": {message}" if message else "",
                         ep.breaker.state(now).value)

    @staticmethod
    def _sojourn(ep: _Endpoint, req: _Request, now: float) -> None:
        for since, depth in req.entries:
            ep.sojourn.update(depth, now - since, at=now)

    def _disable(self, ep: _Endpoint, message: str) -> None:
        if ep.phase is not CloudState.DISABLED:
            logger.error("OFFLOAD REFUSED: %s -- the cloud runs a different model than this device; every frame "
                         "stays local. Deploy the same model or pass --allow-model-mismatch.", message or "model mismatch")
        ep.phase = CloudState.DISABLED

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
            ep = self._endpoints[req.endpoint]
            ep.requests -= 1
            ep.frames -= len(req.seqs)
            self.counters["cloud_timeouts"] += 1
            self._sojourn(ep, req, now)  # censored: the answer takes at least this long
            self._cloud_failed(ep, now, Failure.TIMEOUT, None, f"no answer within {self.cfg.request_timeout_s:.3f} s")
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

    def _answer(self, f: _Frame, route: Route, answer: Any, meta: dict | None, now: float) -> None:
        f.route = route
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
            ))
            del self._frames[self._head]
            self._head += 1
        if out:
            self._out.append(Release(tuple(out)))
