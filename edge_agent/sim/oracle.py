"""An offline upper bound on what any routing could answer within budget, for one trace sample.

The oracle knows every arrival, every frame's local service time and network round trip,
and every outage in advance. No online policy can answer more frames within their budget
than it, so the simulator reports the policy's share *of this bound*.

The bound is exact for a relaxed device, and the relaxations only ever help the oracle:

- the local workers are one machine ``local_workers`` times as fast, the cloud's
  ``slots x replicas`` one machine that many times as fast, both preemptive (a job set
  feasible on c machines is feasible on one machine c times as fast with preemption);
- a cloud batch costs its cheapest per-frame share, and the cloud is warm from the start
  (the oracle wakes it at time 0);
- each frame's network window is widened to a monotone envelope (release: the earliest of
  its own and every later frame's; deadline: the latest of its own and every earlier one).

With constant budgets every window is then *agreeable* (a later frame is released no
earlier and due no earlier), so preemptive EDF never preempts and serving each machine's
frames in capture order is optimal (Kise, Ibaraki & Mine, 1978). A dynamic program over
frames in order, keeping the Pareto front of (frames answered, local busy-until, cloud
busy-until), then finds the best split between the two machines exactly. A state is pruned
only when another state is ahead by more frames than can still arrive before its machines
are free, which cannot lose the optimum.

>>> from edge_agent.sim.traces import scenario, sample
>>> b = oracle_bound(sample(scenario("steady", duration_s=6, warmup_s=1)))
>>> b.within_share > 0.99, b.local_only_share < b.within_share
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .traces import Trace, TraceSample, sample

__all__ = ["OracleBound", "oracle_bound", "needed_offload", "FleetBound", "fleet_bound"]

#: completion times are rounded *down* to this grid to merge near-identical states (in the
#: oracle's favour, so the bound stays a bound)
_GRID_S = 1e-4


@dataclass(frozen=True)
class OracleBound:
    frames: int  # frames counted (captured after the warm-up)
    within: int  # the most that can be answered within budget
    local_only: int  # the most the local machine alone can answer

    @property
    def within_share(self) -> float:
        return self.within / self.frames if self.frames else 1.0

    @property
    def local_only_share(self) -> float:
        return self.local_only / self.frames if self.frames else 1.0

    @property
    def min_offload(self) -> float:
        """Of the frames the oracle answers, the smallest share that must come from the cloud."""
        return (self.within - self.local_only) / self.within if self.within else 0.0


def _batch_share(trace: Trace, cloud) -> float:
    """A frame's cheapest share of a batch's service time (a batch of n costs 1 + m (n - 1) frames)."""
    n = max(trace.max_batch, cloud.batch_frames)
    return (1 + cloud.batch_marginal * (n - 1)) / n


def _all_down(clouds) -> list[tuple[float, float]]:
    """The intervals in which no endpoint can serve (cold starts and outages of them all)."""
    if not clouds:
        return [(0.0, math.inf)]
    per_cloud = [sorted(([(0.0, c.cold_start_s)] if c.cold_start_s > 0 else []) + list(c.outages)) for c in clouds]
    down = per_cloud[0]
    for other in per_cloud[1:]:
        down = [(max(a, c), min(b, e)) for a, b in down for c, e in other if max(a, c) < min(b, e)]
    return sorted(down)


def _cloud_start(t: float, dur: float, blocked: list[tuple[float, float]]) -> float:
    """Earliest start >= t of a job of length ``dur`` that overlaps no blocked interval."""
    for start, end in blocked:
        if t + dur <= start:
            break
        if t < end:
            t = end
    return t


def _floor(t: float) -> float:
    return math.floor(t / _GRID_S) * _GRID_S


def _best(sample: TraceSample, *, use_cloud: bool) -> int:
    tr = sample.trace
    r = sample.captured
    n = len(r)
    weight = r >= tr.warmup_s
    d = r + tr.budget_s
    half = sample.net_rtt / 2
    clouds = [c for c in tr.clouds if not c.wrong_model]  # an endpoint on another model answers nothing usable
    use_cloud = use_cloud and bool(clouds)
    # the endpoints as one machine as fast as all of them together (a relaxation: at every moment
    # at least as fast as the pool), blocked only while every endpoint is down
    rate = sum(c.slots * c.max_replicas / (c.service_s * _batch_share(tr, c)) for c in clouds) or 1.0
    per_frame = 1.0 / rate
    blocked = _all_down(clouds)
    # monotone envelope of the cloud windows: arrival at the cloud, and the last moment a reply
    # can leave it; the least degraded endpoint's factor at capture time (the oracle sends at once)
    degraded = any(c.degrade or c.slow for c in clouds)
    factor = np.array([min(c.degrade_factor(float(t)) for c in clouds) for t in r]) if degraded else np.ones(n)
    speed_factor = np.array([min(c.degrade_factor(float(t)) * c.slow_factor(float(t)) for c in clouds)
                             for t in r]) if degraded else np.ones(n)
    arrive = np.minimum.accumulate((r + half * factor)[::-1])[::-1]
    leave = np.maximum.accumulate(d - half * factor)
    local_from = tr.local_warmup_s
    workers = tr.local_workers
    p_min = float(np.min(sample.local_service)) / workers
    q_min = per_frame * min([1.0] + [ramp[3] for c in clouds for ramp in c.degrade] +
                            [w[2] for c in clouds for w in c.slow])

    states: list[tuple[int, float, float]] = [(0, -math.inf, -math.inf)]
    for j in range(n):
        w = int(weight[j])
        rj, dj = float(r[j]), float(d[j])
        new: list[tuple[int, float, float]] = []
        for c, cl, cc in states:
            new.append((c, cl, cc))
            start = max(rj, cl, local_from)
            fin = start + sample.local_time(j, start) / workers
            if fin <= dj:
                new.append((c + w, _floor(fin), cc))
            if use_cloud:
                dur = per_frame * float(speed_factor[j])
                start = _cloud_start(max(float(arrive[j]), cc), dur, blocked)
                fin = start + dur
                if fin <= float(leave[j]):
                    new.append((c + w, cl, _floor(fin)))
        if j + 1 < n:
            states = _prune(new, max(float(r[j + 1]), local_from), float(arrive[j + 1]), p_min, q_min)
        else:
            states = new
    return max(c for c, _, _ in states)


def _prune(states: list[tuple[int, float, float]], local_free: float, cloud_free: float, p_min: float,
           q_min: float) -> list[tuple[int, float, float]]:
    """Drop every state that another state provably matches or beats from here on.

    State A beats state B when ``count_A - count_B`` is at least the number of frames B can
    fit on each machine while A's is still busy: any continuation of B is then available to
    A, minus those frames. Busy-until times are first clamped to when the next frame could
    start at all (``local_free``, ``cloud_free``), which merges states that differ only in the past.
    """
    norm = {}
    for c, cl, cc in states:
        key = (max(cl, local_free), max(cc, cloud_free))
        if norm.get(key, -1) < c:
            norm[key] = c
    ordered = sorted(((c, cl, cc) for (cl, cc), c in norm.items()), key=lambda s: (-s[0], s[1], s[2]))
    kept: list[tuple[int, float, float]] = []
    for c, cl, cc in ordered:
        for ka, la, ca in kept:
            gain = (math.ceil((la - cl) / p_min - 1e-9) if la > cl else 0) + \
                   (math.ceil((ca - cc) / q_min - 1e-9) if ca > cc else 0)
            if ka - c >= gain:
                break
        else:
            kept.append((c, cl, cc))
    return kept


def _best_over_link(sample: TraceSample) -> int:
    """The bound with the uplink as a third machine: the device's uploads queue on it in bytes.

    Relaxed like the rest: every cloud frame goes at the ladder's floor (the smallest encoding
    the device may use), its upload starts the moment it is captured (no encoding time), and
    the endpoint answers it in its bare service time, never queueing. The link is the trace's
    own FIFO of 1500-byte opportunities, its upload windows widened to a monotone envelope, so
    uploading in capture order is optimal and the same dynamic program finds the best split.
    """
    from ..core.link import Ladder
    from .uplink import PACKET_BYTES, UplinkTrace, wire_bytes

    tr = sample.trace
    link = UplinkTrace.load(tr.uplink)
    off = sample.uplink_offset_s
    r = sample.captured
    n = len(r)
    weight = r >= tr.warmup_s
    d = r + tr.budget_s
    clouds = [c for c in tr.clouds if not c.wrong_model]
    if not clouds:
        return _best(sample, use_cloud=False)
    floor = Ladder.parse(tr.ladder).floor.name
    per_packet = PACKET_BYTES * tr.uplink_efficiency
    packets = np.array([math.ceil(wire_bytes(sample.nbytes(j, floor)) / per_packet) for j in range(n)])
    service = min(c.service_s * _batch_share(tr, c) for c in clouds)
    # the last moment each upload may end for its answer to be back in time; a monotone envelope
    upload_due = np.maximum.accumulate(d - sample.net_rtt - service)
    first_free = np.array([link.packets_before(float(t) + off) for t in r])
    local_from = tr.local_warmup_s
    workers = tr.local_workers
    p_min = float(np.min(sample.local_service)) / workers
    k_min = int(np.min(packets))

    states: list[tuple[int, float, float]] = [(0, -math.inf, -1)]
    for j in range(n):
        w = int(weight[j])
        rj, dj = float(r[j]), float(d[j])
        new: list[tuple[int, float, float]] = []
        for c, cl, ci in states:
            new.append((c, cl, ci))
            start = max(rj, cl, local_from)
            fin = start + sample.local_time(j, start) / workers
            if fin <= dj:
                new.append((c + w, _floor(fin), ci))
            last = max(int(ci), int(first_free[j])) + int(packets[j]) - 1
            if link.opportunity_time(last) - off <= float(upload_due[j]):
                new.append((c + w, cl, last + 1))
        if j + 1 < n:
            states = _prune(new, max(float(r[j + 1]), local_from), int(first_free[j + 1]), p_min, k_min)
        else:
            states = new
    return max(c for c, _, _ in states)


def oracle_bound(sample: TraceSample) -> OracleBound:
    """The offline bound for one device's sample of a trace.

    With an uplink trace it is the tighter of two valid bounds: the endpoints' capacity with
    an uplink of no cost, and the uplink's capacity with endpoints of no queueing.
    """
    frames = int(np.sum(sample.captured >= sample.trace.warmup_s))
    within = _best(sample, use_cloud=True)
    if sample.trace.uplink is not None:
        within = min(within, _best_over_link(sample))
    return OracleBound(frames=frames, within=within, local_only=_best(sample, use_cloud=False))


def needed_offload(sample: TraceSample) -> float:
    """The share of a trace's counted frames that local capacity cannot take, moment by moment.

    A frame captured when the frame rate exceeds what the local workers sustain (their mean
    service time, the slow factor, nothing before the local backend is ready) is overflow:
    any routing that answers it must send it to the cloud. This is the floor against which
    the policy's offload ratio is judged.
    """
    tr = sample.trace
    counted = sample.captured[sample.captured >= tr.warmup_s]
    if not len(counted):
        return 0.0
    overflow = 0.0
    for t in counted:
        t = float(t)
        local = 0.0 if t < tr.local_warmup_s else tr.local_workers / (tr.local_service_s * tr.slow_factor(t))
        overflow += max(0.0, 1.0 - local / tr.fps_at(t))
    return overflow / len(counted)


@dataclass(frozen=True)
class FleetBound:
    frames: int  # frames counted over the whole fleet
    within: int  # an upper bound on what the fleet can answer within budget
    local_only: int  # what the devices' own machines can answer, at most
    cloud_capacity: int  # frames the endpoints can serve in the counted time, at most

    @property
    def within_share(self) -> float:
        return self.within / self.frames if self.frames else 1.0


def fleet_bound(trace: Trace, devices: int) -> FleetBound:
    """An upper bound for ``devices`` devices sharing the trace's endpoints.

    Every device answers at most what its own machine can alone (the exact single-machine
    optimum, as in :func:`oracle_bound`) plus its share of what the endpoints can serve; the
    endpoints serve at most their total rate (a batch frame at its cheapest share) over the
    time each is up and on the right model, from the warm-up to the last deadline.
    """
    local = frames = 0
    for i in range(devices):
        s = sample(trace, device=i)
        frames += int(np.sum(s.captured >= trace.warmup_s))
        local += _best(s, use_cloud=False)
    start, end = trace.warmup_s, trace.duration_s + trace.budget_s
    cloud = 0.0
    for c in trace.clouds:
        if c.wrong_model:
            continue
        down = sorted(([(0.0, c.cold_start_s)] if c.cold_start_s > 0 else []) + list(c.outages))
        up = end - start - sum(max(0.0, min(b, end) - max(a, start)) for a, b in _merge(down))
        per_frame = c.service_s * _batch_share(trace, c)
        cloud += c.slots * c.max_replicas * max(0.0, up) / per_frame
    return FleetBound(frames, min(frames, local + int(cloud)), local, int(cloud))


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
