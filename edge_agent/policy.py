"""The offload policy: a pure function from observed state to a route.

No threads, sockets, clocks or OpenCV here: the runner and the simulator both build an
:class:`Observation` and call :func:`decide`, so what the simulator shows is what the
device does.

A frame goes **local** while the estimated local completion, ``(frames ahead + 1) x
local service time``, fits inside a share of its remaining budget and the local queue is
under the queue budget. Otherwise it goes to the **cloud** when the cloud is ready and its
estimated round trip fits; otherwise it falls back to local if local can still make the
deadline, and is **dropped** with a reason if not.

Hysteresis: once offloading, local takes a frame only below a lower threshold
(``local_low`` rather than ``local_high``) and a shorter queue, so routes come in runs
instead of flapping frame by frame. The cloud is woken (``wake_cloud``) as soon as the
local queue starts to rise, before it is needed, because a scaled-to-zero service takes
seconds to minutes to start.

>>> cfg = PolicyConfig(latency_budget_s=0.5, queue_budget=8)
>>> busy = Observation(frame_age_s=0.0, local_queued=7, local_busy=1, local_service_s=0.05,
...                    cloud_state=CloudState.READY, cloud_rtt_s=0.12)
>>> d = decide(busy, cfg)
>>> d.route.value, d.reason
('cloud', 'local_over_budget')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from yolo_edge.errors import ConfigError

__all__ = ["CloudState", "Route", "Mode", "PolicyConfig", "Observation", "Decision", "decide", "local_eta"]


class Route(str, Enum):
    LOCAL = "local"
    CLOUD = "cloud"
    DROP = "drop"


class CloudState(str, Enum):
    """What the agent knows about the cloud service."""

    DISABLED = "disabled"  # none configured, or refused (model mismatch, auth)
    COLD = "cold"  # not known to be up: scaled to zero or never asked
    WAKING = "waking"  # a wake (GET /readyz) is under way
    READY = "ready"
    FAILING = "failing"  # circuit breaker open: cooling down after failures


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
    #: local admission: estimated completion <= local_high x remaining budget
    local_high: float = 0.8
    #: ... and while offloading, <= local_low x remaining (hysteresis)
    local_low: float = 0.6
    #: while offloading the local queue limit is lowered by this many frames
    queue_hysteresis: int = 1
    #: the cloud is used only when its estimated round trip <= cloud_margin x remaining
    cloud_margin: float = 0.9
    #: wake a cold cloud once local completion passes this share of the budget ...
    wake_at: float = 0.4
    #: ... or this many frames wait locally
    wake_queue: int = 2
    #: estimates used before the first measurement
    local_service_prior_s: float = 0.05
    cloud_rtt_prior_s: float = 0.3
    mode: Mode = Mode.HYBRID

    def __post_init__(self) -> None:
        if not (self.latency_budget_s > 0 and math.isfinite(self.latency_budget_s)):
            raise ConfigError(f"latency_budget_s must be a positive number of seconds, got {self.latency_budget_s!r}")
        if self.queue_budget < 1:
            raise ConfigError(f"queue_budget must be >= 1 frame, got {self.queue_budget!r}")
        if not 0 < self.local_low <= self.local_high <= 1:
            raise ConfigError(
                f"need 0 < local_low <= local_high <= 1, got local_low={self.local_low}, local_high={self.local_high}"
            )
        if not 0 < self.cloud_margin <= 1 or not 0 <= self.wake_at <= 1:
            raise ConfigError(f"cloud_margin must be in (0, 1] and wake_at in [0, 1], got {self.cloud_margin}, {self.wake_at}")
        if not 0 <= self.queue_hysteresis < self.queue_budget:
            raise ConfigError(f"queue_hysteresis must be in [0, queue_budget), got {self.queue_hysteresis}")
        object.__setattr__(self, "mode", Mode(self.mode))


@dataclass(frozen=True, kw_only=True)
class Observation:
    """The state one decision sees. Times in seconds."""

    frame_age_s: float  # now - capture time
    local_queued: int  # frames waiting for a local worker
    local_busy: int  # frames in local service now
    local_service_s: float | None  # moving estimate; None before the first sample
    cloud_state: CloudState
    cloud_rtt_s: float | None  # moving (upper) estimate; None before the first sample
    local_workers: int = 1
    cloud_pending: int = 0  # frames sent or waiting for a send slot
    cloud_capacity: int = 1  # frames that may be in flight at once (requests x batch)
    offloading: bool = False  # the previous mode, for hysteresis
    budget_s: float | None = None  # per-frame override of the configured budget
    #: no round trip measured for a while: a frame that would be dropped for "cloud_too_slow"
    #: goes to the cloud instead, so a stale estimate (after a congestion) gets refreshed
    cloud_probe_due: bool = False


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str  # short, bounded label: safe as a Prometheus label value
    offloading: bool  # mode to carry into the next observation
    wake_cloud: bool = False
    local_eta_s: float = 0.0
    cloud_eta_s: float | None = None


def local_eta(obs: Observation, service_s: float) -> float:
    """Estimated completion of a new local frame: (frames ahead + 1) x service time."""
    workers = max(1, obs.local_workers)
    ahead = max(0, obs.local_queued) + max(0, obs.local_busy)
    return math.ceil((ahead + 1) / workers) * service_s


def _cloud_eta(obs: Observation, rtt_s: float) -> float:
    # frames beyond the in-flight capacity wait for a whole round trip per "wave"
    return math.ceil((max(0, obs.cloud_pending) + 1) / max(1, obs.cloud_capacity)) * rtt_s


def _cloud_blocker(obs: Observation, cfg: PolicyConfig, remaining: float, cloud_eta: float) -> str | None:
    """Why the cloud cannot take this frame, or None when it can."""
    if obs.cloud_state is not CloudState.READY:
        return f"cloud_{obs.cloud_state.value}"
    if obs.cloud_pending >= 2 * max(1, obs.cloud_capacity):
        return "cloud_busy"
    if cloud_eta > cfg.cloud_margin * remaining:
        return "cloud_too_slow"
    return None


def decide(obs: Observation, cfg: PolicyConfig) -> Decision:
    """Route one frame: local, cloud, or drop with a reason. Pure and deterministic."""
    budget = obs.budget_s if obs.budget_s is not None else cfg.latency_budget_s
    remaining = budget - max(0.0, obs.frame_age_s)
    service = obs.local_service_s if obs.local_service_s is not None else cfg.local_service_prior_s
    rtt = obs.cloud_rtt_s if obs.cloud_rtt_s is not None else cfg.cloud_rtt_prior_s
    l_eta = local_eta(obs, service)
    c_eta = _cloud_eta(obs, rtt)
    if remaining <= 0:
        return Decision(Route.DROP, "expired", obs.offloading, False, l_eta, c_eta)

    if cfg.mode is Mode.LOCAL:
        # the same safety margin as hybrid admission, so the baseline is a fair one
        if l_eta <= cfg.local_high * remaining and obs.local_queued < cfg.queue_budget:
            return Decision(Route.LOCAL, "local_only", False, False, l_eta, None)
        return Decision(Route.DROP, "local_full", False, False, l_eta, None)
    if cfg.mode is Mode.CLOUD:
        blocker = _cloud_blocker(obs, cfg, remaining, c_eta)
        wake = obs.cloud_state is CloudState.COLD
        if blocker is None or (blocker == "cloud_too_slow" and obs.cloud_probe_due):
            return Decision(Route.CLOUD, "cloud_only", True, False, l_eta, c_eta)
        return Decision(Route.DROP, blocker, True, wake, l_eta, c_eta)

    share = cfg.local_low if obs.offloading else cfg.local_high
    q_limit = cfg.queue_budget - (cfg.queue_hysteresis if obs.offloading else 0)
    rising = l_eta >= cfg.wake_at * remaining or obs.local_queued >= cfg.wake_queue
    wake = obs.cloud_state is CloudState.COLD and rising
    if l_eta <= share * remaining and obs.local_queued < q_limit:
        return Decision(Route.LOCAL, "local_fits", False, wake, l_eta, c_eta)

    why_not_local = "local_queue_full" if obs.local_queued >= q_limit else "local_over_budget"
    blocker = _cloud_blocker(obs, cfg, remaining, c_eta)
    wake = obs.cloud_state is CloudState.COLD
    if blocker is None:
        return Decision(Route.CLOUD, why_not_local, True, False, l_eta, c_eta)
    # the cloud cannot help: local still takes the frame if it can make the deadline at all
    if l_eta <= remaining and obs.local_queued < cfg.queue_budget:
        return Decision(Route.LOCAL, f"fallback_{blocker}", True, wake, l_eta, c_eta)
    if blocker == "cloud_too_slow" and obs.cloud_probe_due:
        # this frame is lost anyway: spend it on measuring the cloud again
        return Decision(Route.CLOUD, "cloud_probe", True, False, l_eta, c_eta)
    return Decision(Route.DROP, blocker, True, wake, l_eta, c_eta)
