"""In-order release of frame results through a bounded window (pure: ``now`` is passed in).

Every admitted frame is registered with its deadline. Results may arrive in any order;
they leave strictly in frame order. A frame whose result has not arrived ``grace_s``
after its deadline, or that holds up more than ``window`` frames behind it, leaves as
``dropped`` with reason ``no_result``; a result arriving for it afterwards is refused
(``put`` returns False) so no frame is ever counted twice.

>>> rb = ReorderBuffer(window=8, grace_s=1.0)
>>> for seq in (0, 1):
...     rb.expect(seq, deadline=0.5)
>>> rb.put(FrameResult(seq=1, outcome="local", route="local", finished_at=0.2))
True
>>> [r.seq for r in rb.pop_ready(now=0.2)]
[]
>>> rb.put(FrameResult(seq=0, outcome="cloud", route="cloud", finished_at=0.3))
True
>>> [r.seq for r in rb.pop_ready(now=0.3)]
[0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from yolo_edge.errors import ConfigError

__all__ = ["FrameResult", "ReorderBuffer", "OUTCOMES", "classify"]

#: every frame ends as exactly one of these
OUTCOMES = ("local", "cloud", "late", "dropped")


@dataclass
class FrameResult:
    """The one final record of a frame."""

    seq: int
    outcome: str  # one of OUTCOMES
    route: str | None = None  # "local" / "cloud" for answered frames (late ones too)
    reason: str | None = None  # why dropped, or why routed where it went
    captured_at: float = 0.0
    deadline: float = 0.0
    finished_at: float = 0.0
    detections: Any = None  # yolo_edge.Detections when answered
    meta: dict = field(default_factory=dict)
    image: Any = None  # the frame itself, kept only when annotated output is on
    wall_offset_s: float | None = None  # add to captured_at/finished_at for Unix time (set by the agent)

    @property
    def latency_s(self) -> float:
        return self.finished_at - self.captured_at

    def to_dict(self) -> dict:
        d = {
            "seq": self.seq,
            "outcome": self.outcome,
            "route": self.route,
            "reason": self.reason,
            "captured_at": round(self.captured_at, 6),
            "latency_ms": round(1000 * self.latency_s, 3),
            "deadline_ms": round(1000 * (self.deadline - self.captured_at), 3),
        }
        if self.wall_offset_s is not None:  # wall-clock times, ISO-8601 UTC, for joining with other logs
            d["captured_wall"] = _iso(self.captured_at + self.wall_offset_s)
            d["finished_wall"] = _iso(self.finished_at + self.wall_offset_s)
        if self.detections is not None:
            d["detections"] = self.detections.to_dict()["detections"]
        if self.meta:
            d["meta"] = self.meta
        return d


def _iso(unix_s: float) -> str:
    """``2026-11-29T23:12:01.123456Z``"""
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def classify(route: str, finished_at: float, deadline: float) -> str:
    """``route`` when the answer made its deadline, else ``"late"``."""
    return route if finished_at <= deadline else "late"


class ReorderBuffer:
    """Not thread-safe: the runner calls it under its own lock."""

    def __init__(self, *, window: int = 256, grace_s: float = 1.0) -> None:
        if window < 1 or grace_s < 0:
            raise ConfigError(f"reorder window must be >= 1 and grace_s >= 0, got {window}, {grace_s}")
        self.window = window
        self.grace_s = grace_s
        self._deadlines: dict[int, tuple[float, float]] = {}
        self._results: dict[int, FrameResult] = {}
        self._next: int | None = None
        self.refused = 0

    def expect(self, seq: int, deadline: float, captured_at: float = 0.0) -> None:
        if self._next is None:
            self._next = seq
        if seq < self._next or seq in self._deadlines:
            raise ConfigError(f"frame {seq} registered twice or out of order (next expected {self._next})")
        self._deadlines[seq] = (deadline, captured_at)

    def put(self, result: FrameResult) -> bool:
        """Hand in a frame's final record; False if that frame was already released."""
        if result.seq not in self._deadlines or result.seq in self._results:
            self.refused += 1
            return False
        self._results[result.seq] = result
        return True

    @property
    def pending(self) -> int:
        return len(self._deadlines)

    def pop_ready(self, now: float, *, flush: bool = False) -> list[FrameResult]:
        """Results that can leave now, in frame order. ``flush`` releases everything."""
        out: list[FrameResult] = []
        while self._deadlines:
            seq = min(self._deadlines) if self._next not in self._deadlines else self._next
            deadline, captured = self._deadlines[seq]
            res = self._results.pop(seq, None)
            if res is None:
                overdue = now > deadline + self.grace_s or len(self._deadlines) > self.window
                if not (overdue or flush):
                    break
                res = FrameResult(seq=seq, outcome="dropped", reason="no_result", captured_at=captured,
                                  deadline=deadline, finished_at=now)
            del self._deadlines[seq]
            self._next = seq + 1
            out.append(res)
        return out
