"""Routing: each frame through the policy, and the decision carried out.

:class:`Router` is the part of :class:`edge_agent.core.DeviceCore` that decides where a frame
goes. It admits each captured frame into the release window, shows the policy the device as
it is for that frame (an :class:`edge_agent.core.policy.Observation` of the local lane, the pool,
the cloud queue and the uplink) and carries the decision out: the frame joins the local queue
or the cloud queue, or is dropped with the decision's reason, and a cold cloud is woken.

A frame comes back here whenever the cloud gives it back: its request failed, timed out or
was not uploaded, the cloud went away under the queue, or the uplink cannot carry it in time.
It is then routed again with ``cloud_block``, why the cloud cannot take it now.

Like the core it never reads a clock: every method takes the event time.

>>> from collections import Counter
>>> from edge_agent.core import DeviceCore, CoreConfig, FrameCaptured
>>> core = DeviceCore(CoreConfig(), cloud=False)
>>> core.handle(FrameCaptured(at=0.0, seq=0))
[RunLocal(seq=0)]
>>> core.counters[("decision", "local", "local_fits")]
1
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from yolo_edge.errors import ConfigError

from .config import CoreConfig
from .events import Action, FrameCaptured, FrameSkipped
from .frames import Outcome, Reason, Route
from .hedge import Headroom, Hedger
from .lane import LocalLane
from .policy import Observation, Policy
from .pool import CloudPool
from .window import FrameState, ReleaseWindow, Stage

if TYPE_CHECKING:
    from .dispatch import CloudDispatch, Request

__all__ = ["Router", "Resolve"]

#: the core's way to end a frame: ``resolve(frame, outcome, reason)``
Resolve = Callable[[FrameState, Outcome, Reason | None], None]

#: the policy's decisions that wanted the cloud: sent there, or dropped because it could not take them
_WANTED_CLOUD = frozenset({Reason.CLOUD_BUSY, Reason.CLOUD_TOO_SLOW, Reason.UPLINK_TOO_SLOW})


class Router:
    """Admits and routes the frames of one device.

    The lane, the dispatcher, the pool, the hedger, the release window and the headroom are the
    core's; ``resolve`` is the core's too (it ends a frame, here one dropped).
    """

    def __init__(self, cfg: CoreConfig, *, policy: Policy, lane: LocalLane, dispatch: CloudDispatch,
                 pool: CloudPool, hedger: Hedger, frames: ReleaseWindow, headroom: Headroom, counters: Counter,
                 resolve: Resolve) -> None:
        self.cfg, self.policy = cfg, policy
        self.lane, self.dispatch, self.pool, self.hedger = lane, dispatch, pool, hedger
        self._frames, self._headroom, self.counters, self._resolve = frames, headroom, counters, resolve
        self.next_seq = 0  # the sequence number the next frame must have
        self.offloading = False  # the policy's mode after the last frame it routed first-hand

    # -- new frames ------------------------------------------------------------------------
    def admit(self, ev: FrameCaptured, *, closing: bool) -> list[Action]:
        """A frame was captured: dropped at once while the device closes or if it is too old
        already, else routed."""
        f = self._new_frame(ev.seq, ev.at, ev.captured_at, ev.budget_s)
        if closing:
            self._resolve(f, Outcome.DROPPED, Reason.SHUTDOWN)
        elif ev.at >= f.deadline:
            self._resolve(f, Outcome.DROPPED, Reason.EXPIRED)
        else:
            return self.route(f, ev.at)
        return []

    def skipped(self, ev: FrameSkipped) -> None:
        """The source skipped a frame: it is accounted for, dropped for the source's reason."""
        self._resolve(self._new_frame(ev.seq, ev.at, ev.captured_at, None), Outcome.DROPPED, ev.reason)

    def _new_frame(self, seq: int, at: float, captured_at: float | None, budget_s: float | None) -> FrameState:
        captured = at if captured_at is None else captured_at
        self._headroom.frame(at)
        budget = self.cfg.budget_s if budget_s is None else budget_s
        self.next_seq += 1
        return self._frames.add(FrameState(seq, captured, captured + budget, budget))

    # -- the policy ------------------------------------------------------------------------
    def observe(self, f: FrameState, now: float, *, cloud_block: Reason | None = None) -> Observation:
        """What the policy sees for ``f``; ``cloud_block``: why the cloud cannot take it in time after all."""
        p, cfg = self.cfg.policy, self.cfg
        state, cap = self.pool.view(now)
        pending = len(self.dispatch.queue) + self.pool.frames
        model = self.pool.model
        stale = model.last_at is None or now - model.last_at > cfg.probe_after_s
        cloud = cloud_block is None
        if cloud:
            link_s, eta, low = self.dispatch.times(now, ahead=len(self.dispatch.queue))
        else:
            link_s, eta, low = (math.inf if cloud_block is Reason.UPLINK_TOO_SLOW else 0.0), math.inf, math.inf
        return Observation(
            frame_age_s=now - f.captured, budget_s=f.budget, local_ready=self.lane.ready,
            local_queued=len(self.lane.queue), local_busy=self.lane.busy, local_workers=cfg.local_workers,
            local_left_s=self.lane.left(p.local_quantile, now),
            local_service_s=self.lane.estimator.quantile(p.local_quantile, now), cloud_state=state,
            cloud_eta_s=eta, cloud_eta_low_s=low, cloud_link_s=link_s,
            cloud_link_free=cloud and self.dispatch.link_free(now),
            cloud_missing=self._headroom.missing if cfg.uploads_share_local_cpu else 0.0,
            cloud_pending=pending, cloud_capacity=cap, offloading=self.offloading,
            cloud_probe_due=cloud and len(self.pool) > 0 and pending == 0 and (
                stale or self.dispatch.link.stale(now, cfg.probe_after_s)),
        )

    def route(self, f: FrameState, now: float, *, fallback: bool = False,
              cloud_block: Reason | None = None) -> list[Action]:
        """Route a frame through the policy (``fallback``: the cloud gave it back; ``cloud_block``:
        why the cloud cannot take it in time). Returns the wakes the decision asks for."""
        d = self.policy(self.observe(f, now, cloud_block=cloud_block))
        if cloud_block is not None and d.route is Route.CLOUD:  # a baseline that does not look at times
            d = replace(d, route=Route.DROP, reason=cloud_block)
        if not fallback:
            self.offloading = d.offloading
            if d.route is Route.CLOUD or (d.route is Route.DROP and d.reason in _WANTED_CLOUD):
                self._headroom.wanted_cloud(now)
        self.counters[("decision", d.route.value, d.reason.value)] += 1
        out: list[Action] = list(self.pool.wake(self.cfg.wake_timeout_s)) if d.wake_cloud else []
        f.reason = d.reason
        f.request = None
        if d.route is Route.LOCAL:
            if not self.lane.ready:
                raise ConfigError(f"the policy sent frame {f.seq} to a local backend that is not ready")
            f.move(Stage.LOCAL_QUEUE)
            self.lane.queue.append(f.seq)
        elif d.route is Route.CLOUD:
            if not len(self.pool):
                raise ConfigError(f"the policy sent frame {f.seq} to the cloud, but no cloud is configured")
            f.move(Stage.CLOUD_QUEUE)
            self.dispatch.queue.append(f.seq)
        else:
            self._resolve(f, Outcome.DROPPED, d.reason)
        return out

    # -- frames the cloud gives back -------------------------------------------------------
    def give_back(self, req: Request, now: float, *, cloud_block: Reason | None = None) -> list[Action]:
        """The request failed, timed out or was not sent: its frames still waiting on it go back
        through the policy (``cloud_block``: why the cloud cannot take them now)."""
        out: list[Action] = []
        for seq in req.seqs:
            f = self._frames.get(seq)
            if f is None or f.stage is not Stage.CLOUD_FLIGHT or f.request != req.id:
                continue
            if f.hedged:  # it is running locally already: that answer is its chance now
                self.hedger.cloud_over(f)
            else:
                out += self.route(f, now, fallback=True, cloud_block=cloud_block)
        return out

    def not_sent(self, req: Request, now: float) -> list[Action]:
        """The client did not upload the request: its frames' budgets ran out before they could be
        sent. It says nothing of the endpoint (no answer time, no expiry of its own), and the
        frames go back through the policy with the uplink too slow for them."""
        self.counters[("uplink", "not_sent_requests")] += 1
        if req.timed_out:  # (a timed-out request's frames went back when it timed out)
            return []
        return self.give_back(req, now, cloud_block=Reason.UPLINK_TOO_SLOW)
