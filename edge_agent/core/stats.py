"""Run statistics and the one-screen summary, fed the released FrameResults (pure).

The agent and the simulator both count with this class, so "within budget" and the
offload ratio mean the same thing everywhere:

- within budget: released to the sinks by its deadline with an answer (``local``/``cloud``).
- offload ratio: of the frames the device ran somewhere (answered or late), the share it
  sent to the cloud.

>>> from edge_agent.core.frames import FrameResult, Outcome, Reason, Route
>>> s = RunStats(budget_s=0.5)
>>> s.add(FrameResult(seq=0, outcome=Outcome.LOCAL, route=Route.LOCAL, released_at=0.1))
>>> s.add(FrameResult(seq=1, outcome=Outcome.DROPPED, reason=Reason.EXPIRED))
>>> s.frames, s.outcomes[Outcome.LOCAL], s.drops["expired"]
(2, 1, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .delivery import Delivery, SinkReport
from .frames import FrameResult, Outcome, Reason, Route

__all__ = ["RunStats", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, int(math.ceil(q / 100 * len(xs))) - 1))]


@dataclass
class RunStats:
    budget_s: float
    #: frames captured before this time are not counted (the simulator's warm-up)
    count_from: float = -math.inf
    frames: int = 0
    outcomes: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    late_reasons: Counter = field(default_factory=Counter)
    routed: Counter = field(default_factory=Counter)  # frames run locally / in the cloud (answered or late)
    latencies: dict = field(default_factory=lambda: {Route.LOCAL: [], Route.CLOUD: []})
    late_answers: Counter = field(default_factory=Counter)  # answers that came after their frame left
    by_endpoint: Counter = field(default_factory=Counter)  # frames answered within budget, per cloud endpoint
    upload_frames: Counter = field(default_factory=Counter)  # frames uploaded, by encoding (png, jpeg90, ...)
    upload_bytes: Counter = field(default_factory=Counter)  # their encoded bytes, by encoding
    hedged: int = 0  # frames run both in the cloud and locally (the first answer released)
    #: the uplink as the device measured it (goodput_bps, sent_bytes, uploads, busy_s), set at close
    uplink: dict | None = None
    #: released after the deadline while counted within budget: 0 by construction, counted to prove it
    dishonest: int = 0
    first_at: float | None = None
    last_at: float | None = None
    seqs_in_order: bool = True
    _last_seq: int = -1
    sinks: list[SinkReport] = field(default_factory=list)  # set when the agent closes its sinks

    def add(self, r: FrameResult) -> None:
        if r.seq <= self._last_seq:
            self.seqs_in_order = False
        self._last_seq = r.seq
        if r.captured_at < self.count_from:
            return
        self.frames += 1
        self.outcomes[r.outcome] += 1
        if r.upload:
            self.upload_frames[r.upload["encoding"]] += 1
            self.upload_bytes[r.upload["encoding"]] += r.upload["bytes"] or 0
        self.hedged += bool(r.hedged)
        if r.outcome is Outcome.DROPPED:
            self.drops[r.reason or Reason.UNKNOWN] += 1
        else:
            if r.route is not None:
                self.routed[r.route] += 1
            if r.outcome is Outcome.LATE:
                self.late_reasons[r.reason or Reason.UNKNOWN] += 1
            elif r.route is not None:
                self.latencies[r.route].append(r.latency_s)
                if r.endpoint is not None:
                    self.by_endpoint[r.endpoint] += 1
                if r.released_at > r.deadline:
                    self.dishonest += 1
        self.first_at = r.captured_at if self.first_at is None else min(self.first_at, r.captured_at)
        self.last_at = r.released_at if self.last_at is None else max(self.last_at, r.released_at)

    def add_late_answer(self, route: Route) -> None:
        self.late_answers[route] += 1

    def merge(self, other: "RunStats") -> None:
        """Add another device's counts (a fleet's summary); order is per device."""
        self.frames += other.frames
        for mine, theirs in ((self.outcomes, other.outcomes), (self.drops, other.drops),
                             (self.late_reasons, other.late_reasons), (self.routed, other.routed),
                             (self.late_answers, other.late_answers), (self.by_endpoint, other.by_endpoint),
                             (self.upload_frames, other.upload_frames), (self.upload_bytes, other.upload_bytes)):
            mine.update(theirs)
        for route, xs in other.latencies.items():
            self.latencies[route].extend(xs)
        self.dishonest += other.dishonest
        self.hedged += other.hedged
        self.seqs_in_order &= other.seqs_in_order
        for attr, pick in (("first_at", min), ("last_at", max)):
            a, b = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, b if a is None else a if b is None else pick(a, b))

    @property
    def answered(self) -> int:
        return self.outcomes[Outcome.LOCAL] + self.outcomes[Outcome.CLOUD]

    @property
    def within_budget(self) -> int:
        return self.answered

    @property
    def within_share(self) -> float:
        return self.within_budget / self.frames if self.frames else 1.0

    @property
    def offload_ratio(self) -> float:
        ran = self.routed[Route.LOCAL] + self.routed[Route.CLOUD]
        return self.routed[Route.CLOUD] / ran if ran else 0.0

    @property
    def wall_s(self) -> float:
        return (self.last_at - self.first_at) if self.first_at is not None and self.last_at is not None else 0.0

    def as_dict(self) -> dict:
        out = {
            "frames": self.frames, "outcomes": {o.value: self.outcomes[o] for o in Outcome},
            "drops": dict(self.drops), "late": dict(self.late_reasons),
            "within_budget_share": round(self.within_share, 4) if self.frames else None,
            "offload_ratio": round(self.offload_ratio, 4),
            "throughput_fps": round(self.within_budget / self.wall_s, 2) if self.wall_s else None,
            "late_answers": {r.value: n for r, n in self.late_answers.items()},
            "by_endpoint": dict(self.by_endpoint),
            "uploads": {enc: {"frames": n, "bytes": self.upload_bytes[enc]} for enc, n in sorted(self.upload_frames.items())},
            "hedged": self.hedged, "uplink": self.uplink,
            "released_after_deadline_within_budget": self.dishonest,
            "in_order": self.seqs_in_order, "budget_ms": round(1000 * self.budget_s, 1),
            "sinks": [r.as_dict() for r in self.sinks], "delivery": Delivery.of(self.sinks).value,
        }
        for route, xs in self.latencies.items():
            for q in (50, 99):
                v = percentile(xs, q)
                out[f"{route.value}_p{q}_ms"] = None if v is None else round(1000 * v, 1)
        return out

    def render(self) -> str:
        """The summary printed at exit."""
        d = self.as_dict()
        lines = [f"frames {self.frames}  budget {d['budget_ms']:.0f} ms  in-budget throughput {d['throughput_fps']} fps  "
                 f"offload ratio {d['offload_ratio']:.1%}"]
        for outcome in Outcome:
            n = self.outcomes[outcome]
            share = n / self.frames if self.frames else 0.0
            lines.append(f"  {outcome.value:<8} {n:>7}  {share:6.1%}")
            details = self.drops if outcome is Outcome.DROPPED else self.late_reasons if outcome is Outcome.LATE else {}
            for reason, k in Counter(details).most_common():
                lines.append(f"    {outcome.value}[{reason}] {k}")
        for route in (Route.LOCAL, Route.CLOUD):
            p50, p99 = d[f"{route.value}_p50_ms"], d[f"{route.value}_p99_ms"]
            if p50 is not None:
                lines.append(f"  {route.value:<6} latency p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (released by the deadline)")
        if len(self.by_endpoint) > 1:
            lines.append("  cloud answers by endpoint: " + ", ".join(f"{name} {n}" for name, n in
                                                                     sorted(self.by_endpoint.items())))
        if self.upload_frames:
            lines.append("  uploads: " + ", ".join(f"{enc} {n} frames {self.upload_bytes[enc] / 1e6:.1f} MB"
                                                  for enc, n in sorted(self.upload_frames.items())))
        if self.uplink and self.uplink.get("goodput_bps"):
            lines.append(f"  uplink: {self.uplink['goodput_bps'] / 1e6:.2f} Mbit/s measured, busy "
                         f"{self.uplink['busy_s']:.1f} s, {self.uplink['sent_bytes'] / 1e6:.1f} MB sent")
        if self.hedged:
            lines.append(f"  hedged (run in the cloud and locally, first answer released): {self.hedged}")
        if self.late_answers:
            lines.append("  answers after their frame left: " +
                         ", ".join(f"{r.value} {n}" for r, n in self.late_answers.items()))
        if self.frames:
            lines.append(f"  within budget: {self.within_share:.1%} of all frames; "
                         f"order {'preserved' if self.seqs_in_order else 'BROKEN'}")
        lines += [r.render() for r in self.sinks]
        return "\n".join(lines)
