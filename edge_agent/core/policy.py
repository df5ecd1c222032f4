"""The offload policy: a pure function from one observed state to a route.

No threads, sockets, clocks or OpenCV here. :class:`edge_agent.core.DeviceCore` builds an
:class:`Observation` for every frame and calls a policy on it, in the agent and in the
simulator alike.

A frame goes **local** while the estimated local completion, ``(frames ahead + 1) x
local service time``, fits inside a share of its remaining budget and the local queue is
under the queue budget. Otherwise it goes to the **cloud** when the cloud is ready, not
saturated, and its estimated round trip fits; otherwise it falls back to local if local
can still make the deadline, goes to the cloud anyway when the cloud has a real chance
(its optimistic round trip fits, or its estimate is stale and needs a fresh sample), and
is **dropped** with a reason if none of that holds. A frame with nowhere better to go is
worth a try: a late answer costs nothing a drop would not.

Estimates are quantiles of recent samples (:mod:`edge_agent.core.estimators`): local service
at ``local_quantile``; the cloud's answer time, measured at the same queue depth as this
frame would find, at ``cloud_quantile`` for planning and at ``cloud_chance_quantile`` for
the last-chance try. One outlier moves none of them far.

Hysteresis: once offloading, local takes a frame only below a lower threshold
(``local_low`` rather than ``local_high``) and a shorter queue, so routes come in runs
instead of flapping frame by frame. The cloud is woken (``wake_cloud``) as soon as the
local queue starts to rise (or while the local backend is still warming up), before it is
needed, because a scaled-to-zero service takes seconds to minutes to start.

>>> cfg = PolicyConfig(latency_budget_s=0.5, queue_budget=8)
>>> busy = Observation(frame_age_s=0.0, local_queued=7, local_busy=1, local_service_s=0.05,
...                    cloud_state=CloudState.READY, cloud_eta_s=0.12)
>>> d = decide(busy, cfg)
>>> d.route.value, d.reason.value
('cloud', 'local_over_budget')
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from yolo_edge.errors import ConfigError

from .frames import Reason, Route

__all__ = ["CloudState", "Route", "Mode", "PolicyConfig", "Observation", "Decision", "Policy", "decide",
           "local_eta", "threshold_policy", "make_policy", "STRATEGIES"]


class CloudState(str, Enum):
    """What the device knows about a cloud endpoint."""

    NONE = "none"  # no cloud configured: a local-only device
    DISABLED = "disabled"  # refused (model mismatch, auth)
    COLD = "cold"  # not known to be up: scaled to zero or never asked
    WAKING = "waking"  # a wake (GET /readyz) is under way
    READY = "ready"
    FAILING = "failing"  # out of rotation after failures, until a probe finds it ready


class Mode(str, Enum):
    HYBRID = "hybrid"  # local first, overflow to the cloud (the product)
    LOCAL = "local"  # baseline: never use the cloud
    CLOUD = "cloud"  # baseline: every frame to the cloud


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Budgets and thresholds; the defaults were tuned with ``edge-agent simulate``."""

    latency_budget_s: float = 0.5
    #: frames allowed to wait in the local queue (not counting those in service)
    queue_budget: int = 8
    #: local admission: estimated completion <= local_high x remaining budget; past it the
    #: overflow goes to the cloud while the local queue still has room to absorb a slow spell
    #: of the cloud (frames fall back to local up to local_fallback x remaining)
    local_high: float = 0.5
    #: ... and while offloading, <= local_low x remaining (hysteresis; off by default: routes
    #: in runs bunch frames at the cloud, and the simulator measured that costing frames)
    local_low: float = 0.5
    #: with the cloud too slow or busy for a frame, local takes it while its estimated completion
    #: <= local_fallback (at least local_high) x remaining. Not the whole budget: a real device's
    #: run times have a longer tail than the estimate's quantile (over a real 1 Mbit/s link,
    #: admitting up to the whole budget made 18-27 local answers late in 30 s where local only
    #: had none)
    local_fallback: float = 0.8
    #: while offloading the local queue limit is lowered by this many frames
    queue_hysteresis: int = 0
    #: the cloud is planned for only when its estimated round trip <= cloud_margin x remaining
    cloud_margin: float = 0.9
    #: wake a cold cloud once local completion passes this share of the budget ...
    wake_at: float = 0.4
    #: ... or this many frames wait locally
    wake_queue: int = 2
    #: estimates used before the first measurement
    local_service_prior_s: float = 0.05
    cloud_rtt_prior_s: float = 0.3
    #: quantiles of the recent samples that the device plans with
    local_quantile: float = 0.75
    cloud_quantile: float = 0.9
    cloud_chance_quantile: float = 0.25
    mode: Mode = Mode.HYBRID

    def __post_init__(self) -> None:
        if not (isinstance(self.latency_budget_s, (int, float)) and math.isfinite(self.latency_budget_s)
                and self.latency_budget_s > 0):
            raise ConfigError(f"latency_budget_s must be a positive number of seconds, got {self.latency_budget_s!r}")
        if not isinstance(self.queue_budget, int) or self.queue_budget < 1:
            raise ConfigError(f"queue_budget must be a whole number of frames >= 1, got {self.queue_budget!r}")
        if not 0 < self.local_low <= self.local_high <= 1:
            raise ConfigError(
                f"need 0 < local_low <= local_high <= 1, got local_low={self.local_low}, local_high={self.local_high}"
            )
        if not (isinstance(self.local_fallback, (int, float)) and 0 < self.local_fallback <= 1):
            raise ConfigError(f"local_fallback must be within (0, 1], got {self.local_fallback!r}")
        if not 0 < self.cloud_margin <= 1 or not 0 <= self.wake_at <= 1:
            raise ConfigError(f"cloud_margin must be in (0, 1] and wake_at in [0, 1], got {self.cloud_margin}, {self.wake_at}")
        if not 0 <= self.queue_hysteresis < self.queue_budget:
            raise ConfigError(f"queue_hysteresis must be in [0, queue_budget), got {self.queue_hysteresis}")
        for name in ("local_quantile", "cloud_quantile", "cloud_chance_quantile"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise ConfigError(f"mode must be one of {[m.value for m in Mode]}, got {self.mode!r}") from None


@dataclass(frozen=True, kw_only=True)
class Observation:
    """The state one decision sees. Times in seconds."""

    frame_age_s: float  # now - capture time
    local_queued: int  # frames waiting for a local worker
    local_busy: int  # frames in local service now
    #: for each frame in local service now, the time its run still takes (its run time so far
    #: counted); None: each is planned at a whole ``local_service_s``. Used where the cloud is
    #: too slow or busy for a frame (see :func:`decide`)
    local_left_s: tuple[float, ...] | None = None
    local_service_s: float | None  # planning estimate; None before the first sample
    cloud_state: CloudState
    #: when this frame's answer would be back if it joined the cloud queue now (planning
    #: quantile of recent answers at the same queue depth); None before the first sample
    cloud_eta_s: float | None = None
    cloud_eta_low_s: float | None = None  # the same at an optimistic (low) quantile
    local_workers: int = 1
    local_ready: bool = True  # False while the local backend is still loading or building
    cloud_pending: int = 0  # frames sent or waiting for a send slot
    cloud_capacity: int = 1  # frames that may be in flight at once (requests x batch)
    offloading: bool = False  # the previous mode, for hysteresis
    budget_s: float | None = None  # per-frame override of the configured budget
    #: no round trip measured for a while: a frame with nowhere better to go refreshes it
    cloud_probe_due: bool = False
    #: of ``cloud_eta_s``, the time the frame would spend waiting for and crossing the uplink
    cloud_link_s: float | None = None
    #: no upload waits for the uplink (one may be on it): a long shot would not delay a frame
    #: with a real chance, and it goes next
    cloud_link_free: bool = True
    #: share of the cloud's recent frame answers that did not answer the frame in time (expired
    #: at the endpoint, an error, or back after its deadline): a cloud missing most frames is no
    #: chance for one more, where each upload costs local capacity
    cloud_missing: float = 0.0

    @property
    def local_idle(self) -> bool:
        """A local worker sits idle with nothing queued for it."""
        return self.local_ready and self.local_queued <= 0 and self.local_busy < max(1, self.local_workers)


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: Reason  # short, bounded label: safe as a Prometheus label value
    offloading: bool  # mode to carry into the next observation
    wake_cloud: bool = False
    local_eta_s: float = 0.0
    cloud_eta_s: float | None = None


#: a policy maps one observation to a decision (``decide`` with a config bound, or a baseline)
Policy = Callable[[Observation], Decision]


def local_eta(obs: Observation, service_s: float, *, left: bool = False) -> float:
    """Estimated completion of a new local frame: ``ceil((frames ahead + 1) / workers) x
    service time``, each run in progress counted as if it had just started. With ``left``,
    each worker is free when what is left of its run ends (``local_left_s``), then the frames
    queued and this one each take ``service_s`` on the first worker free."""
    if not obs.local_ready:
        return math.inf
    workers = max(1, obs.local_workers)
    if not left or obs.local_left_s is None:
        return math.ceil((max(0, obs.local_queued) + max(0, obs.local_busy) + 1) / workers) * service_s
    busy = len(obs.local_left_s)
    free = sorted([max(0.0, t) for t in obs.local_left_s][:workers] + [0.0] * max(0, workers - busy))
    for _ in range(max(0, obs.local_queued)):
        heapq.heapreplace(free, free[0] + service_s)
    return free[0] + service_s


def _cloud_eta(obs: Observation, cfg: PolicyConfig, estimate: float | None) -> float:
    if estimate is not None:
        return estimate
    # nothing measured yet: the prior round trip per "wave" of frames beyond the in-flight capacity
    return math.ceil((max(0, obs.cloud_pending) + 1) / max(1, obs.cloud_capacity)) * cfg.cloud_rtt_prior_s


#: why a cloud that is not ready cannot take a frame, by its state
_NOT_READY = {
    CloudState.NONE: Reason.CLOUD_NONE, CloudState.DISABLED: Reason.CLOUD_DISABLED, CloudState.COLD: Reason.CLOUD_COLD,
    CloudState.WAKING: Reason.CLOUD_WAKING, CloudState.FAILING: Reason.CLOUD_FAILING,
}

#: a frame falls back to local for the reason the cloud could not take it
_FALLBACK = {
    Reason.CLOUD_COLD: Reason.FALLBACK_CLOUD_COLD, Reason.CLOUD_WAKING: Reason.FALLBACK_CLOUD_WAKING,
    Reason.CLOUD_FAILING: Reason.FALLBACK_CLOUD_FAILING, Reason.CLOUD_DISABLED: Reason.FALLBACK_CLOUD_DISABLED,
    Reason.CLOUD_BUSY: Reason.FALLBACK_CLOUD_BUSY, Reason.CLOUD_TOO_SLOW: Reason.FALLBACK_CLOUD_TOO_SLOW,
    Reason.UPLINK_TOO_SLOW: Reason.FALLBACK_UPLINK_TOO_SLOW,
}


def _cloud_blocker(obs: Observation, cfg: PolicyConfig, remaining: float, cloud_eta: float) -> Reason | None:
    """Why the cloud cannot be planned for with this frame, or None when it can."""
    if obs.cloud_state is CloudState.NONE:
        return Reason.NO_CLOUD
    if obs.cloud_state is not CloudState.READY:
        return _NOT_READY[obs.cloud_state]
    if obs.cloud_pending >= 2 * max(1, obs.cloud_capacity):
        return Reason.CLOUD_BUSY
    if cloud_eta > cfg.cloud_margin * remaining:
        link = obs.cloud_link_s or 0.0
        slow_link = link > cfg.cloud_margin * remaining or link > cloud_eta / 2
        return Reason.UPLINK_TOO_SLOW if slow_link else Reason.CLOUD_TOO_SLOW
    return None


def _cloud_chance(obs: Observation, cfg: PolicyConfig, remaining: float) -> bool:
    """A frame with nowhere better to go: is the cloud worth a try anyway?

    Only while a request slot is free: a long shot queued behind other frames takes a turn
    that a frame with a real chance could have had.
    """
    if obs.cloud_pending >= max(1, obs.cloud_capacity) or not obs.cloud_link_free:
        return False
    if obs.cloud_probe_due:
        return True  # (also what refreshes the share below once the cloud has been left alone)
    if obs.cloud_missing > 0.5:
        return False  # most frames sent lately came back too late or expired: this one would too
    low = obs.cloud_eta_low_s if obs.cloud_eta_low_s is not None else obs.cloud_eta_s
    # a slot is free and the frame would be dropped otherwise: unless even the optimistic
    # estimate (timeouts included) says clearly no, it costs nothing to try
    return _cloud_eta(obs, cfg, low) <= _CHANCE_SLACK * remaining


#: a frame with nowhere else to go is tried in the cloud while its optimistic answer time is
#: within this much of its remaining budget (the optimistic quantile includes timed-out
#: requests, counted at the timeout: a long shot within a few percent still makes it often)
_CHANCE_SLACK = 1.1

#: blockers that leave the device local only for now (not a cloud that is merely slow or busy)
_LOCAL_ONLY_FOR_NOW = frozenset({Reason.UPLINK_TOO_SLOW, Reason.CLOUD_DISABLED, Reason.CLOUD_WAKING})


def decide(obs: Observation, cfg: PolicyConfig) -> Decision:
    """Route one frame: local, cloud, or drop with a reason. Pure and deterministic."""
    budget = obs.budget_s if obs.budget_s is not None else cfg.latency_budget_s
    remaining = budget - max(0.0, obs.frame_age_s)
    service = obs.local_service_s if obs.local_service_s is not None else cfg.local_service_prior_s
    l_eta = local_eta(obs, service)
    c_eta = _cloud_eta(obs, cfg, obs.cloud_eta_s)
    if remaining <= 0:
        return Decision(Route.DROP, Reason.EXPIRED, obs.offloading, False, l_eta, c_eta)
    local_room = obs.local_ready and obs.local_queued < cfg.queue_budget

    if cfg.mode is Mode.LOCAL:
        # the same safety margin as hybrid admission, so the baseline is a fair one; an idle
        # worker takes the frame whatever the estimate says (a late answer costs what a drop does)
        if local_room and (l_eta <= cfg.local_high * remaining or obs.local_idle):
            return Decision(Route.LOCAL, Reason.LOCAL_ONLY, False, False, l_eta, None)
        why = Reason.LOCAL_BUSY if obs.local_ready else Reason.LOCAL_WARMING
        return Decision(Route.DROP, why, False, False, l_eta, None)
    if cfg.mode is Mode.CLOUD:
        blocker = _cloud_blocker(obs, cfg, remaining, c_eta)
        wake = obs.cloud_state is CloudState.COLD
        if blocker is None or (blocker is Reason.CLOUD_TOO_SLOW and _cloud_chance(obs, cfg, remaining)):
            return Decision(Route.CLOUD, Reason.CLOUD_ONLY, True, False, l_eta, c_eta)
        return Decision(Route.DROP, blocker, True, wake, l_eta, c_eta)

    share = cfg.local_low if obs.offloading else cfg.local_high
    q_limit = cfg.queue_budget - (cfg.queue_hysteresis if obs.offloading else 0)
    rising = not obs.local_ready or l_eta >= cfg.wake_at * remaining or obs.local_queued >= cfg.wake_queue
    wake = obs.cloud_state is CloudState.COLD and rising
    if obs.local_ready and l_eta <= share * remaining and obs.local_queued < q_limit:
        return Decision(Route.LOCAL, Reason.LOCAL_FITS, False, wake, l_eta, c_eta)

    if not obs.local_ready:
        why_not_local = Reason.LOCAL_WARMING
    else:
        why_not_local = Reason.LOCAL_QUEUE_FULL if obs.local_queued >= q_limit else Reason.LOCAL_OVER_BUDGET
    blocker = _cloud_blocker(obs, cfg, remaining, c_eta)
    wake = obs.cloud_state is CloudState.COLD
    if blocker is None:
        return Decision(Route.CLOUD, why_not_local, True, False, l_eta, c_eta)
    # the cloud cannot be planned for: over an uplink that carries nothing in time, or with the
    # cloud refused, the device is local only for now and admits on local only's terms (a frame
    # let in past them is late more often than not, and its run is lost to the frames behind
    # it); with the cloud merely slow or busy for a while, the local queue absorbs the overflow
    # up to local_fallback of the remaining budget, and a worker about to be free counts as such
    # (with each run planned as just started, a device whose cloud froze dropped the frames that
    # came while its one worker was busy, and answered fewer than local only). Admission above,
    # and local only's terms, keep that margin: counted there too, the simulator measured no
    # gain, a worse brown-out seed and 0.5-1 point less of the bound over real uplinks
    if blocker in _LOCAL_ONLY_FOR_NOW:
        fits = l_eta <= cfg.local_high * remaining or obs.local_idle
    else:
        l_eta = local_eta(obs, service, left=True)
        fits = l_eta <= max(cfg.local_high, cfg.local_fallback) * remaining
    if local_room and fits:
        no_cloud = blocker is Reason.NO_CLOUD
        return Decision(Route.LOCAL, Reason.LOCAL_FITS if no_cloud else _FALLBACK[blocker], not no_cloud, wake,
                        l_eta, c_eta)
    if blocker in (Reason.CLOUD_TOO_SLOW, Reason.UPLINK_TOO_SLOW) and _cloud_chance(obs, cfg, remaining):
        return Decision(Route.CLOUD, Reason.CLOUD_CHANCE, True, False, l_eta, c_eta)
    if obs.local_idle:
        # an idle worker is never left idle while a frame is dropped: its estimate may be stale
        # (one slow spell), and running the frame is the probe that refreshes it
        return Decision(Route.LOCAL, Reason.LOCAL_IDLE, True, wake, l_eta, c_eta)
    if blocker is Reason.NO_CLOUD or (not obs.local_ready and blocker is Reason.CLOUD_DISABLED):
        blocker = Reason.LOCAL_BUSY if obs.local_ready else Reason.LOCAL_WARMING
    return Decision(Route.DROP, blocker, True, wake, l_eta, c_eta)


def threshold_policy(queue_threshold: int) -> Policy:
    """The naive baseline: offload when the local queue reaches a fixed depth.

    No deadline arithmetic, no hysteresis, no early wake, no local fallback.
    """

    def fn(obs: Observation) -> Decision:
        if obs.local_ready and obs.local_queued < queue_threshold:
            return Decision(Route.LOCAL, Reason.BELOW_THRESHOLD, False)
        if obs.cloud_state is CloudState.READY and obs.cloud_pending < 2 * max(1, obs.cloud_capacity):
            return Decision(Route.CLOUD, Reason.ABOVE_THRESHOLD, True)
        reason = Reason.CLOUD_BUSY if obs.cloud_state is CloudState.READY else _NOT_READY[obs.cloud_state]
        return Decision(Route.DROP, reason, True, obs.cloud_state is CloudState.COLD)

    return fn


#: the policies the simulator compares: ours and three baselines
STRATEGIES = ("local", "cloud", "threshold", "policy")


def make_policy(strategy: str, cfg: PolicyConfig) -> Policy:
    """``policy`` (ours, in ``cfg.mode``), ``local``, ``cloud`` or ``threshold`` as a Policy."""
    from dataclasses import replace

    if strategy == "policy":
        return lambda obs: decide(obs, cfg)
    if strategy in ("local", "cloud"):
        base = replace(cfg, mode=Mode(strategy))
        return lambda obs: decide(obs, base)
    if strategy == "threshold":
        return threshold_policy(max(1, cfg.queue_budget // 2))
    raise ConfigError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
