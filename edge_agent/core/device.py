"""The device core: every decision the edge agent makes, as one sans-I/O state machine.

:class:`DeviceCore` holds the whole state of a device, each part in its own module: the
local queue and its workers (:class:`edge_agent.core.lane.LocalLane`), the cloud queue with the
requests in flight, their timeouts, batching, encodings and the uplink
(:class:`edge_agent.core.dispatch.CloudDispatch`), the pool of cloud endpoints with their
health, wakes, Retry-After and estimates (:class:`edge_agent.core.pool.CloudPool`, over the SDK's
:class:`yolo_edge.remote.balancer.Balancer`), hedging
(:class:`edge_agent.core.hedge.Hedger`), and the frames themselves in
:class:`edge_agent.core.window.ReleaseWindow` (their stages, deadlines and in-order release).
The core ties the parts together: :class:`edge_agent.core.routing.Router` routes each frame
through the policy, :class:`edge_agent.core.answers.Answers` takes what comes back to the frames
it answers. It is driven by timestamped events; for each event it answers with the actions
to take. It never reads a clock, sleeps, starts a thread or touches the network, so two
small drivers run the very same logic: :class:`edge_agent.runner.Agent`
(threads, the real detector and cloud clients, the wall clock) and :mod:`edge_agent.sim`
(an event heap, sampled service times, a virtual clock). This is the h11 model: bytes and
events in, events out, no socket inside.

Events in and actions out are the plain values of :mod:`edge_agent.core.events`. After each
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

import logging
import math
from collections import Counter

from .answers import Answers
from .config import CoreConfig, CoreSnapshot
from .dispatch import CloudDispatch
from .estimators import WindowedQuantile
from .events import (
    Action, Close, CloudDone, Encoded, Event, Failure, Flush, FrameCaptured, FrameSkipped, LateAnswer, LocalDone,
    LocalReady, Release, RunLocal, SendBatch, Tick, Uploaded, Wake, WakeDone, check,
)
from .frames import Outcome, Reason, Route
from .hedge import Headroom, Hedger
from .lane import LaneState, LocalLane
from .link import FrameSizes, Uplink
from .policy import CloudState, Mode, Policy, PolicyConfig, decide
from .pool import CloudPool, EndpointSpec
from .routing import Router
from .window import FrameState, ReleaseWindow, Stage

__all__ = [
    "CoreConfig", "DeviceCore", "CoreSnapshot", "EndpointSpec", "Failure",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "Encoded", "Uploaded", "CloudDone", "WakeDone", "Tick",
    "Close", "Flush", "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]

logger = logging.getLogger(__name__)


class DeviceCore:
    """One device's logic. Not thread-safe: a driver calls it from one thread or under a lock.

    ``cloud=False`` runs local only; ``cloud_warm=True`` says the endpoints are known to be
    up (woken before the run), so they start READY instead of COLD. ``local_ready=False``
    starts with the local backend still warming up (frames go to the cloud or are dropped
    as ``local_warming`` until a :class:`LocalReady` event). ``policy`` replaces
    :func:`edge_agent.core.policy.decide` with ``cfg.policy`` (the simulator passes its baselines;
    they run without hedging, as they would on their own).
    """

    def __init__(self, cfg: CoreConfig, *, cloud: bool = True, cloud_warm: bool = False, local_ready: bool = True,
                 policy: Policy | None = None) -> None:
        self.cfg = cfg
        self._pcfg = cfg.policy
        #: decisions by (route, reason), late answers by route, per-endpoint events, ...
        self.counters: Counter = Counter()
        self.local = LocalLane(cfg.local_workers, ready=local_ready, prior_s=cfg.policy.local_service_prior_s,
                               estimator=WindowedQuantile(cfg.estimator_window, horizon_s=cfg.estimator_horizon_s,
                                                          forget_s=4 * cfg.estimator_horizon_s))
        specs = (cfg.endpoints or (EndpointSpec(),)) if cloud else ()
        self.pool = CloudPool(specs, max_inflight=cfg.max_inflight, max_batch=cfg.max_batch, health=cfg.health,
                              cold=not cloud_warm, estimator_window=cfg.estimator_window,
                              estimator_horizon_s=cfg.estimator_horizon_s, counters=self.counters)
        self._frames = ReleaseWindow(cfg.window)
        #: the last second's frames and drops for lack of capacity (above 5% dropped, no hedge goes
        #: ahead of the local queue) and frames wanted at the cloud (the flow the uplink carries),
        #: and how many of the cloud's last 20 answers were expired
        self._headroom = Headroom(window_s=1.0, short_share=0.05, answers=20)
        #: the cloud queue, the requests in flight and the uplink
        self.dispatch = CloudDispatch(policy=cfg.policy, ladder=cfg.ladder, timeout_s=cfg.request_timeout_s,
                                      probe_after_s=cfg.probe_after_s, uplink_prior_bps=cfg.uplink_prior_bps,
                                      frames=self._frames, pool=self.pool, headroom=self._headroom,
                                      counters=self.counters)
        self.hedger = Hedger(enabled=cfg.hedge and policy is None and cfg.policy.mode is Mode.HYBRID,
                             lane=self.local, dispatch=self.dispatch, frames=self._frames, pool=self.pool,
                             headroom=self._headroom, counters=self.counters,
                             local_quantile=cfg.policy.local_quantile, probe_after_s=cfg.probe_after_s,
                             uploads_share_local_cpu=cfg.uploads_share_local_cpu)
        parts = dict(lane=self.local, dispatch=self.dispatch, hedger=self.hedger, frames=self._frames,
                     headroom=self._headroom, counters=self.counters, resolve=self._resolve)
        self.router = Router(cfg, policy=policy or (lambda obs: decide(obs, cfg.policy)), pool=self.pool, **parts)
        self.answers = Answers(**parts)
        self._closing = False
        self._now = -math.inf
        self._out: list[Action] = []

    # -- public ----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions to take, in order."""
        self._reject_bad(event)  # before anything changes, time included
        now = event.at
        self._now = max(self._now, now)
        self._expire(now)
        if isinstance(event, FrameCaptured):
            self._out += self.router.admit(event, closing=self._closing)
        elif isinstance(event, FrameSkipped):
            self.router.skipped(event)
        elif isinstance(event, LocalDone):
            self._out += self.answers.local_done(event)
        elif isinstance(event, Encoded):
            self.dispatch.encoded(event)
        elif isinstance(event, Uploaded):
            self.dispatch.uploaded(event)
        elif isinstance(event, CloudDone):
            self._on_cloud_done(event)
        elif isinstance(event, WakeDone):
            self.pool.woken(event.endpoint, event.at, ok=event.ok, failure=event.failure, message=event.message)
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
        self._out.extend(self.hedger.step(now))
        self._release(now)
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """When the core next needs a ``Tick`` (a deadline, a request timeout, a probe, the
        uplink freeing up, a hedge coming due), or None."""
        times = [t for t in (self._frames.next_deadline(), self.dispatch.next_timer(self._now)) if t is not None]
        probe = self.pool.next_timer()
        if probe is not None and not (self._closing and self.idle):  # a closed, idle device probes nothing
            times.append(probe)
        hedge = self.hedger.next_due(self._now)
        if hedge is not None:
            times.append(hedge)
        return min(times) if times else None

    @property
    def link(self) -> Uplink:
        """The uplink the cloud requests cross (its projection and measurements)."""
        return self.dispatch.link

    @property
    def sizes(self) -> FrameSizes:
        """What each upload encoding's frames have measured."""
        return self.dispatch.sizes

    @property
    def next_seq(self) -> int:
        return self.router.next_seq

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
            cloud_state=state, cloud_pending=len(self.dispatch.queue) + self.pool.frames, pending=len(self._frames),
            local_service_s=self.local.estimator.quantile(self._pcfg.local_quantile, now),
            cloud_rtt_s=endpoints[0].rtt_s if len(endpoints) == 1 else self.pool.model.quantile(0, 0.5, now),
            endpoints=endpoints, uplink_bps=link["goodput_bps"], uplink_sent_bytes=link["sent_bytes"],
            uplink_busy_s=link["busy_s"],
        )

    # -- events ----------------------------------------------------------------------------
    def _reject_bad(self, event: Event) -> None:
        """Raise a ConfigError for an event that cannot be applied, so that none is half-applied."""
        check(event, next_seq=self.router.next_seq, endpoints=len(self.pool))
        if isinstance(event, (CloudDone, Encoded, Uploaded)):
            self.dispatch.check(event)

    def _on_local_ready(self, ev: LocalReady) -> None:
        if ev.ok:
            self.local.state = LaneState.READY
        else:
            self.local.state = LaneState.FAILED
            logger.error("local backend failed to load (%s): frames go to the cloud or are dropped", ev.error)

    def _on_cloud_done(self, ev: CloudDone) -> None:
        req = self.dispatch.done(ev)  # known and well-formed: _reject_bad checked
        if ev.uploaded is False:
            self._out += self.router.not_sent(req, ev.at)
        elif ev.failure is None:
            self._out += self.answers.cloud_done(req, ev)
        elif self.dispatch.failed(req, ev):
            self._out += self.router.give_back(req, ev.at)

    # -- the queues ------------------------------------------------------------------------
    def _pump_local(self, now: float) -> None:
        while self.local.next and self.local.has_room:
            f = self._frames.get(self.local.next.popleft())
            if f is not None and f.stage in (Stage.CLOUD_QUEUE, Stage.CLOUD_FLIGHT) and not f.hedged:
                self._out.append(self.hedger.start(f, now))
        while self.local.queue and self.local.has_room:
            f = self._frames[self.local.take()]
            f.move(Stage.LOCAL_RUN)
            self.local.start(f.seq, now)
            self._out.append(RunLocal(f.seq))

    def _pump_cloud(self, now: float) -> None:
        """Send what the uplink and the endpoints can take now, one request onto the link at a time."""
        queue = self.dispatch.queue
        if not queue:
            return
        state, _ = self.pool.view(now)
        if state is not CloudState.READY:
            # the cloud went away under queued frames: they go back through the policy
            while queue:
                self._out += self.router.route(self._frames[queue.popleft()], now, fallback=True)
            return
        while queue and self.link.accepting(now):
            plan = self.dispatch.plan(now)
            if plan is None:
                return  # every endpoint is full: the next answer frees a slot
            if isinstance(plan, Reason):  # the head cannot reach the cloud in time, whatever its encoding
                f = self._frames[queue.popleft()]
                self.counters[("cloud_queue_left", plan.value)] += 1
                self._out += self.router.route(f, now, fallback=True, cloud_block=plan)
                continue
            self._out.append(self.dispatch.send(*plan, now))

    # -- time ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        """Frames at their deadline leave as what they are; requests past their timeout fail."""
        for f in self._frames.due(now):
            if f.stage is not Stage.DONE:
                self._leave_unanswered(f, Reason.DEADLINE)
        for req in self.dispatch.expire(now):  # each re-routed before the next is booked
            self._out += self.router.give_back(req, now)

    def _leave_unanswered(self, f: FrameState, why: Reason) -> None:
        """Resolve a frame that has to leave now without an answer."""
        if f.stage is Stage.LOCAL_QUEUE:
            self.local.queue.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, Reason.EXPIRED_IN_QUEUE if why is Reason.DEADLINE else why)
        elif f.stage is Stage.CLOUD_QUEUE:
            self.dispatch.queue.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, Reason.EXPIRED_IN_CLOUD_QUEUE if why is Reason.DEADLINE else why)
        else:  # running locally or in flight: the answer may still come, and will be counted late
            f.route = Route.LOCAL if f.stage is Stage.LOCAL_RUN else Route.CLOUD
            self._resolve(f, Outcome.LATE, why)

    def _flush(self, now: float) -> None:
        for f in self._frames:
            if f.stage is not Stage.DONE:
                self._leave_unanswered(f, Reason.SHUTDOWN)

    # -- results ---------------------------------------------------------------------------
    def _resolve(self, f: FrameState, outcome: Outcome, reason: Reason | None) -> None:
        if outcome is Outcome.DROPPED:
            self._headroom.dropped(reason, self._now)
        f.move(Stage.DONE)
        f.outcome = outcome
        if reason is not None:
            f.reason = reason

    def _release(self, now: float) -> None:
        """Release, in order, every frame that can leave now."""
        out = self._frames.release(now, self._leave_unanswered)
        if out:
            self._out.append(Release(out))
