"""Scenario traces: arrivals, device speed and cloud behaviour over time, and their samples.

A :class:`Trace` describes a scenario; :func:`sample` draws one realization of it for one
device (capture times, each frame's local service time, each frame's network round trip)
from the trace's seed alone. The simulator, the oracle bound and the threaded agent's
trace-driven fakes all read the same :class:`TraceSample`, so a frame takes the same time
everywhere and differences between them come from the code, not from the dice.

>>> t = SCENARIOS["cold_start"]
>>> t.cloud_cold_start_s
30.0
>>> s = sample(scenario("steady", duration_s=2.0, warmup_s=0.5))
>>> len(s.captured), bool(s.local_service[0] > 0)
(60, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from yolo_edge.errors import ConfigError

__all__ = ["Trace", "CloudTrace", "TraceSample", "SCENARIOS", "UPLINK_SCENARIOS", "LIVENESS_SCENARIOS",
           "JITTER_SCENARIOS", "ALL_SCENARIOS", "scenario", "sample", "lognormal_params", "CAPACITY_SCENARIOS",
           "fidelity_traces"]

Window = tuple[float, float, float]  # (start_s, end_s, value)
Ramp = tuple[float, float, float, float]  # (start_s, peak_s, end_s, factor at the peak)


@dataclass(frozen=True, kw_only=True)
class CloudTrace:
    """One cloud endpoint of a scenario: a service with its slots, speed, outages and model."""

    name: str = "cloud"
    service_s: float = 0.02  # per frame on one slot
    slots: int = 4  # concurrent requests per replica
    #: adaptive batching: a free slot takes queued requests' frames into one model batch of up to
    #: this many (as BentoML merges concurrent requests); 1: each request is served on its own
    batch_frames: int = 1
    #: what each frame after the first adds to a batch, in single frames: about 0.5 on a GPU
    #: (batching pays), near 1.0 on a CPU, where a batch of n costs about n singles
    batch_marginal: float = 0.5
    degrade: tuple[Ramp, ...] = ()  # round trip and service slow down and recover
    slow: tuple[Window, ...] = ()  # (start, end, factor) multiplying its service time: an endpoint slowed
    cold_start_s: float = 0.0  # time from the first wake until the first replica is ready
    outages: tuple[tuple[float, float], ...] = ()  # (start, end): requests and /readyz fail (killed: end = inf)
    outage_fail_s: float = 0.01  # how long a failing request takes (refused: fast)
    outage_retry_after_s: float | None = None  # failing requests say 503 + Retry-After instead of refusing
    hangs: bool = False  # during outages requests hang until the client's timeout instead
    wrong_model: bool = False  # serves another model: every answer fails the model check
    weight: float = 1.0
    backup: bool = False
    autoscale: bool = False
    max_replicas: int = 1
    replica_start_s: float = 20.0
    target_inflight_per_replica: float = 3.0

    def __post_init__(self) -> None:
        if self.service_s <= 0 or self.slots < 1 or self.max_replicas < 1:
            raise ConfigError(f"cloud {self.name!r}: service_s, slots and max_replicas must be positive")
        if not 0.0 <= self.batch_marginal <= 2.0:
            raise ConfigError(f"cloud {self.name!r}: batch_marginal is what each extra frame adds to a batch, in "
                              f"single frames (0.0-2.0), not {self.batch_marginal}")

    def degrade_factor(self, t: float) -> float:
        return _ramp(self.degrade, t)

    def slow_factor(self, t: float) -> float:
        return next((factor for start, end, factor in self.slow if start <= t < end), 1.0)

    def outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def outage_end(self, t: float) -> float:
        """The end of the outage covering ``t`` (``t`` itself when none does)."""
        while True:
            ends = [end for start, end in self.outages if start <= t < end]
            if not ends:
                return t
            t = max(ends)

    def batch_s(self, n: int, t: float) -> float:
        """Service time of a batch of ``n`` frames started at ``t`` (a GPU batch costs less than n singles)."""
        return self.service_s * (1 + self.batch_marginal * (n - 1)) * self.degrade_factor(t) * self.slow_factor(t)

    @property
    def capacity_fps(self) -> float:
        return 0.0 if self.wrong_model else self.slots * self.max_replicas / self.service_s


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One scenario. Times in seconds; in a fleet the cloud is shared by all devices."""

    name: str = "custom"
    duration_s: float = 60.0
    warmup_s: float = 5.0  # frames captured before this are not counted
    fps: float = 30.0
    bursts: tuple[Window, ...] = ()  # (start, end, fps) overriding ``fps``
    budget_s: float = 0.5
    # the device
    local_service_s: float = 0.04
    local_cv: float = 0.15  # spread of local service times
    slow: tuple[Window, ...] = ()  # (start, end, factor) multiplying local service time
    local_ramp: tuple[Ramp, ...] = ()  # local service slows along a ramp and recovers (thermal throttling)
    local_workers: int = 1
    local_warmup_s: float = 0.0  # the local backend is ready this long after the start
    # the network, per request: lognormal round trip
    net_rtt_s: float = 0.05  # mean
    net_jitter_s: float = 0.01  # standard deviation
    # the cloud service
    cloud_service_s: float = 0.02  # per frame on one slot
    cloud_slots: int = 4  # concurrent requests per replica
    cloud_degrade: tuple[Ramp, ...] = ()  # round trip and service slow down and recover
    cloud_cold_start_s: float = 0.0  # time from the first wake until the first replica is ready
    cloud_outages: tuple[tuple[float, float], ...] = ()  # (start, end): requests and /readyz fail
    outage_fail_s: float = 0.01  # how long a failing request takes (refused: fast)
    outage_retry_after_s: float | None = None  # failing requests say 503 + Retry-After instead of refusing
    cloud_hangs: bool = False  # during outages requests hang until the client's timeout instead
    # fleet autoscaling (replicas start at 1 after the cold start)
    autoscale: bool = False
    max_replicas: int = 1
    replica_start_s: float = 20.0
    target_inflight_per_replica: float = 3.0
    #: several endpoints (the pool); empty: one, from the cloud_* fields above
    endpoints: tuple[CloudTrace, ...] = ()
    # the uplink: a real trace (bundled name or Mahimahi file) the device's uploads queue on, in
    # bytes; None: no link (each request only pays its round trip)
    uplink: str | None = None
    uplink_offset_s: float | None = None  # where in the trace the run starts; None: drawn per seed and device
    #: the share of the trace's packets that TCP turns into the device's bytes (1.0: every
    #: delivery opportunity carries a full packet of an upload). TCP over a real link leaves
    #: some unused (its start-up, its recovery from losses and outages); a bulk upload over the
    #: shaped link measures it: 0.97-0.99 on LTE, 0.84-0.93 on the AT&T drive
    #: (benchmarks/link_bench.py)
    uplink_efficiency: float = 1.0
    # the device's own CPU work (capture decode, encoding each upload) on the local worker's core
    shared_cpu: bool = False
    capture_cpu_s: float = 0.0  # per frame captured
    encode_cpu_scale: float = 1.0  # times the encode times measured here (a slower device CPU)
    ladder: tuple[str, ...] | None = None  # upload encodings, best first (None: the agent's default)
    # agent settings the simulated device uses
    max_inflight: int = 4
    max_batch: int = 1
    queue_budget: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.fps <= 0 or self.local_service_s <= 0 or self.cloud_slots < 1:
            raise ConfigError(f"trace {self.name!r}: duration, fps, local_service_s and cloud_slots must be positive")
        if self.warmup_s >= self.duration_s:
            raise ConfigError(f"trace {self.name!r}: warmup_s ({self.warmup_s}) must be shorter than duration_s")
        if not 0.0 < self.uplink_efficiency <= 1.0:
            raise ConfigError(f"trace {self.name!r}: uplink_efficiency is the share of the link's packets an upload "
                              f"gets, in (0, 1], not {self.uplink_efficiency}")

    def fps_at(self, t: float) -> float:
        for start, end, fps in self.bursts:
            if start <= t < end:
                return fps
        return self.fps

    def slow_factor(self, t: float) -> float:
        """How much slower than usual the local worker runs at ``t`` (a slow spell, a thermal ramp)."""
        factor = next((f for start, end, f in self.slow if start <= t < end), 1.0)
        return factor * _ramp(self.local_ramp, t)

    @property
    def clouds(self) -> tuple[CloudTrace, ...]:
        """The scenario's endpoints (one, from the cloud_* fields, unless ``endpoints`` lists them)."""
        if self.endpoints:
            return self.endpoints
        return (CloudTrace(service_s=self.cloud_service_s, slots=self.cloud_slots, degrade=self.cloud_degrade,
                           cold_start_s=self.cloud_cold_start_s, outages=self.cloud_outages,
                           outage_fail_s=self.outage_fail_s, outage_retry_after_s=self.outage_retry_after_s,
                           hangs=self.cloud_hangs, autoscale=self.autoscale, max_replicas=self.max_replicas,
                           replica_start_s=self.replica_start_s,
                           target_inflight_per_replica=self.target_inflight_per_replica),)

    @property
    def local_capacity_fps(self) -> float:
        return self.local_workers / self.local_service_s

    @property
    def cloud_capacity_fps(self) -> float:
        return sum(c.capacity_fps for c in self.clouds)

    @property
    def peak_fps(self) -> float:
        return max([self.fps] + [b[2] for b in self.bursts])


