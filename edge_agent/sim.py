"""Discrete-event simulator: the agent's policy on a virtual clock over traces.

The simulated device does what :mod:`edge_agent.runner` does, with the same
:func:`edge_agent.policy.decide`, :class:`~edge_agent.estimators.Ewma` and circuit
breaker: admit each frame through the policy, serve a local FIFO queue, send offloaded
frames in batches with a bound on requests in flight, fall back on cloud failures, wake a
cold cloud. The cloud is one service (FIFO over ``slots x replicas``) shared by every
simulated device, so a fleet of hundreds of devices can be run against one autoscaled
deployment.

>>> from edge_agent.traces import scenario
>>> s = simulate(scenario("steady", duration_s=10, warmup_s=2), strategy="policy")
>>> s.unaccounted
0
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Callable

from yolo_edge.errors import ConfigError

from .breaker import Breaker, BreakerConfig, effective_cloud, on_failure, on_success
from .estimators import Ewma
from .policy import CloudState, Decision, Mode, Observation, PolicyConfig, Route, decide
from .traces import Trace

__all__ = ["simulate", "simulate_fleet", "SimSummary", "STRATEGIES", "threshold_policy"]

#: refresh the cloud round-trip estimate with a probe frame after this long without a sample
PROBE_AFTER_S = 1.0

PolicyFn = Callable[[Observation], Decision]


def threshold_policy(queue_threshold: int) -> PolicyFn:
    """The naive baseline: offload when the local queue exceeds a fixed depth.

    No deadline arithmetic, no hysteresis, no early wake, no local fallback.
    """

    def fn(obs: Observation) -> Decision:
        if obs.local_queued < queue_threshold:
            return Decision(Route.LOCAL, "below_threshold", False)
        if obs.cloud_state is CloudState.READY and obs.cloud_pending < 2 * obs.cloud_capacity:
            return Decision(Route.CLOUD, "above_threshold", True)
        reason = "cloud_busy" if obs.cloud_state is CloudState.READY else f"cloud_{obs.cloud_state.value}"
        return Decision(Route.DROP, reason, True, obs.cloud_state is CloudState.COLD)

    return fn


def _make_policy(strategy: str, budget_s: float, cfg: PolicyConfig | None) -> PolicyFn:
    base = replace(cfg or PolicyConfig(), latency_budget_s=budget_s)
    if strategy == "policy":
        return lambda obs: decide(obs, base)
    if strategy == "local":
        local_cfg = replace(base, mode=Mode.LOCAL)
        return lambda obs: decide(obs, local_cfg)
    if strategy == "cloud":
        cloud_cfg = replace(base, mode=Mode.CLOUD)
        return lambda obs: decide(obs, cloud_cfg)
    if strategy == "threshold":
        return threshold_policy(base.queue_budget // 2)
    raise ConfigError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")


STRATEGIES = ("local", "cloud", "threshold", "policy")


@dataclass
class SimSummary:
    strategy: str
    trace: str
    frames: int = 0
    frames_after_warmup: int = 0
    within_budget: int = 0  # after warm-up
    outcomes: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    latencies: dict = field(default_factory=lambda: {"local": [], "cloud": []})
    duration_s: float = 0.0
    devices: int = 1
    unaccounted: int = 0

    @property
    def answered(self) -> int:
        return self.outcomes["local"] + self.outcomes["cloud"] + self.outcomes["late"]

    @property
    def within_share(self) -> float:
        return self.within_budget / self.frames_after_warmup if self.frames_after_warmup else 1.0

    @property
    def throughput_fps(self) -> float:
        """Frames answered within budget per second, per device."""
        return (self.outcomes["local"] + self.outcomes["cloud"]) / self.duration_s / self.devices

    @property
    def offload_ratio(self) -> float:
        done = self.outcomes["local"] + self.outcomes["cloud"]
        return self.outcomes["cloud"] / done if done else 0.0

    def percentile(self, route: str, q: float) -> float | None:
        xs = sorted(self.latencies[route])
        if not xs:
            return None
        return xs[min(len(xs) - 1, int(math.ceil(q / 100 * len(xs))) - 1)]

    def row(self) -> dict:
        p = {f"{r}_p{q}_ms": (None if (v := self.percentile(r, q)) is None else round(1000 * v, 1))
             for r in ("local", "cloud") for q in (50, 99)}
        return {
            "trace": self.trace, "strategy": self.strategy, "devices": self.devices, "frames": self.frames,
            "within_budget": round(self.within_share, 4), "throughput_fps": round(self.throughput_fps, 2),
            "offload_ratio": round(self.offload_ratio, 3), "late": self.outcomes["late"],
            "dropped": self.outcomes["dropped"], "drop_reasons": dict(self.drops), **p,
        }


class _Cloud:
    """One service: FIFO queue over replicas x slots, cold start, outages, autoscaling."""

    def __init__(self, sim: "_Sim", trace: Trace) -> None:
        self.sim, self.t = sim, trace
        self.ready_at: float | None = None if trace.cloud_cold_start_s > 0 else 0.0
        self.replicas = 0 if trace.cloud_cold_start_s > 0 else 1
        self.busy = 0
        self.queue: deque = deque()
        self.inflight = 0  # requests inside the service (queued or running)
        self.scaling = 0

    def wake(self, now: float) -> float:
        """A GET /readyz; returns when the service will answer ready."""
        if self.ready_at is None:
            self.ready_at = now + self.t.cloud_cold_start_s
            self.sim.at(self.ready_at, self._first_replica)
        ready = max(now + self.t.net_rtt_s, self.ready_at)
        while self.t.outage(ready):  # /readyz fails until the outage ends
            ready = next(end for start, end in self.t.cloud_outages if start <= ready < end)
        return ready

    def _first_replica(self) -> None:
        self.replicas = max(self.replicas, 1)
        self._pump()
        if self.t.autoscale:
            self.sim.at(self.sim.now + 5.0, self._autoscale)

    def _autoscale(self) -> None:
        want = min(self.t.max_replicas, math.ceil(self.inflight / self.t.target_inflight_per_replica))
        missing = want - self.replicas - self.scaling
        for _ in range(max(0, missing)):
            self.scaling += 1
            self.sim.at(self.sim.now + self.t.replica_start_s, self._replica_up)
        if self.sim.now < self.t.duration_s:
            self.sim.at(self.sim.now + 5.0, self._autoscale)

    def _replica_up(self) -> None:
        self.scaling -= 1
        self.replicas += 1
        self._pump()

    def request(self, n: int, done: Callable[[bool], None]) -> None:
        """Send n frames in one request; ``done(ok)`` runs when the answer is back."""
        now = self.sim.now
        up = self.sim.rng.lognormvariate(*_lognorm(self.t.net_rtt_s, self.t.net_jitter_s)) / 2
        arrive = now + up
        if self.t.outage(arrive) or self.replicas == 0:
            self.sim.at(now + self.t.outage_fail_s, done, False)
            return
        self.sim.at(arrive, self._arrive, n, done, up)

    def _arrive(self, n: int, done, half_rtt: float) -> None:
        self.inflight += 1
        self.queue.append((n, done, half_rtt))
        self._pump()

    def _pump(self) -> None:
        while self.queue and self.busy < self.replicas * self.t.cloud_slots:
            n, done, half_rtt = self.queue.popleft()
            self.busy += 1
            # a GPU batch costs less than n single frames
            service = self.t.cloud_service_s * (1 + 0.5 * (n - 1))
            self.sim.at(self.sim.now + service, self._finish, done, half_rtt)

    def _finish(self, done, half_rtt: float) -> None:
        self.busy -= 1
        self.inflight -= 1
        ok = not self.t.outage(self.sim.now)
        self.sim.at(self.sim.now + half_rtt, done, ok)
        self._pump()


def _lognorm(mean: float, std: float) -> tuple[float, float]:
    sigma = math.sqrt(math.log(1 + (std / mean) ** 2)) if mean > 0 and std > 0 else 0.0
    return math.log(max(mean, 1e-9)) - sigma * sigma / 2, sigma


@dataclass
class _Frame:
    seq: int
    captured: float
    deadline: float
    warm: bool


class _Device:
    """The runner's logic on the virtual clock."""

    def __init__(self, sim: "_Sim", cloud: _Cloud, trace: Trace, policy: PolicyFn, summary: SimSummary,
                 breaker_cfg: BreakerConfig, start: float) -> None:
        self.sim, self.cloud, self.t, self.policy, self.s = sim, cloud, trace, policy, summary
        self.local_q: deque[_Frame] = deque()
        self.local_busy = 0
        self.service = Ewma(alpha=0.2)
        self.rtt = Ewma(alpha=0.2)
        self.last_rtt_at = 0.0
        self.phase = CloudState.COLD
        self.breaker = Breaker()
        self.breaker_cfg = breaker_cfg
        self.offloading = False
        self.cloud_q: deque[_Frame] = deque()
        self.requests = 0
        self.cloud_frames = 0
        self.open_frames = 0
        self.seq = itertools.count()
        sim.at(start, self._next_frame)

    # --- frames in
    def _next_frame(self) -> None:
        now = self.sim.now
        if now >= self.t.duration_s:
            return
        f = _Frame(next(self.seq), now, now + self.t.budget_s, now >= self.t.warmup_s)
        self.s.frames += 1
        self.s.frames_after_warmup += f.warm
        self.open_frames += 1
        self._route(f, now)
        self.sim.at(now + 1.0 / self.t.fps_at(now), self._next_frame)

    def _observe(self, f: _Frame, now: float) -> Observation:
        state, cap = effective_cloud(self.phase, self.breaker, now, self.t.max_inflight * self.t.max_batch)
        return Observation(
            frame_age_s=now - f.captured, local_queued=len(self.local_q), local_busy=self.local_busy,
            local_service_s=self.service.upper(1.0), cloud_state=state, cloud_rtt_s=self.rtt.upper(1.0),
            cloud_pending=self.cloud_frames, cloud_capacity=cap, offloading=self.offloading,
            budget_s=self.t.budget_s, cloud_probe_due=self.cloud_frames == 0 and (not self.rtt.count or now - self.last_rtt_at > PROBE_AFTER_S),
        )

    def _route(self, f: _Frame, now: float, fallback: bool = False) -> None:
        d = self.policy(self._observe(f, now))
        if not fallback:
            self.offloading = d.offloading
        if d.wake_cloud and self.phase is CloudState.COLD:
            self.phase = CloudState.WAKING
            self.sim.at(self.cloud.wake(now), self._woken)
        if d.route is Route.LOCAL:
            self.local_q.append(f)
            self._serve_local()
        elif d.route is Route.CLOUD:
            self.cloud_q.append(f)
            self.cloud_frames += 1
            self._send()
        else:
            self._finish(f, "dropped", None, now, d.reason)

    def _woken(self) -> None:
        self.phase = CloudState.READY
        self._send()

    # --- local worker
    def _serve_local(self) -> None:
        while self.local_busy < 1 and self.local_q:
            f = self.local_q.popleft()
            now = self.sim.now
            if now >= f.deadline:  # stale: running it would only produce a late answer
                self._finish(f, "dropped", None, now, "expired_in_queue")
                continue
            self.local_busy += 1
            mu, sigma = _lognorm(self.t.local_service_s * self.t.slow_factor(now), self.t.local_cv * self.t.local_service_s)
            dt = self.sim.rng.lognormvariate(mu, sigma)
            self.sim.at(now + dt, self._local_done, f, dt)

    def _local_done(self, f: _Frame, dt: float) -> None:
        self.local_busy -= 1
        self.service.update(dt)
        self._finish(f, "local", "local", self.sim.now)
        self._serve_local()

    # --- cloud sender
    def _send(self) -> None:
        state, cap = effective_cloud(self.phase, self.breaker, self.sim.now, self.t.max_inflight)
        while self.cloud_q and self.requests < cap:
            if state is not CloudState.READY:
                break
            batch = [self.cloud_q.popleft() for _ in range(min(self.t.max_batch, len(self.cloud_q)))]
            self.requests += 1
            sent = self.sim.now
            self.cloud.request(len(batch), lambda ok, b=batch, s=sent: self._cloud_done(b, s, ok))
        # frames stuck behind a non-ready cloud go back through the policy
        if state is not CloudState.READY:
            while self.cloud_q:
                f = self.cloud_q.popleft()
                self.cloud_frames -= 1
                self._route(f, self.sim.now, fallback=True)

    def _cloud_done(self, batch: list[_Frame], sent: float, ok: bool) -> None:
        now = self.sim.now
        self.requests -= 1
        self.cloud_frames -= len(batch)
        if ok:
            self.rtt.update(now - sent)
            self.last_rtt_at = now
            self.breaker = on_success(self.breaker)
            for f in batch:
                self._finish(f, "cloud", "cloud", now)
        else:
            self.breaker = on_failure(self.breaker, now=now, cfg=self.breaker_cfg)
            if self.breaker.state(now) == "open":
                self.sim.at(self.breaker.open_until, self._send)
            for f in batch:
                self._route(f, now, fallback=True)
        self._send()

    def _finish(self, f: _Frame, outcome: str, route: str | None, now: float, reason: str | None = None) -> None:
        self.open_frames -= 1
        if outcome != "dropped" and now > f.deadline:
            outcome = "late"
        if f.warm:
            self.s.outcomes[outcome] += 1
            if outcome == "dropped":
                self.s.drops[reason] += 1
            elif outcome != "late":
                self.s.within_budget += 1
                self.s.latencies[route].append(now - f.captured)


