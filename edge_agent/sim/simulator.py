"""Discrete-event simulator: the device core on a virtual clock over traces.

Each simulated device is a :class:`~edge_agent.core.DeviceCore`, the very object the
threaded agent drives; this module is only its other driver. It turns the core's actions
into future events on a heap (a local frame finishes after its sampled service time, a
request comes back after its sampled network time and its turn at the endpoint), feeds
the events back, and counts the released results with the agent's own
:class:`~edge_agent.core.stats.RunStats`. No decision is made here: the endpoint pool, its
health checks and the policy all run inside the core.

Each cloud endpoint of a trace is one :class:`SimCloud` (FIFO over ``slots x replicas``,
cold start, outages that refuse, answer 503 + Retry-After or hang, a slowed or degrading
service, a wrong model, autoscaling), shared by every simulated device, so a fleet of
hundreds of devices can be run against a pool of endpoints. A frame's remaining budget
travels with its request, as on the wire: the endpoint never computes a frame whose
deadline has passed when its batch starts.

>>> from edge_agent.sim.traces import scenario
>>> s = simulate(scenario("steady", duration_s=10, warmup_s=2), strategy="policy")
>>> s.unaccounted, s.stats.dishonest
(0, 0)
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from yolo_edge.errors import ConfigError
from yolo_edge.remote.health import HealthConfig
from yolo_edge.remote.wire import FrameStatus

from ..core import CoreConfig, DeviceCore
from ..core.events import (
    Close, CloudDone, Encoded, Failure, FrameCaptured, LateAnswer, LocalDone, LocalReady, Release, RunLocal, SendBatch,
    Tick, Uploaded, Wake, WakeDone,
)
from ..core.frames import Outcome, Reason
from ..core.link import Ladder
from ..core.policy import STRATEGIES, PolicyConfig, make_policy
from ..core.pool import EndpointSpec
from ..core.stats import RunStats
from .traces import CloudTrace, Trace, TraceSample, sample
from .uplink import TraceLink, UplinkTrace, wire_bytes

__all__ = ["simulate", "simulate_fleet", "SimSummary", "SimCloud", "STRATEGIES", "core_config_for", "compare"]


def core_config_for(trace: Trace, policy_config: PolicyConfig | None = None,
                    health_config: HealthConfig | None = None) -> CoreConfig:
    """The device settings a trace runs with (the agent's defaults, the trace's budget, caps and endpoints)."""
    pcfg = replace(policy_config or PolicyConfig(), latency_budget_s=trace.budget_s, queue_budget=trace.queue_budget)
    endpoints = tuple(EndpointSpec(name=c.name, weight=c.weight, backup=c.backup) for c in trace.clouds)
    return CoreConfig(policy=pcfg, health=health_config or HealthConfig(), endpoints=endpoints,
                      local_workers=trace.local_workers, max_inflight=trace.max_inflight, max_batch=trace.max_batch)


class EventLoop:
    """A virtual clock and a heap of timed callbacks."""

    def __init__(self) -> None:
        self.now = 0.0
        self._q: list = []
        self._n = itertools.count()

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._q, (max(t, self.now), next(self._n), fn, args))

    def run(self) -> None:
        while self._q:
            t, _, fn, args = heapq.heappop(self._q)
            self.now = t
            fn(*args)


#: what a request ends as: (failure or None, Retry-After, indexes of frames answered as expired)
Done = Callable[[Failure | None, float | None, tuple[int, ...]], None]


class SimCloud:
    """One cloud endpoint, shared by every simulated device."""

    def __init__(self, loop: EventLoop, cloud: CloudTrace, *, duration_s: float, net_rtt_s: float) -> None:
        self.loop, self.c, self.duration_s, self.net_rtt_s = loop, cloud, duration_s, net_rtt_s
        self.ready_at: float | None = None if cloud.cold_start_s > 0 else 0.0
        self.replicas = 0 if cloud.cold_start_s > 0 else 1
        self.busy = 0
        self.queue: list = []
        self.queue_head = 0
        self.inflight = 0  # requests inside the service (queued or running)
        self.scaling = 0
        self.frames_served = 0
        self.frames_expired = 0  # dropped at batch start: their deadline had passed (never computed)

    # -- /readyz -----------------------------------------------------------------------------
    def wake(self, wait_s: float, done: Callable[[bool], None]) -> None:
        """Poll /readyz until ready or ``wait_s`` passes (0: once); ``done(ok)`` then."""
        now = self.loop.now
        if self.ready_at is None:
            self.ready_at = now + self.c.cold_start_s
            self.loop.at(self.ready_at, self._first_replica)
        ready = self.c.outage_end(max(now + self.net_rtt_s, self.ready_at))
        if ready <= now + max(wait_s, self.net_rtt_s):
            self.loop.at(ready, done, True)
        else:
            self.loop.at(now + max(wait_s, self.c.outage_fail_s), done, False)

    def _first_replica(self) -> None:
        self.replicas = max(self.replicas, 1)
        self._pump()
        if self.c.autoscale:
            self.loop.at(self.loop.now + 5.0, self._autoscale)

    def _autoscale(self) -> None:
        want = min(self.c.max_replicas, math.ceil(self.inflight / self.c.target_inflight_per_replica))
        for _ in range(max(0, want - self.replicas - self.scaling)):
            self.scaling += 1
            self.loop.at(self.loop.now + self.c.replica_start_s, self._replica_up)
        if self.loop.now < self.duration_s:
            self.loop.at(self.loop.now + 5.0, self._autoscale)

    def _replica_up(self) -> None:
        self.scaling -= 1
        self.replicas += 1
        self._pump()

    # -- requests ----------------------------------------------------------------------------
    def request(self, deadlines: Sequence[float], network_s: float, timeout_s: float, done: Done) -> None:
        """Send frames with these deadlines in one request; ``done`` runs when it is over."""
        now = self.loop.now
        half = network_s / 2
        arrive = now + half
        state = {"over": False}

        def finish(failure: Failure | None, retry_after: float | None = None, expired: tuple[int, ...] = ()) -> None:
            if not state["over"]:
                state["over"] = True
                done(failure, retry_after, expired)

        # the client gives up after timeout_s, whatever the service does
        self.loop.at(now + timeout_s, finish, Failure.TIMEOUT)
        if self.c.outage(arrive) or self.replicas == 0:
            if self.c.hangs and self.c.outage(arrive):
                return  # the timeout above answers
            self.loop.at(now + self.c.outage_fail_s, finish, Failure.UNAVAILABLE, self.c.outage_retry_after_s)
            return
        # the service turns each frame's remaining budget into a deadline on its own clock at
        # arrival (called once the upload has left, so the budgets are taken from then: the
        # upload has spent its part of them, as on a real service, which counts from the
        # request's first byte)
        budgets = [d - now for d in deadlines]
        self.loop.at(arrive, self._arrive, budgets, half, finish)

    def _arrive(self, budgets: list[float], half: float, finish) -> None:
        self.inflight += 1
        self.queue.append(([self.loop.now + b for b in budgets], half, finish))
        self._pump()

    def _pump(self) -> None:
        while self.queue_head < len(self.queue) and self.busy < self.replicas * self.c.slots:
            now = self.loop.now
            taken = []
            # one model batch: the next request, and (adaptive batching) those queued behind it that fit
            while self.queue_head < len(self.queue):
                deadlines, half, finish = self.queue[self.queue_head]
                if taken and sum(len(t[0]) for t in taken) + len(deadlines) > self.c.batch_frames:
                    break
                self.queue[self.queue_head] = None
                self.queue_head += 1
                taken.append((deadlines, half, finish))
            # as the service does: frames whose deadline falls before the batch could end are answered
            # expired, not computed; the fewest, earliest deadlines first
            timed = sorted((d, r, i) for r, (deadlines, _, _) in enumerate(taken) for i, d in enumerate(deadlines))
            k = 0
            while k < len(timed) and timed[k][0] <= now + self.c.batch_s(len(timed) - k, now):
                k += 1
            doomed = {(r, i) for _, r, i in timed[:k]}
            self.frames_expired += k
            batch = []
            for r, (deadlines, half, finish) in enumerate(taken):
                expired = tuple(i for i in range(len(deadlines)) if (r, i) in doomed)
                batch.append((len(deadlines) - len(expired), expired, half, finish))
            self.busy += 1
            live = len(timed) - k
            service = self.c.batch_s(live, now) if live else 0.0
            self.loop.at(now + service, self._served, batch)
        if self.queue_head > 1024 and self.queue_head * 2 > len(self.queue):
            del self.queue[:self.queue_head]
            self.queue_head = 0

    def _served(self, batch: list) -> None:
        self.busy -= 1
        for live, expired, half, finish in batch:
            self.inflight -= 1
            if self.c.outage(self.loop.now):
                if not self.c.hangs:
                    self.loop.at(self.loop.now + self.c.outage_fail_s, finish, Failure.UNAVAILABLE,
                                 self.c.outage_retry_after_s)
            elif self.c.wrong_model:
                self.loop.at(self.loop.now + half, finish, Failure.MISMATCH)
            else:
                self.frames_served += live
                self.loop.at(self.loop.now + half, finish, None, None, expired)
        self._pump()


class _DeviceCPU:
    """The local worker's core when the device's own work (capture, encoding) runs on it too.

    That work preempts inference: a local run in progress finishes later by what ran meanwhile,
    and one that starts while the core is busy starts late.
    """

    def __init__(self, loop: EventLoop, done: Callable[[int, float], None]) -> None:
        self.loop, self.done = loop, done
        self.busy_until = 0.0  # the device's own work queued on the core
        self._jobs: dict[int, list] = {}  # seq -> [token, start, end]
        self._tokens = itertools.count()

    def run(self, seq: int, service_s: float) -> None:
        now = self.loop.now
        start = max(now, self.busy_until)
        self._schedule(seq, now, start + service_s)

    def charge(self, cost_s: float) -> None:
        if cost_s <= 0:
            return
        now = self.loop.now
        if self._jobs:  # preempts the run that would end first
            seq, (_, start, end) = min(self._jobs.items(), key=lambda kv: kv[1][2])
            self._schedule(seq, start, end + cost_s)
        else:
            self.busy_until = max(now, self.busy_until) + cost_s

    def _schedule(self, seq: int, start: float, end: float) -> None:
        token = next(self._tokens)
        self._jobs[seq] = [token, start, end]
        self.loop.at(end, self._end, seq, token)

    def _end(self, seq: int, token: int) -> None:
        job = self._jobs.get(seq)
        if job is None or job[0] != token:
            return  # rescheduled
        del self._jobs[seq]
        self.done(seq, self.loop.now - job[1])

    @property
    def running(self) -> int:
        return len(self._jobs)


#: drop reasons that do not mean "no capacity" (the frame was already too old, or the run ended)
_NOT_CAPACITY = frozenset({Reason.EXPIRED, Reason.SHUTDOWN, Reason.LOCAL_WARMING, Reason.LOCAL_ERROR})


class SimDevice:
    """One device: a DeviceCore driven by the event loop and a trace sample.

    With an uplink trace, every request's bytes (each frame's real encoded size at the rung
    the core chose, plus HTTP and TCP/IP framing) queue on the device's :class:`TraceLink`;
    the core hears :class:`Encoded` (the real sizes) when the frames are encoded, the request
    reaches the endpoint when its last packet has left plus half its round trip, and the core
    hears :class:`Uploaded` when the acknowledgement is back.
    """

    def __init__(self, loop: EventLoop, clouds: Sequence[SimCloud], tsample: TraceSample, cfg: CoreConfig,
                 stats: RunStats, *, policy=None, keep_results: bool = False) -> None:
        self.loop, self.clouds, self.s, self.stats = loop, list(clouds), tsample, stats
        t = tsample.trace
        if t.ladder is not None:
            cfg = replace(cfg, ladder=Ladder.parse(t.ladder))
        if t.shared_cpu:
            cfg = replace(cfg, uploads_share_local_cpu=True)
        self.core = DeviceCore(cfg, cloud=bool(self.clouds), local_ready=t.local_warmup_s <= 0, policy=policy)
        self.link = (TraceLink(UplinkTrace.load(t.uplink), offset_s=tsample.uplink_offset_s,
                               efficiency=t.uplink_efficiency) if t.uplink else None)
        self.cpu = _DeviceCPU(loop, self._local_done)
        self._tick_at: float | None = None
        self._requests: dict[int, tuple[int, ...]] = {}
        self._idle_at_capture: set[int] = set()
        #: frames dropped for lack of capacity while a local worker sat idle (checked: 0)
        self.idle_drops = 0
        self.results: list | None = [] if keep_results else None
        for seq, captured in enumerate(tsample.captured):
            loop.at(float(captured), self._frame, seq)
        if t.local_warmup_s > 0:
            loop.at(t.local_warmup_s, self._feed, LocalReady)
        loop.at(t.duration_s, self._feed, Close)

    def _frame(self, seq: int) -> None:
        t = self.s.trace
        if self.cpu.running < t.local_workers and self.loop.now >= t.local_warmup_s:
            self._idle_at_capture.add(seq)
        if t.shared_cpu:
            self.cpu.charge(t.capture_cpu_s)
        self._do(self.core.handle(FrameCaptured(at=self.loop.now, seq=seq)))

    def _feed(self, event_type) -> None:
        self._do(self.core.handle(event_type(at=self.loop.now)))

    def _tick(self, at: float) -> None:
        if self._tick_at == at:
            self._tick_at = None
        self._do(self.core.handle(Tick(at=self.loop.now)))

    def _do(self, actions: list) -> None:
        now = self.loop.now
        for a in actions:
            if isinstance(a, RunLocal):
                self.cpu.run(a.seq, self.s.local_time(a.seq, now))
            elif isinstance(a, SendBatch):
                self._send(a)
            elif isinstance(a, Wake):
                cloud = self.clouds[a.endpoint]
                cloud.wake(a.wait_s, lambda ok, ep=a.endpoint, c=cloud: self._woken(ep, ok, c))
            elif isinstance(a, Release):
                for r in a.results:
                    self.stats.add(r)
                    if r.seq in self._idle_at_capture:
                        self._idle_at_capture.discard(r.seq)
                        if r.outcome is Outcome.DROPPED and r.reason not in _NOT_CAPACITY:
                            self.idle_drops += 1
                    if self.results is not None:
                        self.results.append(r)
            elif isinstance(a, LateAnswer):
                self.stats.add_late_answer(a.route)
        nxt = self.core.next_timer()
        if nxt is not None and (self._tick_at is None or nxt < self._tick_at):
            self._tick_at = nxt
            self.loop.at(nxt, self._tick, nxt)

    def _send(self, a: SendBatch) -> None:
        now, t = self.loop.now, self.s.trace
        self._requests[a.request] = a.seqs
        cloud = self.clouds[a.endpoint]
        net = self.s.network_time(a.seqs[0], now, cloud.c)
        # the budgets on the wire are net of the endpoint's usual network time, as the agent sends them
        deadlines = [d - a.network_s for d in a.deadlines]
        if all(d <= now for d in deadlines):
            # as the client does: no frame has any budget left to send it with, so none is uploaded
            self.loop.at(now, self._not_sent, a.request)
            return
        done = lambda failure, retry, expired, rid=a.request, net=net: self._cloud_done(  # noqa: E731
            rid, failure, retry, expired, net)
        if self.link is None:  # no link: the request only pays its round trip; its upload is instant
            self.loop.at(now, self._uploaded, a.request, ())
            cloud.request(deadlines, net, a.timeout_s, done)
            return
        # the budgets are written on the wire at send time
        encodings = a.encodings or ("png",) * len(a.seqs)
        frame_bytes = tuple(self.s.nbytes(seq, enc) for seq, enc in zip(a.seqs, encodings))
        encode_s = sum(self.s.encode_time(seq, enc) for seq, enc in zip(a.seqs, encodings))
        if t.shared_cpu:
            self.cpu.charge(encode_s)
        self.loop.at(now + encode_s, self._encoded, a.request, frame_bytes)
        left = self.link.send(now + encode_s, wire_bytes(sum(frame_bytes), len(a.seqs)))
        self.loop.at(left + net, self._uploaded, a.request, frame_bytes, net)  # the last byte's acknowledgement
        # the service counts the budgets from the request's arrival, before its body is read (as
        # bentos/guard.py does): the upload spends them, so the deadlines are not moved by it
        self.loop.at(left, lambda: cloud.request(deadlines, net, max(0.0, a.timeout_s - (left - now)), done))

    def _not_sent(self, rid: int) -> None:
        n = len(self._requests.pop(rid))
        self._do(self.core.handle(CloudDone(at=self.loop.now, request=rid, answers=[None] * n, metas=[{}] * n,
                                            frame_errors={i: FrameStatus.EXPIRED for i in range(n)}, uploaded=False)))

    def _encoded(self, rid: int, frame_bytes: tuple[int, ...]) -> None:
        self._do(self.core.handle(Encoded(at=self.loop.now, request=rid, frame_bytes=frame_bytes)))

    def _uploaded(self, rid: int, frame_bytes: tuple[int, ...], rtt_s: float | None = None) -> None:
        self._do(self.core.handle(Uploaded(at=self.loop.now, request=rid, frame_bytes=frame_bytes, rtt_s=rtt_s)))

    def _woken(self, endpoint: int, ok: bool, cloud: SimCloud) -> None:
        if ok and cloud.c.wrong_model:  # ready, but the model check after the wake fails
            ev = WakeDone(at=self.loop.now, endpoint=endpoint, ok=False, failure=Failure.MISMATCH,
                          message=f"{cloud.c.name} serves another model (trace)")
        else:
            ev = WakeDone(at=self.loop.now, endpoint=endpoint, ok=ok)
        self._do(self.core.handle(ev))

    def _local_done(self, seq: int, dt: float) -> None:
        self._do(self.core.handle(LocalDone(at=self.loop.now, seq=seq, service_s=dt, answer=None)))

    def _cloud_done(self, rid: int, failure: Failure | None, retry_after: float | None,
                    expired: tuple[int, ...], network_s: float) -> None:
        n = len(self._requests.pop(rid))
        if failure is None:
            ev = CloudDone(at=self.loop.now, request=rid, answers=[None] * n, metas=[{}] * n,
                           frame_errors={i: FrameStatus.EXPIRED for i in expired}, network_s=network_s)
        else:
            ev = CloudDone(at=self.loop.now, request=rid, failure=failure, retry_after_s=retry_after)
        self._do(self.core.handle(ev))


@dataclass
class SimSummary:
    strategy: str
    trace: str
    stats: RunStats
    devices: int = 1
    duration_s: float = 0.0
    unaccounted: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def within_share(self) -> float:
        return self.stats.within_share

    @property
    def offload_ratio(self) -> float:
        return self.stats.offload_ratio

    @property
    def throughput_fps(self) -> float:
        """Frames answered within budget per second, per device."""
        return self.stats.within_budget / self.duration_s / self.devices

    def row(self) -> dict:
        d = self.stats.as_dict()
        return {
            "trace": self.trace, "strategy": self.strategy, "devices": self.devices, "frames": self.stats.frames,
            "within_budget": round(self.within_share, 4), "throughput_fps": round(self.throughput_fps, 2),
            "offload_ratio": round(self.offload_ratio, 3), "late": d["outcomes"]["late"],
            "dropped": d["outcomes"]["dropped"], "drop_reasons": d["drops"], "late_reasons": d["late"],
            "released_after_deadline_within_budget": self.stats.dishonest, "unaccounted": self.unaccounted,
            **{k: v for k, v in d.items() if k.endswith("_ms") and k != "budget_ms"}, **self.extra,
        }


def simulate_fleet(trace: Trace, *, strategy: str = "policy", devices: int = 1,
                   policy_config: PolicyConfig | None = None, health_config: HealthConfig | None = None,
                   ) -> SimSummary:
    """Run ``devices`` copies of the device core against the trace's endpoints, shared by all."""
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices must be a whole number >= 1, got {devices!r}")
    cfg = core_config_for(trace, policy_config, health_config)
    policy = None if strategy == "policy" else make_policy(strategy, cfg.policy)  # ours: the core's own, with hedging
    loop = EventLoop()
    clouds = [SimCloud(loop, c, duration_s=trace.duration_s, net_rtt_s=trace.net_rtt_s) for c in trace.clouds]
    fleet = []
    for i in range(devices):
        stats = RunStats(budget_s=trace.budget_s, count_from=trace.warmup_s)
        fleet.append(SimDevice(loop, clouds, sample(trace, device=i), cfg, stats, policy=policy))
    loop.run()
    total = RunStats(budget_s=trace.budget_s, count_from=trace.warmup_s)
    for d in fleet:
        total.merge(d.stats)
    extra = {"endpoints": {c.c.name: {"frames_served": c.frames_served, "frames_expired": c.frames_expired}
                           for c in clouds}}
    return SimSummary(strategy=strategy, trace=trace.name, stats=total, devices=devices,
                      duration_s=trace.duration_s - trace.warmup_s, unaccounted=sum(d.core.pending for d in fleet),
                      extra=extra)


def simulate(trace: Trace, *, strategy: str = "policy", policy_config: PolicyConfig | None = None) -> SimSummary:
    """One device over ``trace`` with ``strategy`` in local / cloud / threshold / policy."""
    return simulate_fleet(trace, strategy=strategy, devices=1, policy_config=policy_config)


def compare(trace: Trace, *, devices: int = 1, policy_config: PolicyConfig | None = None) -> list[dict]:
    """One summary row per strategy, for tables."""
    return [simulate_fleet(trace, strategy=s, devices=devices, policy_config=policy_config).row() for s in STRATEGIES]
