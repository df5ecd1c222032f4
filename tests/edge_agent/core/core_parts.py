"""The parts of a device core, wired as :class:`edge_agent.core.DeviceCore` wires them, for
testing one part without the core: ``resolve`` records each frame it ends, and the policy
is any callable (a scripted one says exactly where a frame goes)."""

from __future__ import annotations

from collections import Counter

from edge_agent.core.answers import Answers
from edge_agent.core.config import CoreConfig
from edge_agent.core.dispatch import CloudDispatch
from edge_agent.core.estimators import WindowedQuantile
from edge_agent.core.frames import Outcome, Reason, Route
from edge_agent.core.hedge import Headroom, Hedger
from edge_agent.core.lane import LocalLane
from edge_agent.core.policy import Decision, Observation, Policy, PolicyConfig, decide
from edge_agent.core.pool import CloudPool, EndpointSpec
from edge_agent.core.routing import Router
from edge_agent.core.window import FrameState, ReleaseWindow, Stage
from yolo_edge.remote.health import HealthConfig

BUDGET = 0.5


def always(route: Route, reason: Reason, *, wake: bool = False, seen: list | None = None) -> Policy:
    """A policy that sends every frame the same way (and keeps what it saw in ``seen``)."""

    def policy(obs: Observation) -> Decision:
        if seen is not None:
            seen.append(obs)
        return Decision(route, reason, route is not Route.LOCAL, wake)

    return policy


class Parts:
    """A lane, a pool of one endpoint, a dispatcher, a hedger and a window; a router and the answers over them."""

    def __init__(self, *, policy: Policy | None = None, cloud: bool = True, cold: bool = False,
                 local_ready: bool = True, hedge: bool = False, batch: int = 1) -> None:
        self.cfg = CoreConfig(policy=PolicyConfig(latency_budget_s=BUDGET), max_batch=batch, uplink_prior_bps=None)
        self.counters: Counter = Counter()
        self.ended: list[tuple[int, Outcome, Reason | None]] = []
        self.lane = LocalLane(1, ready=local_ready, estimator=WindowedQuantile(32), prior_s=0.05)
        self.pool = CloudPool((EndpointSpec(),) if cloud else (), max_inflight=2, max_batch=batch,
                              health=HealthConfig(), cold=cold, estimator_horizon_s=3.0, counters=self.counters)
        self.frames, self.headroom = ReleaseWindow(64), Headroom()
        self.dispatch = CloudDispatch(policy=self.cfg.policy, ladder=self.cfg.ladder, timeout_s=BUDGET,
                                      probe_after_s=1.0, uplink_prior_bps=None, frames=self.frames, pool=self.pool,
                                      headroom=self.headroom, counters=self.counters)
        self.hedger = Hedger(enabled=hedge, lane=self.lane, dispatch=self.dispatch, frames=self.frames,
                             pool=self.pool, headroom=self.headroom, counters=self.counters, local_quantile=0.75,
                             probe_after_s=1.0, uploads_share_local_cpu=False)
        shared = dict(lane=self.lane, dispatch=self.dispatch, hedger=self.hedger, frames=self.frames,
                      headroom=self.headroom, counters=self.counters, resolve=self.resolve)
        self.router = Router(self.cfg, policy=policy or (lambda obs: decide(obs, self.cfg.policy)), pool=self.pool,
                             **shared)
        self.answers = Answers(**shared)

    def resolve(self, f: FrameState, outcome: Outcome, reason: Reason | None) -> None:
        f.move(Stage.DONE)
        f.outcome = outcome
        if reason is not None:
            f.reason = reason
        self.ended.append((f.seq, outcome, reason))

    def frame(self, seq: int, stage: Stage = Stage.NEW, *, at: float = 0.0) -> FrameState:
        """A frame in the window, moved to ``stage`` the way the core would."""
        f = self.frames.add(FrameState(seq, captured=at, deadline=at + BUDGET, budget=BUDGET))
        if stage is Stage.LOCAL_RUN:
            f.move(Stage.LOCAL_QUEUE)
            f.move(Stage.LOCAL_RUN)
            self.lane.start(seq, at)
        elif stage in (Stage.CLOUD_QUEUE, Stage.CLOUD_FLIGHT):
            f.move(Stage.CLOUD_QUEUE)
            self.dispatch.queue.append(seq)
        return f

    def send(self, *seqs: int, at: float = 0.0):
        """The frames ``seqs``, in flight in one request; returns its SendBatch."""
        for seq in seqs:
            self.frame(seq, Stage.CLOUD_FLIGHT, at=at)
        ep, planned, rung = self.dispatch.plan(at)
        assert planned == seqs, planned
        return self.dispatch.send(ep, planned, rung, at)
