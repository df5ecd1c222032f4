"""What the device core is told (events) and what it answers (actions): plain values.

Every event carries ``at``, the driver's clock when it happened. The core never reads a
clock: time only moves forward through these events.

>>> FrameCaptured(at=1.5, seq=0)
FrameCaptured(at=1.5, seq=0, captured_at=None, budget_s=None)

:func:`check` refuses an event the core could not apply (a frame out of its turn, a budget that
is no number of seconds, an endpoint the core does not have) before the core changes anything:

>>> check(FrameCaptured(at=1.5, seq=3), next_seq=2, endpoints=0)
Traceback (most recent call last):
...
yolo_edge.errors.ConfigError: frames must be numbered 0, 1, 2, ... in capture order: expected 2, got 3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Sequence, Union

from yolo_edge.errors import ConfigError
from yolo_edge.remote.wire import FrameStatus

from .frames import FrameResult, Reason, Route

__all__ = [
    "Failure", "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "Encoded", "Uploaded", "CloudDone",
    "WakeDone", "Tick", "Close", "Flush", "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
    "EVENTS", "check",
]


class Failure(str, Enum):
    """Why a cloud request or a wake did not answer."""

    UNAVAILABLE = "unavailable"  # refused, 429/502/503/504: not now
    TIMEOUT = "timeout"
    MISMATCH = "model_mismatch"  # the endpoint serves another model: never use it
    ERROR = "error"  # anything else from the transport or the service


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameCaptured:
    """A frame arrived; ``seq`` numbers frames 0, 1, 2, ... in capture order."""

    at: float
    seq: int
    captured_at: float | None = None  # default: ``at``
    budget_s: float | None = None  # per-frame override of the latency budget


@dataclass(frozen=True)
class FrameSkipped:
    """The source could not deliver this frame (a live stream overran); it is accounted for."""

    at: float
    seq: int
    reason: Reason
    captured_at: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "reason", Reason(self.reason))
        except ValueError:
            raise ConfigError(f"FrameSkipped.reason is {self.reason!r}: a skipped frame's reason is a Reason, "
                              f"e.g. Reason.STALE_SOURCE") from None


@dataclass(frozen=True)
class LocalReady:
    """The local backend finished loading (or failed to: ``ok=False``)."""

    at: float
    ok: bool = True
    error: str | None = None


@dataclass(frozen=True)
class LocalDone:
    at: float
    seq: int
    service_s: float
    answer: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Encoded:
    """The frames of request ``request`` are encoded and their upload starts: ``frame_bytes`` is
    each frame's encoded size, in the order of the request's frames (0 for a frame that was not
    encoded: its budget ran out first).

    Optional, like :class:`Uploaded`: the core plans a request's time on the uplink with the
    sizes it expects (recent frames at the same encoding) until it hears the real ones, and a
    scene that changes makes the next frames larger or smaller than the last.
    """

    at: float
    request: int
    frame_bytes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Uploaded:
    """The body of request ``request`` has left the device: every byte of it acknowledged.

    ``frame_bytes`` is each frame's encoded size, in the order of the request's frames. A
    driver that cannot tell when an upload left may skip this event; the core then learns
    nothing about the uplink from that request.
    """

    at: float
    request: int
    frame_bytes: tuple[int, ...] = ()
    #: the connection's round trip (e.g. TCP's smallest measured one), if the driver knows it:
    #: the part of the wait for the acknowledgement that was not the uplink carrying bytes
    rtt_s: float | None = None


@dataclass(frozen=True)
class CloudDone:
    """The answer of one request: ``answers``/``metas`` in the order of its frames, or a failure.

    ``frame_errors`` maps the index of a frame the endpoint answered without detections to
    its status on the wire: ``FrameStatus.EXPIRED`` (its deadline passed before its batch
    started: not computed) or ``FrameStatus.ERROR``; the other frames of the request are
    answered normally. (The strings ``"expired"``/``"error"`` are taken too.)
    """

    at: float
    request: int
    answers: Sequence[Any] | None = None
    metas: Sequence[dict] | None = None
    failure: Failure | None = None
    retry_after_s: float | None = None
    message: str = ""
    frame_errors: Mapping[int, FrameStatus] = field(default_factory=dict)
    #: the request's time on the network (its round trip less the endpoint's own time), when the
    #: endpoint says how long it took; the device sends budgets net of it
    network_s: float | None = None
    #: False when nothing of the request was uploaded: the client answered its frames expired
    #: because their budgets ran out before they could be sent (not the endpoint's answer);
    #: None when the driver cannot tell
    uploaded: bool | None = None

    def __post_init__(self) -> None:
        statuses = {}
        for i, why in self.frame_errors.items():
            try:
                status = FrameStatus(why)
            except ValueError:
                status = None
            if status not in (FrameStatus.EXPIRED, FrameStatus.ERROR):
                raise ConfigError(f"CloudDone.frame_errors[{i}] is {why!r}: a frame answered without detections is "
                                  f"FrameStatus.EXPIRED or FrameStatus.ERROR")
            statuses[i] = status
        object.__setattr__(self, "frame_errors", statuses)
        if self.uploaded is False and (self.failure is not None or len(statuses) != len(self.answers or ())
                                       or any(s is not FrameStatus.EXPIRED for s in statuses.values())):
            raise ConfigError("CloudDone(uploaded=False) answers every frame of its request FrameStatus.EXPIRED "
                              "(not sent: its budget ran out first), with no failure")


@dataclass(frozen=True)
class WakeDone:
    at: float
    endpoint: int = 0
    ok: bool = True
    failure: Failure | None = None
    message: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed: deliver at (or after) :meth:`edge_agent.core.DeviceCore.next_timer`."""

    at: float


