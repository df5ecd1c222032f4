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

Every reason is a :class:`Reason`: why a frame went where it went, was dropped, or left late.
They are ``str``-valued (``str(Reason.CLOUD_WAKING) == "cloud_waking"``), so the summary, the
JSON Lines and the ``/metrics`` labels carry the plain labels.

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

__all__ = ["Outcome", "Route", "Reason", "FrameResult"]


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


class Reason(str, Enum):
    """Why a frame was routed where it went, dropped, or left late: a short, bounded label, safe
    as a Prometheus label value. Formats as its value (like ``enum.StrEnum``, new in 3.11)."""

    # -- routed: the policy's reasons for a route (:func:`edge_agent.core.policy.decide`, the baselines)
    LOCAL_FITS = "local_fits"  # the local estimate fits the remaining budget
    LOCAL_ONLY = "local_only"  # the local baseline
    LOCAL_IDLE = "local_idle"  # an idle worker takes it whatever its estimate says
    LOCAL_OVER_BUDGET = "local_over_budget"  # to the cloud: local would not make it
    LOCAL_QUEUE_FULL = "local_queue_full"  # to the cloud: the local queue is full
    CLOUD_ONLY = "cloud_only"  # the cloud baseline
    CLOUD_CHANCE = "cloud_chance"  # to the cloud as a last chance
    BELOW_THRESHOLD = "below_threshold"  # the threshold baseline
    ABOVE_THRESHOLD = "above_threshold"
    #: local anyway, because the cloud could not take it (``fallback_`` + the cloud's reason)
    FALLBACK_CLOUD_COLD = "fallback_cloud_cold"
    FALLBACK_CLOUD_WAKING = "fallback_cloud_waking"
    FALLBACK_CLOUD_FAILING = "fallback_cloud_failing"
    FALLBACK_CLOUD_DISABLED = "fallback_cloud_disabled"
    FALLBACK_CLOUD_BUSY = "fallback_cloud_busy"
    FALLBACK_CLOUD_TOO_SLOW = "fallback_cloud_too_slow"
    FALLBACK_UPLINK_TOO_SLOW = "fallback_uplink_too_slow"

    # -- why the cloud cannot take a frame (then a drop reason, if local cannot either)
    NO_CLOUD = "no_cloud"
    CLOUD_NONE = "cloud_none"  # the threshold baseline's name for a device with no cloud
    CLOUD_COLD = "cloud_cold"
    CLOUD_WAKING = "cloud_waking"
    CLOUD_FAILING = "cloud_failing"
    CLOUD_DISABLED = "cloud_disabled"
    CLOUD_BUSY = "cloud_busy"
    CLOUD_TOO_SLOW = "cloud_too_slow"
    UPLINK_TOO_SLOW = "uplink_too_slow"

    # -- dropped
    EXPIRED = "expired"  # too old when it came (or when routed)
    LOCAL_BUSY = "local_busy"
    LOCAL_WARMING = "local_warming"  # the local backend is still loading
    LOCAL_ERROR = "local_error"  # its local run failed
    EXPIRED_IN_QUEUE = "expired_in_queue"  # its deadline came in the local queue
    EXPIRED_IN_CLOUD_QUEUE = "expired_in_cloud_queue"  # ... in the cloud queue
    EXPIRED_AT_ENDPOINT = "expired_at_endpoint"  # the endpoint answered it expired
    CLOUD_FRAME_ERROR = "cloud_frame_error"  # the endpoint answered it with an error
    STALE_SOURCE = "stale_source"  # a live source overran: the frame was skipped

    # -- late (running or answered when it had to leave), or dropped (never started)
    DEADLINE = "deadline"  # its deadline came
    HELD_ORDER = "held_order"  # a later frame's deadline came first
    WINDOW_FULL = "window_full"  # the release window was full
    RELEASED_LATE = "released_late"  # answered in time, released after its deadline
    SHUTDOWN = "shutdown"  # the agent closed

    UNKNOWN = "unknown"  # a result that carries no reason (counted as such)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class FrameResult:
    """The one final record of a frame, as released to the sinks."""

    seq: int
    outcome: Outcome
    route: Route | None = None  # where it was answered, or running when it had to leave
    reason: Reason | None = None  # why dropped or late, or why it was routed where it went
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
        if self.reason is not None:
            self.reason = Reason(self.reason)
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
            "reason": self.reason.value if self.reason is not None else None,
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
