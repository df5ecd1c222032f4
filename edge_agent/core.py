"""The device core: every decision the edge agent makes, as one sans-I/O state machine.

:class:`DeviceCore` holds the whole state of a device (the local queue and its workers,
the cloud queue, batching and the in-flight caps, the pool of cloud endpoints with their
health, wakes, Retry-After and estimates, the request timeouts, probe frames, and the
frames themselves in :class:`edge_agent.window.ReleaseWindow`: their stages, deadlines and
in-order release) and is driven by timestamped events; for each event it answers
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
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from yolo_edge.errors import ConfigError
from yolo_edge.wire import FrameStatus

from .estimators import WindowedQuantile
from .events import (
    EVENTS, Action, Close, CloudDone, Encoded, Event, Failure, Flush, FrameCaptured, FrameSkipped, LateAnswer,
    LocalDone, LocalReady, Release, RunLocal, SendBatch, Tick, Uploaded, Wake, WakeDone,
)
from .frames import FrameResult, Outcome, Route
from yolo_edge.health import HealthConfig
from .hedge import Headroom, Hedges
from .lane import LaneState, LocalLane
from .link import FrameSizes, Ladder, Rung, Uplink
from .policy import CloudState, Mode, Observation, Policy, PolicyConfig, decide
from .pool import CloudPool, Endpoint, EndpointSnapshot, EndpointSpec
from .window import FrameState, ReleaseWindow, Stage

__all__ = [
    "CoreConfig", "DeviceCore", "CoreSnapshot", "EndpointSpec", "Failure",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "Encoded", "Uploaded", "CloudDone", "WakeDone", "Tick",
    "Close", "Flush", "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]

logger = logging.getLogger(__name__)

#: a cloud request older than this quantile of answer times is overdue: a hedge may go ahead
_HEDGE_QUANTILE = 0.9

#: the policy's decisions that wanted the cloud: sent there, or dropped because it could not take them
_WANTED_CLOUD = frozenset({"cloud_busy", "cloud_too_slow", "uplink_too_slow"})
#: the upload encoding is one at which the frames sent to the cloud over the last second would
#: load the uplink's planned goodput to at most this share
_LINK_LOAD = 0.8



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
    #: a frame at the cloud with no answer by the last moment a local run could still finish
    #: by its deadline is also run locally when a worker is idle (the first answer wins)
    hedge: bool = True
    #: upload encodings, best first (lossless PNG while it fits the deadline, then JPEG qualities)
    ladder: Ladder = field(default_factory=lambda: Ladder.parse(None))
    #: the uplink's goodput assumed before any upload is measured, bits/s (None: not planned for
    #: until measured). A driver that never reports :class:`Uploaded` turns the uplink model off.
    uplink_prior_bps: float | None = 10e6
    #: the device's uploads (shrinking, encoding, HTTP) run on the local worker's core (a one-core
    #: device): an upload with little chance of an answer then costs local capacity, so no frame
    #: is sent on a chance (a probe aside) while most of the cloud's recent answers missed their
    #: frame's deadline (expired, errors, late)
    uploads_share_local_cpu: bool = False

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
        if not isinstance(self.ladder, Ladder):
            object.__setattr__(self, "ladder", Ladder.parse(self.ladder))
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
    #: the uplink: measured goodput (bits/s, None before any upload), bytes sent, time busy
    uplink_bps: float | None = None
    uplink_sent_bytes: int = 0
    uplink_busy_s: float = 0.0


# -- internal state ------------------------------------------------------------------------
@dataclass
class _Request:
    id: int
    endpoint: Endpoint
    seqs: tuple[int, ...]
    sent_at: float
    depth: int  # frames the endpoint already had in flight
    pool_depth: int  # frames the whole pool had in flight
    timeout_at: float
    deadlines: tuple[float, ...]
    uploaded_at: float | None = None  # when its body had left the device (None: not known)
    timed_out: bool = False
    encoded: bool = False  # its frames' real sizes are known (an Encoded event)

    @property
    def since(self) -> float:
        """Since when the endpoint has had it."""
        return self.uploaded_at if self.uploaded_at is not None else self.sent_at


class DeviceCore:
    """One device's logic. Not thread-safe: a driver calls it from one thread or under a lock.

    ``cloud=False`` runs local only; ``cloud_warm=True`` says the endpoints are known to be
    up (woken before the run), so they start READY instead of COLD. ``local_ready=False``
    starts with the local backend still warming up (frames go to the cloud or are dropped
    as ``local_warming`` until a :class:`LocalReady` event). ``policy`` replaces
    :func:`edge_agent.policy.decide` with ``cfg.policy`` (the simulator passes its baselines;
    they run without hedging, as they would on their own).
    """

    def __init__(self, cfg: CoreConfig, *, cloud: bool = True, cloud_warm: bool = False, local_ready: bool = True,
                 policy: Policy | None = None) -> None:
        self.cfg = cfg
        self._policy: Policy = policy or (lambda obs: decide(obs, cfg.policy))
        self._pcfg = cfg.policy
        self._hedging = cfg.hedge and policy is None and cfg.policy.mode is Mode.HYBRID
        #: decisions by (route, reason), late answers by route, per-endpoint events, ...
        self.counters: Counter = Counter()
        self.local = LocalLane(cfg.local_workers, ready=local_ready, prior_s=cfg.policy.local_service_prior_s,
                               estimator=WindowedQuantile(cfg.estimator_window, horizon_s=cfg.estimator_horizon_s,
                                                          forget_s=4 * cfg.estimator_horizon_s))
        #: the last second's frames and its drops for lack of capacity (when each was seen)
        self._link_doubt = False  # an upload ended unacknowledged before the link was ever measured
        self._cloud_q: deque[int] = deque()
        specs = (cfg.endpoints or (EndpointSpec(),)) if cloud else ()
        self.pool = CloudPool(specs, max_inflight=cfg.max_inflight, max_batch=cfg.max_batch, health=cfg.health,
                              cold=not cloud_warm, estimator_window=cfg.estimator_window,
                              estimator_horizon_s=cfg.estimator_horizon_s, counters=self.counters)
        self.link = Uplink(prior_bps=cfg.uplink_prior_bps)
        self.sizes = FrameSizes()
        self._requests: dict[int, _Request] = {}
        self._request_ids = 0
        self._frames = ReleaseWindow(cfg.window)
        self._timeouts: list[tuple[float, int]] = []
        self._hedges = Hedges()  # frames running on both routes
        #: the last second's frames and drops for lack of capacity (above 5% dropped, no hedge goes
        #: ahead of the local queue) and frames wanted at the cloud (the flow the uplink carries),
        #: and how many of the cloud's last 20 answers were expired
        self._headroom = Headroom(window_s=1.0, short_share=0.05, answers=20)
        self._uploads_reported = False
        self._next_seq = 0
        self._offloading = False
        self._closing = False
        self._now = -math.inf
        self._out: list[Action] = []

    # -- public ----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions to take, in order."""
        if not isinstance(event, EVENTS):
            raise ConfigError(f"DeviceCore.handle takes a core event ({', '.join(e.__name__ for e in EVENTS)}), "
                              f"got {type(event).__name__}")
        self._reject_bad(event)  # before anything changes, time included
        now = event.at
        self._now = max(self._now, now)
        self._expire(now)
        if isinstance(event, FrameCaptured):
            self._on_frame(event)
        elif isinstance(event, FrameSkipped):
            self._on_skipped(event)
        elif isinstance(event, LocalDone):
            self._on_local_done(event)
        elif isinstance(event, Encoded):
            self._on_encoded(event)
        elif isinstance(event, Uploaded):
            self._on_uploaded(event)
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
        self._hedge(now)
        self._release(now)
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """When the core next needs a ``Tick`` (a deadline, a request timeout, a probe, the
        uplink freeing up, a hedge coming due), or None."""
        while self._timeouts and self._timeouts[0][1] not in self._requests:
            heapq.heappop(self._timeouts)
        times = [t for t in (self._frames.next_deadline(), self._timeouts[0][0] if self._timeouts else None)
                 if t is not None]
        probe = self.pool.next_timer()
        if probe is not None and not (self._closing and self.idle):  # a closed, idle device probes nothing
            times.append(probe)
        if self._cloud_q:
            link = self.link.next_timer(self._now)
            if link is not None:
                times.append(link)
        hedge = self._next_hedge()
        if hedge is not None:
            times.append(hedge)
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
        link = self.link.stats(now)
        return CoreSnapshot(
            local_ready=self.local.ready, local_queued=len(self.local.queue), local_busy=self.local.busy,
            cloud_state=state, cloud_pending=len(self._cloud_q) + self.pool.frames, pending=len(self._frames),
            local_service_s=self.local.estimator.quantile(self._pcfg.local_quantile, now),
            cloud_rtt_s=endpoints[0].rtt_s if len(endpoints) == 1 else self.pool.model.quantile(0, 0.5, now),
            endpoints=endpoints, uplink_bps=link["goodput_bps"], uplink_sent_bytes=link["sent_bytes"],
            uplink_busy_s=link["busy_s"],
        )

    # -- events ----------------------------------------------------------------------------
    def _reject_bad(self, event: Event) -> None:
        """Raise a ConfigError for an event that cannot be applied, so that none is half-applied."""
        if isinstance(event, (FrameCaptured, FrameSkipped)):
            if event.seq != self._next_seq:
                raise ConfigError(f"frames must be numbered 0, 1, 2, ... in capture order: expected {self._next_seq}, "
                                  f"got {event.seq}")
            budget = getattr(event, "budget_s", None)
            if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
                raise ConfigError(f"a frame's budget must be a positive number of seconds, got {budget!r}")
        elif isinstance(event, CloudDone):
            req = self._requests.get(event.request)
            if req is None:
                raise ConfigError(f"CloudDone for request {event.request}, which this core never sent (or answered twice)")
            if event.failure is None:
                self._check_answer(req, event)
            if event.uploaded is False and req.uploaded_at is not None:
                raise ConfigError(f"CloudDone for request {req.id} says it was not uploaded, but its upload was reported")
        elif isinstance(event, (Encoded, Uploaded)):
            req = self._requests.get(event.request)
            if (req is not None and req.uploaded_at is None and event.frame_bytes
                    and len(event.frame_bytes) != len(req.seqs)):
                raise ConfigError(f"{type(event).__name__} for request {req.id} gives {len(event.frame_bytes)} frame "
                                  f"sizes; it has {len(req.seqs)} frames")
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in event.frame_bytes):
                raise ConfigError(f"{type(event).__name__} frame sizes must be whole numbers of bytes >= 0, got "
                                  f"{event.frame_bytes!r}")
        elif isinstance(event, WakeDone) and not 0 <= event.endpoint < len(self.pool):
            raise ConfigError(f"WakeDone for endpoint {event.endpoint}; this core has {len(self.pool)}")

    def _new_frame(self, seq: int, at: float, captured_at: float | None, budget_s: float | None) -> FrameState:
        captured = at if captured_at is None else captured_at
        self._headroom.frame(at)
        budget = self.cfg.budget_s if budget_s is None else budget_s
        self._next_seq += 1
        return self._frames.add(FrameState(seq, captured, captured + budget, budget))

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
            self.local.state = LaneState.READY
        else:
            self.local.state = LaneState.FAILED
            logger.error("local backend failed to load (%s): frames go to the cloud or are dropped", ev.error)

    def _on_local_done(self, ev: LocalDone) -> None:
        self.local.end(ev.seq, service_s=ev.service_s if ev.error is None else None, now=ev.at)
        f = self._frames.get(ev.seq)
        running = f is not None and (f.stage is Stage.LOCAL_RUN or (f.hedged and f.stage is Stage.CLOUD_FLIGHT))
        if ev.error is not None:
            self.counters["local_errors"] += 1
            self._hedges.over(ev.seq)
            if running and f.stage is Stage.CLOUD_FLIGHT:  # a hedge failed: the cloud may still answer
                f.hedged = False
            elif running:
                self._resolve(f, Outcome.DROPPED, "local_error")
            return
        if self._hedge_second(ev.seq, Route.LOCAL):
            return
        if not running:
            self._late_answer(ev.seq, Route.LOCAL, ev.at)
            return
        if f.hedged:
            self.counters[("hedge", "local_first")] += 1
        self._answer(f, Route.LOCAL, ev.answer, None, ev.at)

    def _on_encoded(self, ev: Encoded) -> None:
        req = self._requests.get(ev.request)
        if req is None or req.uploaded_at is not None or not ev.frame_bytes:
            return
        req.encoded = True
        self._frame_sizes(req, ev.frame_bytes)
        self.link.resize(req.id, sum(ev.frame_bytes), ev.at)  # its time on the link, from its real bytes

    def _frame_sizes(self, req: _Request, frame_bytes: tuple[int, ...]) -> None:
        for seq, nbytes in zip(req.seqs, frame_bytes):
            f = self._frames.get(seq)
            if f is not None and f.rung is not None and nbytes > 0:
                f.nbytes = int(nbytes)
                self.sizes.update(f.rung, int(nbytes))

    def _on_uploaded(self, ev: Uploaded) -> None:
        self._uploads_reported = True
        req = self._requests.get(ev.request)
        if req is None or req.uploaded_at is not None:
            # over already (it timed out while its bytes were still queued): they have left now
            self.link.finish(ev.request, ev.at, sum(ev.frame_bytes) if ev.frame_bytes else None, ev.rtt_s)
            return
        req.uploaded_at = ev.at
        if not req.encoded:
            self._frame_sizes(req, ev.frame_bytes)
        self.link.finish(req.id, ev.at, sum(ev.frame_bytes) if ev.frame_bytes else None, ev.rtt_s)
        self.pool.uploaded(req.endpoint, req.id, ev.at)

    def _on_cloud_done(self, ev: CloudDone) -> None:
        req = self._requests.pop(ev.request)  # known and well-formed: _reject_bad checked
        ep = req.endpoint
        if req.uploaded_at is None:
            self.link.drop(req.id)
            if ev.failure is None and ev.uploaded is None and not self._uploads_reported and self.link.prior_Bps is not None:
                # this driver does not say when an upload has left: nothing can be measured, so
                # the uplink is not planned for (a guessed prior would only hold requests back)
                logger.debug("the driver reports no uploads: the uplink is not modelled")
                self.link.prior_Bps = None
        if not req.timed_out:
            self.pool.finished(ep, len(req.seqs), req.id)
        if ev.uploaded is False:
            self._not_sent(req, ev.at)
            return
        if ev.failure is None:
            self._on_answer(req, ev)
            return
        self.counters[f"cloud_failure_{ev.failure.value}"] += 1
        if req.timed_out:
            return  # already counted against the endpoint when it timed out
        if ev.failure is Failure.TIMEOUT:
            self._sample(req, ev.at)  # censored: the answer takes at least this long
        self.pool.failed(ep, ev.at, ev.failure, retry_after_s=ev.retry_after_s, message=ev.message)
        self._requeue(req, ev.at)

    def _check_answer(self, req: _Request, ev: CloudDone) -> None:
        n = len(req.seqs)
        for name, values in (("answers", ev.answers), ("metas", ev.metas)):
            if values is not None and len(values) != n:
                raise ConfigError(f"request {req.id} sent {n} frames but got {len(values)} {name}")
        if any(not 0 <= i < n for i in ev.frame_errors):
            raise ConfigError(f"request {req.id} has {n} frames; frame_errors names {sorted(ev.frame_errors)}")

    def _not_sent(self, req: _Request, now: float) -> None:
        """The client did not upload the request: its frames' budgets ran out before they could be
        sent. It says nothing of the endpoint (no answer time, no expiry of its own), and the
        frames go back through the policy with the uplink too slow for them."""
        self.counters[("uplink", "not_sent_requests")] += 1
        if not req.timed_out:  # (a timed-out request's frames went back when it timed out)
            self._requeue(req, now, cloud_block="uplink_too_slow")

    def _requeue(self, req: _Request, now: float, *, cloud_block: str | None = None) -> None:
        """The request failed, timed out or was not sent: its frames still waiting on it go back
        through the policy (``cloud_block``: why the cloud cannot take them now)."""
        for seq in req.seqs:
            f = self._frames.get(seq)
            if f is None or f.stage is not Stage.CLOUD_FLIGHT or f.request != req.id:
                continue
            if f.hedged:  # it is running locally already: that answer is its chance now
                f.move(Stage.LOCAL_RUN)
                f.request, f.hedged = None, False
                self._hedges.over(seq)
            else:
                self._route(f, now, fallback=True, cloud_block=cloud_block)

    def _on_answer(self, req: _Request, ev: CloudDone) -> None:
        n = len(req.seqs)
        answers = list(ev.answers) if ev.answers is not None else [None] * n
        metas = list(ev.metas) if ev.metas is not None else [None] * n
        expired = {i for i, why in ev.frame_errors.items() if why is FrameStatus.EXPIRED}
        self._sample(req, ev.at, expired)
        # the round trip less the endpoint's own time, which counts from the request's arrival
        # and so includes the upload: what is left is the network's
        network = ev.network_s
        if len(expired) == n:
            # the endpoint judged it could not answer any of them in time: a quick "expired" is no
            # sign of speed; the answer would have taken at least until the last deadline
            self.pool.timed_out_sample(req.endpoint, since=req.since, depth=req.depth,
                                       now=max(ev.at, max(req.deadlines)))
            self.pool.answered(req.endpoint, n=0, since=req.since, depth=req.depth, now=ev.at, sample=False)
        else:
            self.pool.answered(req.endpoint, n=n - len(ev.frame_errors), since=req.since, depth=req.depth,
                               now=ev.at, network_s=network)
        for i, (seq, answer, meta) in enumerate(zip(req.seqs, answers, metas)):
            f = self._frames.get(seq)
            current = f is not None and f.stage is Stage.CLOUD_FLIGHT and f.request == req.id
            why = ev.frame_errors.get(i)
            # an upload that brought no answer in time (on a device whose uploads share the
            # local core, each such one cost local capacity for nothing)
            self._headroom.cloud_answered(why is not None or ev.at > req.deadlines[i])
            if why is not None:
                self.counters[("endpoint", req.endpoint.name, f"frames_{why.value}")] += 1
                self._hedges.over(seq)
                if current and f.hedged:
                    f.move(Stage.LOCAL_RUN)  # the local run is its chance
                    f.request, f.hedged = None, False
                elif current and not self._rescue_local(f, ev.at):
                    self._resolve(f, Outcome.DROPPED, "expired_at_endpoint" if why is FrameStatus.EXPIRED else "cloud_frame_error")
            elif self._hedge_second(seq, Route.CLOUD):
                continue
            elif current:
                if f.hedged:
                    self.counters[("hedge", "cloud_first")] += 1
                self._answer(f, Route.CLOUD, answer, meta, ev.at, endpoint=req.endpoint.name)
            else:
                self._late_answer(seq, Route.CLOUD, ev.at)

    def _on_wake_done(self, ev: WakeDone) -> None:
        self.pool.woken(ev.endpoint, ev.at, ok=ev.ok, failure=ev.failure, message=ev.message)

    # -- routing ---------------------------------------------------------------------------
    def _cloud_times(self, now: float, *, ahead: int, rung: Rung | None = None) -> tuple[float, float | None, float | None]:
        """For a frame joining the cloud queue behind ``ahead`` frames: its time on the uplink
        (waiting and crossing, at ``rung`` or the floor), and its answer time at the planning and
        the optimistic quantile (None before the first answer)."""
        floor = self.sizes.estimate(rung or self.cfg.ladder.floor)
        link_s = self.link.upload_end(now, floor, ahead * self.sizes.estimate(self.cfg.ladder.floor)) - now
        depth = self.pool.frames + ahead
        p = self._pcfg
        plan = self.pool.model.quantile(depth, p.cloud_quantile, now)
        low = self.pool.model.quantile(depth, p.cloud_chance_quantile, now)
        return link_s, None if plan is None else link_s + plan, None if low is None else link_s + low

    def _observe(self, f: FrameState, now: float, *, cloud_block: str | None = None) -> Observation:
        """What the policy sees for ``f``; ``cloud_block``: why the cloud cannot take it in time after all."""
        p = self._pcfg
        state, cap = self.pool.view(now)
        pending = len(self._cloud_q) + self.pool.frames
        model = self.pool.model
        stale = model.last_at is None or now - model.last_at > self.cfg.probe_after_s
        cloud = cloud_block is None
        if cloud:
            link_s, eta, low = self._cloud_times(now, ahead=len(self._cloud_q))
        else:
            link_s, eta, low = (math.inf if cloud_block == "uplink_too_slow" else 0.0), math.inf, math.inf
        return Observation(
            frame_age_s=now - f.captured, budget_s=f.budget, local_ready=self.local.ready,
            local_queued=len(self.local.queue), local_busy=self.local.busy, local_workers=self.cfg.local_workers,
            local_left_s=self.local.left(p.local_quantile, now),
            local_service_s=self.local.estimator.quantile(p.local_quantile, now), cloud_state=state,
            cloud_eta_s=eta, cloud_eta_low_s=low, cloud_link_s=link_s,
            cloud_link_free=cloud and (self.link.accepting(now) or not self._cloud_q),
            cloud_missing=self._headroom.missing if self.cfg.uploads_share_local_cpu else 0.0,
            cloud_pending=pending, cloud_capacity=cap, offloading=self._offloading,
            cloud_probe_due=cloud and len(self.pool) > 0 and pending == 0 and (
                stale or self.link.stale(now, self.cfg.probe_after_s)),
        )

    def _route(self, f: FrameState, now: float, *, fallback: bool = False, cloud_block: str | None = None) -> None:
        """Route a frame through the policy (``cloud_block``: why the cloud cannot take it in time)."""
        d = self._policy(self._observe(f, now, cloud_block=cloud_block))
        if cloud_block is not None and d.route is Route.CLOUD:  # a baseline that does not look at times
            d = replace(d, route=Route.DROP, reason=cloud_block)
        if not fallback:
            self._offloading = d.offloading
            if d.route is Route.CLOUD or (d.route is Route.DROP and d.reason in _WANTED_CLOUD):
                self._headroom.wanted_cloud(now)
        self.counters[("decision", d.route.value, d.reason)] += 1
        if d.wake_cloud:
            self._out.extend(self.pool.wake(self.cfg.wake_timeout_s))
        f.reason = d.reason
        f.request = None
        if d.route is Route.LOCAL:
            if not self.local.ready:
                raise ConfigError(f"the policy sent frame {f.seq} to a local backend that is not ready")
            f.move(Stage.LOCAL_QUEUE)
            self.local.queue.append(f.seq)
        elif d.route is Route.CLOUD:
            if not len(self.pool):
                raise ConfigError(f"the policy sent frame {f.seq} to the cloud, but no cloud is configured")
            f.move(Stage.CLOUD_QUEUE)
            self._cloud_q.append(f.seq)
        else:
            self._resolve(f, Outcome.DROPPED, d.reason)

    def _pump_local(self, now: float) -> None:
        while self.local.next and self.local.has_room:
            f = self._frames.get(self.local.next.popleft())
            if f is not None and f.stage in (Stage.CLOUD_QUEUE, Stage.CLOUD_FLIGHT) and not f.hedged:
                self._run_hedge(f, now)
        while self.local.queue and self.local.has_room:
            f = self._frames[self.local.take()]
            f.move(Stage.LOCAL_RUN)
            self.local.start(f.seq, now)
            self._out.append(RunLocal(f.seq))

    def _pump_cloud(self, now: float) -> None:
        """Send what the uplink and the endpoints can take now, one request onto the link at a time."""
        if not self._cloud_q:
            return
        state, _ = self.pool.view(now)
        if state is not CloudState.READY:
            # the cloud went away under queued frames: they go back through the policy
            while self._cloud_q:
                self._route(self._frames[self._cloud_q.popleft()], now, fallback=True)
            return
        while self._cloud_q and self.link.accepting(now):
            plan = self._plan(now)
            if plan is None:
                return  # every endpoint is full: the next answer frees a slot
            if isinstance(plan, str):  # the head cannot reach the cloud in time, whatever its encoding
                f = self._frames[self._cloud_q.popleft()]
                self.counters[("cloud_queue_left", plan)] += 1
                self._route(f, now, fallback=True, cloud_block=plan)
                continue
            ep, seqs, rung = plan
            for _ in seqs:
                self._cloud_q.popleft()
            self._send(ep, seqs, rung, now)

    def _plan(self, now: float) -> tuple[Endpoint, tuple[int, ...], Rung] | str | None:
        """The next request: (endpoint, frames, encoding), None while no endpoint has a free slot,
        or why the head of the queue cannot go (the uplink cannot carry it in time).

        The encoding is the best rung whose answer still fits the batch's deadline (at the
        planning quantile, else at the optimistic one) without making a frame queued behind
        it miss a deadline it would meet at the floor.
        """
        p, ladder = self._pcfg, self.cfg.ladder
        head = self._frames[self._cloud_q[0]]
        floor_bytes = self.sizes.estimate(ladder.floor)
        ep = self.pool.pick(now, head.deadline, p.cloud_quantile,
                            upload_s=self.link.upload_end(now, floor_bytes) - now)
        if ep is None:
            return None
        seqs = tuple(self._cloud_q[i] for i in range(min(ep.max_batch, len(self._cloud_q))))
        # the link not measured yet and an upload already failed on it: small ones until one is
        rungs = (ladder.floor,) if self.link.last_finish is None and self._link_doubt else self._sustainable(now)
        due = min(self._frames[s].deadline for s in seqs)
        behind = [self._frames[self._cloud_q[i]] for i in range(len(seqs), min(len(self._cloud_q), len(seqs) + 8))]
        for q in (p.cloud_quantile, p.cloud_chance_quantile):
            post = self.pool.post_upload(ep, q, now)
            for rung in rungs:
                nbytes = len(seqs) * self.sizes.estimate(rung)
                if (self.link.upload_end(now, nbytes) + post <= due
                        and self._behind_still_fit(now, behind, nbytes, floor_bytes, len(seqs))):
                    return ep, seqs, rung
        best = rungs[0]
        if self.link.upload_end(now, len(seqs) * self.sizes.estimate(best)) - now <= 0.1 * max(0.0, due - now):
            return ep, seqs, best  # the uplink is no factor: a chance, as good as it gets
        link_s = self.link.upload_end(now, len(seqs) * floor_bytes) - now
        post_low = self.pool.post_upload(ep, p.cloud_chance_quantile, now, stuck=False)
        if link_s > post_low and now + link_s + post_low > due and not self.link.stale(now, self.cfg.probe_after_s):
            return "uplink_too_slow"
        return ep, seqs, ladder.floor  # a chance (or a probe of a link not measured lately), at the smallest size

    def _sustainable(self, now: float) -> tuple[Rung, ...]:
        """The rungs at which the link keeps up with the frames the policy has been sending it
        (the last second): one frame that fits its deadline at a rich encoding can still hold
        the link while the frames after it arrive, each then too late for it."""
        g = self.link.plan_Bps(now)
        rate = self._headroom.cloud_rate(now)
        rungs = self.cfg.ladder.rungs
        if g is None or not rate:
            return rungs
        return tuple(r for r in rungs if rate * self.sizes.estimate(r) <= _LINK_LOAD * g) or (self.cfg.ladder.floor,)

    def _behind_still_fit(self, now: float, behind: list[FrameState], nbytes: float, floor_bytes: float, n: int) -> bool:
        p = self._pcfg
        post = self.pool.model.quantile(self.pool.frames + n, p.cloud_quantile, now) or 0.0
        base = n * floor_bytes
        for k, g in enumerate(behind, start=1):
            at_floor = self.link.upload_end(now, base + k * floor_bytes) + post
            if at_floor <= g.deadline and self.link.upload_end(now, nbytes + k * floor_bytes) + post > g.deadline:
                return False
        return True

    def _send(self, ep: Endpoint, seqs: tuple[int, ...], rung: Rung, now: float) -> None:
        self._request_ids += 1
        timeout = self.cfg.request_timeout_s
        frames = [self._frames[s] for s in seqs]
        nbytes = len(seqs) * self.sizes.estimate(rung)
        self.link.start(self._request_ids, now, nbytes)
        req = _Request(self._request_ids, ep, seqs, now, ep.frames, self.pool.frames, now + timeout,
                       tuple(f.deadline for f in frames))
        self._requests[req.id] = req
        heapq.heappush(self._timeouts, (req.timeout_at, req.id))
        self.pool.sent(ep, len(seqs), req.id, now)
        for f in frames:
            f.move(Stage.CLOUD_FLIGHT)
            f.request, f.rung, f.nbytes = req.id, rung, None
        self.counters["requests"] += 1
        # each frame's budget on the wire is net of one round trip (the endpoint's measured one,
        # else the link's), not of its upload: the service counts it from the request's first
        # byte, so the upload spends it there. Net of the planned upload too, the upload was paid
        # for twice: the service expired frames it could still answer, and a chance (whose
        # planned upload spends its whole budget) was answered expired by the client unsent
        network = max(self.link.latency_s, ep.network.quantile(0.5) or 0.0)
        self._out.append(SendBatch(req.id, ep.index, seqs, timeout, tuple(f.deadline for f in frames), network,
                                   encodings=tuple(rung.name for _ in seqs)))

    def _sample(self, req: _Request, now: float, expired: set[int] = frozenset()) -> None:
        since = req.since
        for i, deadline in enumerate(req.deadlines):
            # a frame answered expired would have been answered after its deadline at the earliest
            until = max(now, deadline) if i in expired else now
            self.pool.model.update(req.pool_depth, max(0.0, until - since), at=now)

    # -- hedging -----------------------------------------------------------------------------
    def _cloud_frames(self):
        for seq in self._cloud_q:
            yield self._frames[seq]
        for req in self._requests.values():
            for seq in req.seqs:
                f = self._frames.get(seq)
                if f is not None and f.stage is Stage.CLOUD_FLIGHT and f.request == req.id and not f.hedged:
                    yield f

    def _next_hedge(self) -> float | None:
        if not self._hedging or not self.local.idle:
            return None
        est = self.local.estimate(self._pcfg.local_quantile, self._now)
        times = [f.deadline - est for f in self._cloud_frames()]
        due = min(times, default=None)
        return None if due is None or due <= self._now else due

    def _hedge(self, now: float) -> None:
        """An idle local worker takes a cloud frame that is running out of time (queued: it moves;
        in flight: it runs on both, the first answer wins), or, while local looks too slow for any
        frame, runs one anyway: the probe that shows when the slow spell is over."""
        if not self._hedging:
            return
        while self.local.idle:
            f = self._hedge_pick(now)
            if f is None:
                break
            self._run_hedge(f, now)
        if (self.local.ready and not self.local.has_room and not self.local.next
                and self._spare(now)):
            f = self._hedge_ahead(now)
            if f is not None:
                self.local.next.append(f.seq)
                self.counters[("hedge", "next_in_line")] += 1

    def _run_hedge(self, f: FrameState, now: float) -> None:
        if f.stage is Stage.CLOUD_QUEUE:
            self._cloud_q.remove(f.seq)
            f.move(Stage.LOCAL_RUN)
            self.counters[("hedge", "moved_local")] += 1
        else:
            f.hedged = True
            self._hedges.start(f.seq)
            self.counters[("hedge", "started")] += 1
        self.local.start(f.seq, now)
        self._out.append(RunLocal(f.seq))

    def _spare(self, now: float) -> bool:
        """Whether a frame a hedge displaces from the local lane still has somewhere to go: the
        cloud has answered lately (over a dead link or a dead cloud, a hedge ahead of the local
        queue would only trade one local frame for another)."""
        last = self.pool.model.last_at
        if last is None or now - last > self.cfg.probe_after_s:
            return False
        # a device dropping more than a few frames in a second for lack of capacity has none to spare
        return self._headroom.spare(now)

    def _queue_can_wait(self, slot: float, est: float) -> bool:
        """Whether every frame in the local queue still makes its deadline one run later."""
        return self.local.queue_can_wait(slot, est, lambda seq: self._frames[seq].deadline)

    def _cloud_likely_in_time(self, f: FrameState, now: float) -> bool:
        """Whether the cloud's answer to an in-flight frame is still likely by its deadline (its
        request is younger than most answers take, and they come in time): then a hedge
        would most likely be a local run wasted."""
        if f.stage is not Stage.CLOUD_FLIGHT:
            return False
        req = self._requests.get(f.request)
        if req is None:
            return False
        p90 = self.pool.model.quantile(req.pool_depth, _HEDGE_QUANTILE, now)
        if p90 is None:
            return False
        if req.uploaded_at is None:  # still on the uplink: its answer comes after the upload
            return self.link.upload_end(now, 0) + p90 <= f.deadline and not self.link.overdue(now)
        return now - req.since <= p90 and req.since + p90 <= f.deadline

    def _rescue_local(self, f: FrameState, now: float) -> bool:
        """A cloud frame came back unanswered (expired at the endpoint, an error): it runs
        locally next if that can still answer it in time at no other frame's expense."""
        if not self._hedging or not self.local.ready or not self._spare(now):
            return False
        if self.cfg.uploads_share_local_cpu and self._headroom.missing > 0.5:
            return False  # a cloud missing most frames: rescuing them all would starve the local queue
        est = self.local.estimate(self._pcfg.local_quantile, now)
        slot = self.local.slot(now, est, self._frames)
        if slot + self.local.estimate(0.25, now) > f.deadline or not self._queue_can_wait(slot, est):
            return False
        f.move(Stage.LOCAL_QUEUE)
        f.request = None
        self.local.queue.appendleft(f.seq)
        self.counters[("hedge", "rescued_local")] += 1
        return True

    def _hedge_ahead(self, now: float) -> FrameState | None:
        """With every worker busy: a cloud frame whose answer is not back, that only a local run
        started next (ahead of the local queue) can still answer in time, when each frame in the
        local queue still makes its deadline one run later."""
        est = self.local.estimate(self._pcfg.local_quantile, now)
        low = self.local.estimate(0.25, now)
        slot = self.local.slot(now, est, self._frames)
        # due: the next free slot is the last one whose run can still finish by the deadline
        if slot + 2 * est < min((f.deadline for f in self._cloud_frames()), default=math.inf):
            return None  # nothing due yet: the cloud still has time
        # a frame sent on a chance (local had no room for it) is not put ahead of frames local took
        due = [f for f in self._cloud_frames()
               if slot + 2 * est >= f.deadline >= slot + low and f.reason != "cloud_chance"
               and not self._cloud_likely_in_time(f, now)]
        if not due:
            return None
        if not self._queue_can_wait(slot, est):
            return None  # the local queue has no room to spare
        return min(due, key=lambda f: f.deadline)

    def _link_stalled(self, now: float) -> bool:
        """An upload on the link is past the time it should have left by (as measured)."""
        # (free_at is ``now`` while nothing is on the link or its goodput is unknown)
        return self._uploads_reported and self.link.free_at(now) > now + self.link.lead_s and self.link.overdue(now)

    def _hedge_pick(self, now: float) -> FrameState | None:
        est = self.local.estimate(self._pcfg.local_quantile, now)
        low = self.local.estimate(0.25, now)
        frames = list(self._cloud_frames())
        # due: no answer yet by the last moment a local run could still finish; and it still can
        can = [f for f in frames if f.deadline - est <= now and now + low <= f.deadline]
        if can:
            return min(can, key=lambda f: f.deadline)
        if self._link_stalled(now):
            # the uplink carries nothing for now: frames still waiting to leave on it are the idle
            # worker's to take at once (a stalled upload answers nothing, an idle worker may)
            stuck = [f for f in frames if now + low <= f.deadline and
                     (f.stage is Stage.CLOUD_QUEUE or self._requests[f.request].uploaded_at is None)]
            if stuck:
                return min(stuck, key=lambda f: f.deadline)
        flying = [f for f in frames if f.stage is Stage.CLOUD_FLIGHT]
        if flying and all(now + low > f.deadline for f in frames):
            return max(flying, key=lambda f: f.deadline)  # the probe: a copy, the cloud still answers it
        return None

    # -- time ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        """Frames at their deadline leave as what they are; requests past their timeout fail."""
        for f in self._frames.due(now):
            if f.stage is not Stage.DONE:
                self._leave_unanswered(f, "deadline")
        while self._timeouts and self._timeouts[0][0] <= now:
            _, rid = heapq.heappop(self._timeouts)
            req = self._requests.get(rid)
            if req is None or req.timed_out:
                continue
            req.timed_out = True
            self.pool.finished(req.endpoint, len(req.seqs), req.id)
            if req.uploaded_at is None and self.link.last_finish is None:
                self._link_doubt = True
            if req.uploaded_at is None and self._uploads_reported:
                # still on the uplink: the link stalled, not the endpoint (its bytes stay queued until they leave)
                self.counters[("uplink", "stalled_requests")] += 1
            elif req.uploaded_at is None and self.link.prior_Bps is not None:
                # before any upload was reported, with the uplink modelled: the first uploads,
                # planned at the prior, can take longer than a request may. Timed out as the
                # endpoint's, they said it takes the whole timeout to answer, and that estimate,
                # with few answers to replace it, kept a real 1 Mbit/s device from offloading for
                # the rest of its run. Nothing is known of the link yet: its upload is let go.
                self.link.drop(req.id)
                self.counters[("uplink", "unmeasured_timeouts")] += 1
            else:
                self.link.drop(req.id)
                self.counters["cloud_timeouts"] += 1
                self._sample(req, now)  # censored: the answer takes at least this long
                self.pool.timed_out_sample(req.endpoint, since=req.since, depth=req.depth, now=now)
                self.pool.failed(req.endpoint, now, Failure.TIMEOUT,
                                 message=f"no answer within {self.cfg.request_timeout_s:.3f} s")
            self._requeue(req, now)

    def _leave_unanswered(self, f: FrameState, why: str) -> None:
        """Resolve a frame that has to leave now without an answer."""
        if f.stage is Stage.LOCAL_QUEUE:
            self.local.queue.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, "expired_in_queue" if why == "deadline" else why)
        elif f.stage is Stage.CLOUD_QUEUE:
            self._cloud_q.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, "expired_in_cloud_queue" if why == "deadline" else why)
        else:  # running locally or in flight: the answer may still come, and will be counted late
            f.route = Route.LOCAL if f.stage is Stage.LOCAL_RUN else Route.CLOUD
            self._resolve(f, Outcome.LATE, why)

    def _flush(self, now: float) -> None:
        for f in self._frames:
            if f.stage is not Stage.DONE:
                self._leave_unanswered(f, "shutdown")

    # -- results ---------------------------------------------------------------------------
    def _resolve(self, f: FrameState, outcome: Outcome, reason: str | None) -> None:
        if outcome is Outcome.DROPPED:
            self._headroom.dropped(reason, self._now)
        f.move(Stage.DONE)
        f.outcome = outcome
        if reason is not None:
            f.reason = reason

    def _answer(self, f: FrameState, route: Route, answer: Any, meta: dict | None, now: float, *,
                endpoint: str | None = None) -> None:
        f.route, f.endpoint = route, endpoint
        f.answer, f.meta, f.answered_at = answer, meta, now
        self._resolve(f, Outcome.LOCAL if route is Route.LOCAL else Outcome.CLOUD, None)

    def _hedge_second(self, seq: int, route: Route) -> bool:
        """Whether this answer is the second of a hedged frame's two (counted here, used nowhere)."""
        if self._hedges.second(seq):
            self.counters[("hedge", "second_answer", route.value)] += 1
            return True
        return False

    def _late_answer(self, seq: int, route: Route, now: float) -> None:
        """An answer for a frame that already left without one: counted, never released twice."""
        self.counters[("late_answer", route.value)] += 1
        self._out.append(LateAnswer(seq, route, now))

    def _release(self, now: float) -> None:
        """Release, in order, every frame that can leave now."""
        out = self._frames.release(now, self._leave_unanswered)
        if out:
            self._out.append(Release(out))