@dataclass(frozen=True)
class Close:
    """Stop taking frames; what is pending resolves by its deadline."""

    at: float


@dataclass(frozen=True)
class Flush:
    """Give up on everything still pending, now (the driver's drain time ran out)."""

    at: float


Event = Union[FrameCaptured, FrameSkipped, LocalReady, LocalDone, Encoded, Uploaded, CloudDone, WakeDone, Tick, Close,
              Flush]
EVENTS = (FrameCaptured, FrameSkipped, LocalReady, LocalDone, Encoded, Uploaded, CloudDone, WakeDone, Tick, Close,
          Flush)


def check(event: Event, *, next_seq: int, endpoints: int) -> None:
    """Raise a ConfigError for an event that a core expecting frame ``next_seq``, with
    ``endpoints`` cloud endpoints, cannot apply. (Whether a request event names a request the
    core sent is the dispatcher's to check: :meth:`edge_agent.core.dispatch.CloudDispatch.check`.)"""
    if not isinstance(event, EVENTS):
        raise ConfigError(f"DeviceCore.handle takes a core event ({', '.join(e.__name__ for e in EVENTS)}), "
                          f"got {type(event).__name__}")
    if isinstance(event, (FrameCaptured, FrameSkipped)):
        if event.seq != next_seq:
            raise ConfigError(f"frames must be numbered 0, 1, 2, ... in capture order: expected {next_seq}, "
                              f"got {event.seq}")
        budget = event.budget_s if isinstance(event, FrameCaptured) else None
        if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
            raise ConfigError(f"a frame's budget must be a positive number of seconds, got {budget!r}")
    elif isinstance(event, WakeDone) and not 0 <= event.endpoint < endpoints:
        raise ConfigError(f"WakeDone for endpoint {event.endpoint}; this core has {endpoints}")


# -- actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLocal:
    """Run frame ``seq`` on a local worker now (the core counts the worker busy)."""

    seq: int


@dataclass(frozen=True)
class SendBatch:
    """Send these frames to cloud endpoint ``endpoint`` in one request, each in its encoding.

    ``encodings`` names each frame's upload encoding (``"png"``: lossless, ``"jpeg90"``: JPEG
    of quality 90, always at the model's input size). Report :class:`Uploaded` when the body
    has left, then :class:`CloudDone`.
    """

    request: int
    endpoint: int
    seqs: tuple[int, ...]
    timeout_s: float
    deadlines: tuple[float, ...]  # each frame's deadline: its remaining budget travels on the wire
    #: the endpoint's usual time on the network: send each frame's budget net of it (deadline -
    #: now - network_s), so the endpoint never computes a frame whose answer could only arrive late
    network_s: float = 0.0
    encodings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wake:
    """Wake or probe endpoint ``endpoint``: GET /readyz until ready or ``wait_s`` passes (0: once),
    then check its model; answer with :class:`WakeDone`."""

    endpoint: int
    wait_s: float


@dataclass(frozen=True)
class Release:
    """Final records, in frame order: hand them to the sinks now."""

    results: tuple[FrameResult, ...]


@dataclass(frozen=True)
class LateAnswer:
    """An answer for a frame that had already left (released as late or dropped)."""

    seq: int
    route: Route
    at: float


Action = Union[RunLocal, SendBatch, Wake, Release, LateAnswer]
