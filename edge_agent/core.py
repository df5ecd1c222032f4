"""The device core: every decision the edge agent makes, as one sans-I/O state machine.

:class:`DeviceCore` holds the whole state of a device, each part in its own module: the
local queue and its workers (:class:`edge_agent.lane.LocalLane`), the cloud queue with the
requests in flight, their timeouts, batching, encodings and the uplink
(:class:`edge_agent.dispatch.CloudDispatch`), the pool of cloud endpoints with their
health, wakes, Retry-After and estimates (:class:`edge_agent.pool.CloudPool`, over the SDK's
:class:`yolo_edge.balancer.Balancer`), hedging
(:class:`edge_agent.hedge.Hedger`), and the frames themselves in
:class:`edge_agent.window.ReleaseWindow` (their stages, deadlines and in-order release).
The core routes each frame through the policy and ties the parts together. It is driven
by timestamped events; for each event it answers with the actions to take. It never reads a clock, sleeps, starts a thread or touches the
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

import logging
import math
from collections import Counter
from dataclasses import replace
from typing import Any

from yolo_edge.errors import ConfigError
from yolo_edge.wire import FrameStatus

from .core_config import CoreConfig, CoreSnapshot
from .dispatch import CloudDispatch, Request
from .estimators import WindowedQuantile
from .events import (
    EVENTS, Action, Close, CloudDone, Encoded, Event, Failure, Flush, FrameCaptured, FrameSkipped, LateAnswer,
    LocalDone, LocalReady, Release, RunLocal, SendBatch, Tick, Uploaded, Wake, WakeDone,
)
from .frames import Outcome, Route
from .hedge import Headroom, Hedger
from .lane import LaneState, LocalLane
from .link import FrameSizes, Uplink
from .policy import CloudState, Mode, Observation, Policy, PolicyConfig, decide
from .pool import CloudPool, EndpointSpec
from .window import FrameState, ReleaseWindow, Stage

__all__ = [
    "CoreConfig", "DeviceCore", "CoreSnapshot", "EndpointSpec", "Failure",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "Encoded", "Uploaded", "CloudDone", "WakeDone", "Tick",
    "Close", "Flush", "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]

logger = logging.getLogger(__name__)

#: the policy's decisions that wanted the cloud: sent there, or dropped because it could not take them
_WANTED_CLOUD = frozenset({"cloud_busy", "cloud_too_slow", "uplink_too_slow"})



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
            self.dispatch.encoded(event)
        elif isinstance(event, Uploaded):
            self.dispatch.uploaded(event)
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
            cloud_state=state, cloud_pending=len(self.dispatch.queue) + self.pool.frames, pending=len(self._frames),
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
        elif isinstance(event, (CloudDone, Encoded, Uploaded)):
            self.dispatch.check(event)
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
            self.hedger.both.over(ev.seq)
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

    def _on_cloud_done(self, ev: CloudDone) -> None:
        req = self.dispatch.done(ev)  # known and well-formed: _reject_bad checked
        if ev.uploaded is False:
            self._not_sent(req, ev.at)
            return
        if ev.failure is None:
            self._on_answer(req, ev)
            return
        if self.dispatch.failed(req, ev):
            self._requeue(req, ev.at)

    def _not_sent(self, req: Request, now: float) -> None:
        """The client did not upload the request: its frames' budgets ran out before they could be
        sent. It says nothing of the endpoint (no answer time, no expiry of its own), and the
        frames go back through the policy with the uplink too slow for them."""
        self.counters[("uplink", "not_sent_requests")] += 1
        if not req.timed_out:  # (a timed-out request's frames went back when it timed out)
            self._requeue(req, now, cloud_block="uplink_too_slow")

    def _requeue(self, req: Request, now: float, *, cloud_block: str | None = None) -> None:
        """The request failed, timed out or was not sent: its frames still waiting on it go back
        through the policy (``cloud_block``: why the cloud cannot take them now)."""
        for seq in req.seqs:
            f = self._frames.get(seq)
            if f is None or f.stage is not Stage.CLOUD_FLIGHT or f.request != req.id:
                continue
            if f.hedged:  # it is running locally already: that answer is its chance now
                self.hedger.cloud_over(f)
            else:
                self._route(f, now, fallback=True, cloud_block=cloud_block)

    def _on_answer(self, req: Request, ev: CloudDone) -> None:
        n = len(req.seqs)
        answers = list(ev.answers) if ev.answers is not None else [None] * n
        metas = list(ev.metas) if ev.metas is not None else [None] * n
        self.dispatch.answered(req, ev)
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
                        self._resolve(f, Outcome.DROPPED,
                                      "expired_at_endpoint" if why is FrameStatus.EXPIRED else "cloud_frame_error")
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
    def _observe(self, f: FrameState, now: float, *, cloud_block: str | None = None) -> Observation:
        """What the policy sees for ``f``; ``cloud_block``: why the cloud cannot take it in time after all."""
        p = self._pcfg
        state, cap = self.pool.view(now)
        pending = len(self.dispatch.queue) + self.pool.frames
        model = self.pool.model
        stale = model.last_at is None or now - model.last_at > self.cfg.probe_after_s
        cloud = cloud_block is None
        if cloud:
            link_s, eta, low = self.dispatch.times(now, ahead=len(self.dispatch.queue))
        else:
            link_s, eta, low = (math.inf if cloud_block == "uplink_too_slow" else 0.0), math.inf, math.inf
        return Observation(
            frame_age_s=now - f.captured, budget_s=f.budget, local_ready=self.local.ready,
            local_queued=len(self.local.queue), local_busy=self.local.busy, local_workers=self.cfg.local_workers,
            local_left_s=self.local.left(p.local_quantile, now),
            local_service_s=self.local.estimator.quantile(p.local_quantile, now), cloud_state=state,
            cloud_eta_s=eta, cloud_eta_low_s=low, cloud_link_s=link_s,
            cloud_link_free=cloud and self.dispatch.link_free(now),
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
            self.dispatch.queue.append(f.seq)
        else:
            self._resolve(f, Outcome.DROPPED, d.reason)

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
                self._route(self._frames[queue.popleft()], now, fallback=True)
            return
        while queue and self.link.accepting(now):
            plan = self.dispatch.plan(now)
            if plan is None:
                return  # every endpoint is full: the next answer frees a slot
            if isinstance(plan, str):  # the head cannot reach the cloud in time, whatever its encoding
                f = self._frames[queue.popleft()]
                self.counters[("cloud_queue_left", plan)] += 1
                self._route(f, now, fallback=True, cloud_block=plan)
                continue
            self._out.append(self.dispatch.send(*plan, now))

    # -- time ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        """Frames at their deadline leave as what they are; requests past their timeout fail."""
        for f in self._frames.due(now):
            if f.stage is not Stage.DONE:
                self._leave_unanswered(f, "deadline")
        for req in self.dispatch.expire(now):  # each re-routed before the next is booked
            self._requeue(req, now)

    def _leave_unanswered(self, f: FrameState, why: str) -> None:
        """Resolve a frame that has to leave now without an answer."""
        if f.stage is Stage.LOCAL_QUEUE:
            self.local.queue.remove(f.seq)
            self._resolve(f, Outcome.DROPPED, "expired_in_queue" if why == "deadline" else why)
        elif f.stage is Stage.CLOUD_QUEUE:
            self.dispatch.queue.remove(f.seq)
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
        if self.hedger.both.second(seq):
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
