"""What a frame becomes: its route, its final outcome, and the one record released for it.

Every frame the agent sees ends as exactly one :class:`FrameResult`, released in frame
order by :class:`edge_agent.core.DeviceCore`. The outcome says whether the frame was
answered within its budget, and by whom:

- ``local`` / ``cloud``: answered, and released to the sinks by its deadline.
- ``late``: not answered by the time it had to leave (its deadline, or the release window
  was full); it carries detections only if an answer was there but could not leave in
  time. An answer that arrives after the frame left is counted, never released twice.
- ``dropped``: never answered; ``reason`` says why (``expired_in_queue``, ``cloud_failing``,
  ``local_warming``, ``shutdown``, ...).

>>> r = FrameResult(seq=3, outcome=Outcome.LOCAL, route=Route.LOCAL, captured_at=1.0, deadline=1.5, released_at=1.2)
>>> r.within_budget, round(r.latency_s, 3)
(True, 0.2)
>>> r.to_dict()["outcome"]
'local'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

__all__ = ["Outcome", "Route", "FrameResult"]


class Route(str, Enum):
    """Where a frame is sent (or that it is not sent at all)."""

    LOCAL = "local"
    CLOUD = "cloud"
    DROP = "drop"


class Outcome(str, Enum):
    """How a frame ended; every frame ends as exactly one of these."""

    LOCAL = "local"
    CLOUD = "cloud"
    LATE = "late"
    DROPPED = "dropped"

    @property
    def within_budget(self) -> bool:
        return self in (Outcome.LOCAL, Outcome.CLOUD)


@dataclass
class FrameResult:
    """The one final record of a frame, as released to the sinks."""

    seq: int
    outcome: Outcome
    route: Route | None = None  # where it was answered, or running when it had to leave
    reason: str | None = None  # why dropped or late, or why it was routed where it went
    captured_at: float = 0.0
    deadline: float = 0.0
    released_at: float = 0.0
    answered_at: float | None = None
    detections: Any = None  # yolo_edge.Detections when answered
    meta: dict = field(default_factory=dict)
    endpoint: str | None = None  # the cloud endpoint that answered
    #: how it was uploaded when the cloud answered: {"encoding": "png"|"jpeg90", "bytes": n,
    #: "exact": the cloud saw the very pixels the local model would (lossless)}
    upload: dict | None = None
    hedged: bool = False  # it ran on both routes (a hedge): the first answer is this one
    image: Any = None  # the frame itself, kept only for sinks that want images
    wall_offset_s: float | None = None  # add to the times above for Unix time (set by the agent)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        if self.route is not None:
            self.route = Route(self.route)

    @property
    def within_budget(self) -> bool:
        return self.outcome.within_budget

    @property
    def latency_s(self) -> float:
        """Capture to release: when the result reached the sinks."""
        return self.released_at - self.captured_at

    def to_dict(self) -> dict:
        d = {
            "seq": self.seq,
            "outcome": self.outcome.value,
            "route": self.route.value if self.route is not None else None,
            "reason": self.reason,
            "captured_at": round(self.captured_at, 6),
            "latency_ms": round(1000 * self.latency_s, 3),
            "deadline_ms": round(1000 * (self.deadline - self.captured_at), 3),
        }
        if self.wall_offset_s is not None:  # wall-clock times, ISO-8601 UTC, for joining with other logs
            d["captured_wall"] = _iso(self.captured_at + self.wall_offset_s)
            d["finished_wall"] = _iso(self.released_at + self.wall_offset_s)
        if self.endpoint is not None:
            d["endpoint"] = self.endpoint
        if self.upload is not None:
            d["upload"] = dict(self.upload)
        if self.hedged:
            d["hedged"] = True
        if self.detections is not None:
            d["detections"] = self.detections.to_dict()["detections"]
        if self.meta:
            d["meta"] = self.meta
        return d


def _iso(unix_s: float) -> str:
    """``2026-11-29T23:12:01.123456Z``"""
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