def _ramp(ramps: tuple[Ramp, ...], t: float) -> float:
    """1 outside the ramps; rising linearly to ``factor`` at the peak, then back to 1."""
    for start, peak, end, factor in ramps:
        if start <= t < peak:
            return 1.0 + (factor - 1.0) * (t - start) / (peak - start)
        if peak <= t < end:
            return factor - (factor - 1.0) * (t - peak) / (end - peak)
    return 1.0


def lognormal_params(mean: float, std: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and standard deviation."""
    sigma = math.sqrt(math.log(1 + (std / mean) ** 2)) if mean > 0 and std > 0 else 0.0
    return math.log(max(mean, 1e-9)) - sigma * sigma / 2, sigma


@dataclass(frozen=True)
class TraceSample:
    """One device's realization of a trace: frame i is captured at ``captured[i]``, takes
    ``local_service[i]`` (times the trace's slow factor) on a local worker, and a request
    whose first frame is i spends ``net_rtt[i]`` (times the degrade factor) on the network.

    With an uplink, frame i encoded at rung r takes ``frame_bytes[r][i]`` bytes (drawn from
    real frames encoded at the model's input size, the scene changing every few seconds) and
    ``encode_s[r][i]`` of the device's CPU, and the link trace starts ``uplink_offset_s`` in.
    """

    trace: Trace
    captured: np.ndarray
    local_service: np.ndarray
    net_rtt: np.ndarray
    frame_bytes: dict = field(default_factory=dict)
    encode_s: dict = field(default_factory=dict)
    uplink_offset_s: float = 0.0

    def local_time(self, seq: int, start: float) -> float:
        return float(self.local_service[seq]) * self.trace.slow_factor(start)

    def network_time(self, seq: int, at: float, cloud: CloudTrace) -> float:
        """The round trip of a request to ``cloud`` whose first frame is ``seq``, sent at ``at``."""
        return float(self.net_rtt[seq]) * cloud.degrade_factor(at)

    def nbytes(self, seq: int, rung: str) -> int:
        table = self.frame_bytes.get(rung)
        return 0 if table is None else int(table[seq])

    def encode_time(self, seq: int, rung: str) -> float:
        table = self.encode_s.get(rung)
        return 0.0 if table is None else float(table[seq])


def _arrivals(trace: Trace, offset: float) -> np.ndarray:
    times, t = [], offset
    while t < trace.duration_s:
        times.append(t)
        t += 1.0 / trace.fps_at(t)
    return np.asarray(times, dtype=np.float64)


def sample(trace: Trace, *, device: int = 0, offset: float | None = None) -> TraceSample:
    """Draw device ``device``'s realization of ``trace`` (deterministic in seed and device)."""
    rng = np.random.default_rng([trace.seed, device])
    if offset is None:
        offset = float(rng.uniform(0, 1.0 / trace.fps)) if device else 0.0
    captured = _arrivals(trace, offset)
    n = len(captured)
    mu, sigma = lognormal_params(trace.local_service_s, trace.local_cv * trace.local_service_s)
    local = rng.lognormal(mu, sigma, n) if sigma > 0 else np.full(n, trace.local_service_s)
    mu, sigma = lognormal_params(trace.net_rtt_s, trace.net_jitter_s)
    net = rng.lognormal(mu, sigma, n) if sigma > 0 else np.full(n, trace.net_rtt_s)
    if trace.uplink is None:  # (drawn after the rest: traces without a link sample exactly as before)
        return TraceSample(trace, captured, local, net)
    from .uplink import UplinkTrace, frame_size_table

    link = UplinkTrace.load(trace.uplink)
    offset_s = trace.uplink_offset_s
    if offset_s is None:
        offset_s = float(rng.uniform(0, max(0.0, link.period_s - trace.duration_s)))
    table = frame_size_table()
    # the scene: one real frame's sizes for a few seconds at a time, a few percent apart frame to frame
    scene = rng.integers(0, len(table.names), size=int(trace.duration_s // _SCENE_S) + 2)
    which = scene[np.minimum((captured // _SCENE_S).astype(int), len(scene) - 1)]
    jitter = rng.lognormal(0.0, 0.04, n)
    sizes = {r: np.maximum(1, table.nbytes[which, i] * jitter).astype(np.int64) for i, r in enumerate(table.rungs)}
    encode = {r: table.encode_s[which, i] * trace.encode_cpu_scale for i, r in enumerate(table.rungs)}
    return TraceSample(trace, captured, local, net, sizes, encode, offset_s)


#: how long a camera's scene lasts before the frames look like another real photo
_SCENE_S = 3.0


# local 25 fps, cloud 12.5 fps: 37.5 fps of capacity for 30 fps of frames (1.25x)
_BASE = Trace(name="steady", fps=30.0, local_service_s=0.04, cloud_service_s=0.08, cloud_slots=1)
# heavy tail: lognormal round trip with p99 = 5 x the median (sigma = ln 5 / 2.326)
_HEAVY_SIGMA = math.log(5) / 2.326

SCENARIOS: dict[str, Trace] = {
    "steady": _BASE,
    "burst": replace(_BASE, name="burst", fps=15.0, bursts=((20.0, 30.0, 34.0), (40.0, 45.0, 60.0))),
    "cold_start": replace(_BASE, name="cold_start", cloud_cold_start_s=30.0, duration_s=60.0),
    "outage": replace(_BASE, name="outage", cloud_outages=((20.0, 35.0),)),
    "jitter": replace(_BASE, name="jitter", net_rtt_s=0.12, net_jitter_s=0.06),
    "slow_device": replace(_BASE, name="slow_device", fps=18.0, slow=((15.0, 40.0, 2.5),)),
    "double_rate": replace(_BASE, name="double_rate", fps=50.0, cloud_service_s=0.02, cloud_slots=2),
    # local + cloud exactly 1.2x the load, with a jittery network: 25 + 11 fps for 30
    "capacity_1_2x": replace(_BASE, name="capacity_1_2x", cloud_service_s=1 / 11, net_rtt_s=0.08, net_jitter_s=0.03),
    # two local workers (a GPU running two streams), 1.2x
    "two_workers": replace(_BASE, name="two_workers", fps=48.0, local_workers=2, local_service_s=0.05,
                           cloud_service_s=1 / 17.6, net_jitter_s=0.02),
    # a heavy-tailed network: median 0.1 s, p99 0.5 s
    "heavy_tail": replace(_BASE, name="heavy_tail", cloud_slots=2,
                          net_rtt_s=0.1 * math.exp(_HEAVY_SIGMA ** 2 / 2),
                          net_jitter_s=0.1 * math.exp(_HEAVY_SIGMA ** 2 / 2) * math.sqrt(math.exp(_HEAVY_SIGMA ** 2) - 1)),
    # the cloud slowly degrades to 3.2x its answer time (0.45 s of a 0.5 s budget) and recovers
    "degrading": replace(_BASE, name="degrading", net_rtt_s=0.08, net_jitter_s=0.02, cloud_service_s=0.06,
                         cloud_slots=2, cloud_degrade=((10.0, 30.0, 50.0, 3.2),)),
    # ... and a brown-out: 6x, past the budget for 20 s, where only local can answer
    "brownout": replace(_BASE, name="brownout", net_rtt_s=0.08, net_jitter_s=0.02, cloud_service_s=0.06,
                        cloud_degrade=((10.0, 30.0, 50.0, 6.0),)),
    # on/off bursts past the total capacity: 40 fps for 2 s every 6 s, 15 fps between
    "on_off": replace(_BASE, name="on_off", fps=15.0,
                      bursts=tuple((float(s), float(s + 2), 40.0) for s in range(6, 58, 6))),
    # a self-hosted service that answers 503 + Retry-After while it is down
    "retry_after": replace(_BASE, name="retry_after", cloud_outages=((20.0, 30.0),), outage_retry_after_s=1.0),
    # a frozen cloud: requests hang until the client times out
    "frozen": replace(_BASE, name="frozen", cloud_outages=((20.0, 30.0),), cloud_hangs=True),
    # the local backend builds its engine for 20 s: the cloud carries what it can meanwhile
    "local_warmup": replace(_BASE, name="local_warmup", local_warmup_s=20.0, cloud_slots=3),
    # a pool of three endpoints, 6.25 fps each: one is killed at 20 s and never comes back
    "pool_killed": replace(_BASE, name="pool_killed", endpoints=(
        CloudTrace(name="gpu-a", service_s=0.16, slots=1), CloudTrace(name="gpu-b", service_s=0.16, slots=1,
                                                                       outages=((20.0, math.inf),)),
        CloudTrace(name="gpu-c", service_s=0.16, slots=1))),
    # ... one slowed to 5x its service time from 15 s to 45 s: it should get less of the traffic
    "pool_slowed": replace(_BASE, name="pool_slowed", endpoints=(
        CloudTrace(name="gpu-a", service_s=0.16, slots=1), CloudTrace(name="gpu-b", service_s=0.16, slots=1,
                                                                       slow=((15.0, 45.0, 5.0),)),
        CloudTrace(name="gpu-c", service_s=0.16, slots=1))),
    # ... one serving another model: it must never answer a frame
    "pool_wrong_model": replace(_BASE, name="pool_wrong_model", endpoints=(
        CloudTrace(name="gpu-a", service_s=0.12, slots=1), CloudTrace(name="gpu-b", service_s=0.12, slots=1,
                                                                       wrong_model=True),
        CloudTrace(name="gpu-c", service_s=0.12, slots=1))),
    # two primaries that fail in turn and both at once from 30 s to 40 s, and a backup that covers
    "pool_backup": replace(_BASE, name="pool_backup", endpoints=(
        CloudTrace(name="gpu-a", service_s=0.12, slots=1, outages=((15.0, 25.0), (30.0, 40.0))),
        CloudTrace(name="gpu-b", service_s=0.12, slots=1, outages=((30.0, 40.0),)),
        CloudTrace(name="backup", service_s=0.12, slots=1, backup=True))),
}

#: scenarios where local + cloud capacity is at least 1.2x the load at every moment, with a
#: jittery round trip, and the cloud never fails: nearly every frame must be answered within
#: its budget. ("jitter" is not one: its round trip alone exceeds the budget for ~0.5% of
#: cloud frames, p99.9 of 120 +- 60 ms lognormal plus 80 ms of service being 541 ms.)
CAPACITY_SCENARIOS = ("steady", "double_rate", "capacity_1_2x", "two_workers")


#: the device at twice its local capacity over each real uplink bundled (edge_agent/sim/uplinks),
#: 500 ms budget: the frames local cannot take must cross a real cellular uplink in time.
#: A fast cloud (4 slots of 15 ms): the link, not the endpoint, is what limits offloading.
_UPLINK = Trace(name="uplink", duration_s=60.0, fps=40.0, local_service_s=0.05, cloud_service_s=0.015, cloud_slots=4,
                net_rtt_s=0.05, net_jitter_s=0.01)
UPLINK_SCENARIOS: dict[str, Trace] = {
    f"uplink_{key}": replace(_UPLINK, name=f"uplink_{key}", uplink=trace)
    for key, trace in (("verizon_lte", "verizon-lte"), ("tmobile_lte", "tmobile-lte"),
                       ("att_lte_driving", "att-lte-driving"), ("tmobile_umts_driving", "tmobile-umts-driving"))
}
UPLINK_SCENARIOS["uplink_shared_cpu"] = replace(
    UPLINK_SCENARIOS["uplink_verizon_lte"], name="uplink_shared_cpu", shared_cpu=True, capture_cpu_s=0.003,
    encode_cpu_scale=3.0)  # a Jetson-class CPU: decode and encode on the local worker's core

#: local slow spells past the budget (a busy CPU, a thermal dip), then recovery; and a slow
#: thermal ramp. The local lane must serve again within a second of the spell's end.
LIVENESS_SCENARIOS: dict[str, Trace] = {
    **{f"local_spell_{n}s": replace(_BASE, name=f"local_spell_{n}s", slow=((20.0, 20.0 + n, 14.0),))
       for n in (1, 3, 5, 10)},
    "local_thermal": replace(_BASE, name="local_thermal", local_ramp=((15.0, 30.0, 45.0, 5.0),)),
    "local_spell_no_cloud": replace(_BASE, name="local_spell_no_cloud", fps=20.0, slow=((20.0, 25.0, 14.0),),
                                    cloud_outages=((0.0, math.inf),)),
}

#: 1.2x capacity with a jittery round trip: the late cloud answers are what hedging saves
JITTER_SCENARIOS: dict[str, Trace] = {
    "jitter_1_2x": replace(_BASE, name="jitter_1_2x", cloud_service_s=1 / 11, net_rtt_s=0.1, net_jitter_s=0.05),
    "jitter_1_2x_tail": replace(_BASE, name="jitter_1_2x_tail", cloud_service_s=1 / 11, net_rtt_s=0.12,
                                net_jitter_s=0.07),
}

#: every named scenario (``SCENARIOS`` are the original set the baselines are compared on)
ALL_SCENARIOS: dict[str, Trace] = {**SCENARIOS, **UPLINK_SCENARIOS, **LIVENESS_SCENARIOS, **JITTER_SCENARIOS}


def scenario(key: str, **overrides) -> Trace:
    """A named scenario, optionally with fields replaced."""
    if key not in ALL_SCENARIOS:
        raise ConfigError(f"unknown scenario {key!r}; choose one of {sorted(ALL_SCENARIOS)}")
    return replace(ALL_SCENARIOS[key], **overrides)


def fidelity_traces() -> dict[str, Trace]:
    """The 30 s traces on which the threaded agent and the simulator are compared.

    Short enough to run on the wall clock (``edge_agent.sim.livesim``), each with a 2 s warm-up
    and the event that matters placed in the middle: a burst, a cloud outage, a cold start.
    """
    short = dict(duration_s=30, warmup_s=2)
    return {
        "steady": scenario("steady", **short),
        "burst": scenario("burst", **short, bursts=((6.0, 14.0, 34.0), (20.0, 24.0, 60.0))),
        "outage": scenario("outage", **short, cloud_outages=((8.0, 16.0),)),
        "cold_start": scenario("cold_start", **short, cloud_cold_start_s=8.0),
        "jitter": scenario("jitter", **short),
    }
