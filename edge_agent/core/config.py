"""What the device core is told, and what it shows: :class:`CoreConfig` and :class:`CoreSnapshot`.

:class:`CoreConfig` is everything :class:`edge_agent.core.DeviceCore` needs to know, in one
frozen value checked when it is made (``AgentConfig`` builds one for the agent, the simulator
one per trace); :class:`CoreSnapshot` is what ``/healthz`` and the metrics show of a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from yolo_edge.errors import ConfigError
from yolo_edge.remote.health import HealthConfig

from .link import Ladder
from .policy import CloudState, PolicyConfig
from .pool import EndpointSnapshot, EndpointSpec

__all__ = ["CoreConfig", "CoreSnapshot"]


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

    def health(self, *, status: str, frames: int) -> dict:
        """The device's part of ``/healthz``: ``status`` (ok, stopping) and the frames seen so far."""
        def ms(s: float | None) -> float | None:
            return None if s is None else round(1000 * s, 2)

        return {
            "status": status, "local": "ready" if self.local_ready else "warming", "cloud": self.cloud_state.value,
            "local_queue": self.local_queued, "cloud_pending": self.cloud_pending, "pending": self.pending,
            "frames": frames, "local_service_ms": ms(self.local_service_s), "cloud_rtt_ms": ms(self.cloud_rtt_s),
            "endpoints": [{"name": e.name, "state": e.state, "inflight": e.requests, "answered": e.answered,
                           "failures": e.failures, "backup": e.backup, "weight": e.weight, "rtt_ms": ms(e.rtt_s),
                           **({"reason": e.reason} if e.reason else {})} for e in self.endpoints],
        }