class _Sim:
    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._q: list = []
        self._n = itertools.count()

    def at(self, t: float, fn, *args) -> None:
        heapq.heappush(self._q, (t, next(self._n), fn, args))

    def run(self) -> None:
        while self._q:
            t, _, fn, args = heapq.heappop(self._q)
            self.now = t
            fn(*args)


def simulate_fleet(trace: Trace, *, strategy: str = "policy", devices: int = 1, policy_config: PolicyConfig | None = None,
                   breaker_config: BreakerConfig | None = None) -> SimSummary:
    """Run ``devices`` copies of the agent against one shared cloud service."""
    if devices < 1:
        raise ConfigError(f"devices must be >= 1, got {devices}")
    sim = _Sim(trace.seed)
    cloud = _Cloud(sim, trace)
    summary = SimSummary(strategy=strategy, trace=trace.name, duration_s=trace.duration_s - trace.warmup_s, devices=devices)
    policy = _make_policy(strategy, trace.budget_s, policy_config)
    fleet = [
        _Device(sim, cloud, trace, policy, summary, breaker_config or BreakerConfig(), start=sim.rng.uniform(0, 1 / trace.fps))
        for _ in range(devices)
    ]
    sim.run()
    summary.unaccounted = sum(d.open_frames for d in fleet)
    return summary


def simulate(trace: Trace, *, strategy: str = "policy", policy_config: PolicyConfig | None = None) -> SimSummary:
    """One device over ``trace`` with ``strategy`` in local / cloud / threshold / policy."""
    return simulate_fleet(trace, strategy=strategy, devices=1, policy_config=policy_config)


def compare(trace: Trace, *, devices: int = 1, policy_config: PolicyConfig | None = None) -> list[dict]:
    """One summary row per strategy, for tables."""
    return [simulate_fleet(trace, strategy=s, devices=devices, policy_config=policy_config).row() for s in STRATEGIES]
