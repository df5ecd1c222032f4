"""Scenario traces for the simulator: arrivals, device speed and cloud behaviour over time.

>>> t = SCENARIOS["cold_start"]
>>> t.cloud_cold_start_s
30.0
>>> t.fps_at(0.0) == t.fps
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from yolo_edge.errors import ConfigError

__all__ = ["Trace", "SCENARIOS", "scenario"]

Window = tuple[float, float, float]  # (start_s, end_s, value)


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One scenario. Times in seconds; the cloud is one service shared by all devices."""

    name: str = "custom"
    duration_s: float = 60.0
    warmup_s: float = 5.0
    fps: float = 30.0
    bursts: tuple[Window, ...] = ()  # (start, end, fps) overriding ``fps``
    budget_s: float = 0.5
    # the device
    local_service_s: float = 0.04
    local_cv: float = 0.15  # spread of local service times
    slow: tuple[Window, ...] = ()  # (start, end, factor) multiplying local service time
    # the network, per request
    net_rtt_s: float = 0.05
    net_jitter_s: float = 0.01  # standard deviation of the round trip
    # the cloud service
    cloud_service_s: float = 0.02  # per frame on one slot
    cloud_slots: int = 4  # concurrent requests per replica
    cloud_cold_start_s: float = 0.0  # time from the first wake until the first replica is ready
    cloud_outages: tuple[tuple[float, float], ...] = ()  # (start, end): requests and /readyz fail
    outage_fail_s: float = 0.01  # how long a failing request takes (refused: fast)
    # fleet autoscaling (replicas start at 1 after the cold start)
    autoscale: bool = False
    max_replicas: int = 1
    replica_start_s: float = 20.0
    target_inflight_per_replica: float = 3.0
    # agent settings the simulated device uses
    max_inflight: int = 4
    max_batch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.fps <= 0 or self.local_service_s <= 0 or self.cloud_slots < 1:
            raise ConfigError(f"trace {self.name!r}: duration, fps, local_service_s and cloud_slots must be positive")

    def fps_at(self, t: float) -> float:
        for start, end, fps in self.bursts:
            if start <= t < end:
                return fps
        return self.fps

    def slow_factor(self, t: float) -> float:
        for start, end, factor in self.slow:
            if start <= t < end:
                return factor
        return 1.0

    def outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.cloud_outages)

    @property
    def local_capacity_fps(self) -> float:
        return 1.0 / self.local_service_s

    @property
    def cloud_capacity_fps(self) -> float:
        return self.cloud_slots * self.max_replicas / self.cloud_service_s


# local 25 fps, cloud 12.5 fps: 37.5 fps of capacity for 30 fps of frames (1.25x)
_BASE = Trace(name="steady", fps=30.0, local_service_s=0.04, cloud_service_s=0.08, cloud_slots=1)

SCENARIOS: dict[str, Trace] = {
    "steady": _BASE,
    "burst": replace(_BASE, name="burst", fps=15.0, bursts=((20.0, 30.0, 34.0), (40.0, 45.0, 60.0))),
    "cold_start": replace(_BASE, name="cold_start", cloud_cold_start_s=30.0, duration_s=60.0),
    "outage": replace(_BASE, name="outage", cloud_outages=((20.0, 35.0),)),
    "jitter": replace(_BASE, name="jitter", net_rtt_s=0.12, net_jitter_s=0.06),
    "slow_device": replace(_BASE, name="slow_device", fps=18.0, slow=((15.0, 40.0, 2.5),)),
    "double_rate": replace(_BASE, name="double_rate", fps=50.0, cloud_service_s=0.02, cloud_slots=2),
}


def scenario(key: str, **overrides) -> Trace:
    """A named scenario, optionally with fields replaced."""
    if key not in SCENARIOS:
        raise ConfigError(f"unknown scenario {key!r}; choose one of {sorted(SCENARIOS)}")
    return replace(SCENARIOS[key], **overrides)
