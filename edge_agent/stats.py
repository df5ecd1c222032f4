"""Run statistics and the one-screen summary (pure: fed FrameResults).

>>> from edge_agent.reorder import FrameResult
>>> s = RunStats(budget_s=0.5)
>>> s.add(FrameResult(seq=0, outcome="local", route="local", finished_at=0.1))
>>> s.add(FrameResult(seq=1, outcome="dropped", reason="expired"))
>>> s.frames, s.outcomes["local"], s.drops["expired"]
(2, 1, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .delivery import Delivery, SinkReport
from .reorder import FrameResult

__all__ = ["RunStats", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, int(math.ceil(q / 100 * len(xs))) - 1))]


@dataclass
class RunStats:
    budget_s: float
    frames: int = 0
    outcomes: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    latencies: dict = field(default_factory=lambda: {"local": [], "cloud": []})
    late_by_route: Counter = field(default_factory=Counter)
    first_at: float | None = None
    last_at: float | None = None
    seqs_in_order: bool = True
    _last_seq: int = -1
    sinks: list[SinkReport] = field(default_factory=list)  # set when the agent closes its sinks

    def add(self, r: FrameResult) -> None:
        self.frames += 1
        self.outcomes[r.outcome] += 1
        if r.seq <= self._last_seq:
            self.seqs_in_order = False
        self._last_seq = r.seq
        if r.outcome == "dropped":
            self.drops[r.reason or "unknown"] += 1
        elif r.route in self.latencies:
            self.latencies[r.route].append(r.latency_s)
            if r.outcome == "late":
                self.late_by_route[r.route] += 1
        self.first_at = r.captured_at if self.first_at is None else min(self.first_at, r.captured_at)
        self.last_at = r.finished_at if self.last_at is None else max(self.last_at, r.finished_at)

    @property
    def answered(self) -> int:
        return self.outcomes["local"] + self.outcomes["cloud"] + self.outcomes["late"]

    @property
    def within_budget(self) -> int:
        return self.outcomes["local"] + self.outcomes["cloud"]

    @property
    def offload_ratio(self) -> float:
        sent = self.outcomes["cloud"] + self.late_by_route["cloud"]
        return sent / self.answered if self.answered else 0.0

    @property
    def wall_s(self) -> float:
        return (self.last_at - self.first_at) if self.first_at is not None and self.last_at is not None else 0.0

    def as_dict(self) -> dict:
        out = {
            "frames": self.frames, "outcomes": dict(self.outcomes), "drops": dict(self.drops),
            "within_budget_share": round(self.within_budget / self.frames, 4) if self.frames else None,
            "answered_within_budget_share": round(self.within_budget / self.answered, 4) if self.answered else None,
            "offload_ratio": round(self.offload_ratio, 4),
            "throughput_fps": round(self.answered / self.wall_s, 2) if self.wall_s else None,
            "in_order": self.seqs_in_order, "budget_ms": round(1000 * self.budget_s, 1),
            "sinks": [r.as_dict() for r in self.sinks], "delivery": Delivery.of(self.sinks).value,
        }
        for route, xs in self.latencies.items():
            for q in (50, 99):
                v = percentile(xs, q)
                out[f"{route}_p{q}_ms"] = None if v is None else round(1000 * v, 1)
        return out

    def render(self) -> str:
        """The summary printed at exit."""
        d = self.as_dict()
        lines = [f"frames {self.frames}  budget {d['budget_ms']:.0f} ms  throughput {d['throughput_fps']} fps  "
                 f"offload ratio {d['offload_ratio']:.1%}"]
        for outcome in ("local", "cloud", "late", "dropped"):
            n = self.outcomes[outcome]
            share = n / self.frames if self.frames else 0.0
            lines.append(f"  {outcome:<8} {n:>7}  {share:6.1%}")
        for reason, n in self.drops.most_common():
            lines.append(f"    dropped[{reason}] {n}")
        for route in ("local", "cloud"):
            p50, p99 = d[f"{route}_p50_ms"], d[f"{route}_p99_ms"]
            if p50 is not None:
                ok = "within" if p99 <= d["budget_ms"] else "OVER"
                lines.append(f"  {route:<6} latency p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({ok} budget)")
        if self.frames:
            lines.append(f"  within budget: {self.within_budget / self.frames:.1%} of all frames, "
                         f"{(self.within_budget / self.answered if self.answered else 0):.1%} of answered; "
                         f"order {'preserved' if self.seqs_in_order else 'BROKEN'}")
        lines += [r.render() for r in self.sinks]
        return "\n".join(lines)
