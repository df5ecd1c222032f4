"""The agent's collaborators, as small protocols: what the runner needs of each, nothing more.

A :class:`yolo_edge.Detector` is a :class:`LocalDetector`; a :class:`yolo_edge.remote.cloud.CloudClient`
(a yolo-edge service) and a :class:`yolo_edge.remote.oip.OipClient` (Triton, KServe, OpenVINO) are
:class:`CloudEndpoint` s; every sink in :mod:`edge_agent.sinks` is a :class:`Sink`. Tests pass
honest fakes that satisfy the same protocols.

>>> from yolo_edge import Detections
>>> def fake(image):
...     return Detections.empty()
>>> isinstance(fake, LocalDetector)
True
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from .core.delivery import SinkReport
from .core.frames import FrameResult

__all__ = ["LocalDetector", "CloudEndpoint", "Sink"]


@runtime_checkable
class LocalDetector(Protocol):
    """Runs one frame on the device: ``detector(image) -> Detections``."""

    def __call__(self, image: Any) -> Any: ...


@runtime_checkable
class CloudEndpoint(Protocol):
    """A cloud service the device may offload to."""

    #: the model the device runs; when set, the endpoint's model is checked against it
    expected_sha256: str | None

    def detect_frames(self, images: Sequence[Any], *, budgets_s: Sequence[float] | None = None) -> list:
        """One request for several frames, each with its remaining budget (on the wire); one
        :class:`yolo_edge.remote.wire.FrameResult` per frame: ``ok`` with detections, or ``expired``
        (its deadline passed before its batch started) or ``error`` with the reason."""

    def wake(self, wait_s: float = 0) -> bool:
        """Start a scaled-to-zero service; True once it answers ready (within ``wait_s``)."""

    def verify_model(self) -> dict:
        """Raise ``CloudModelMismatchError`` if the endpoint serves another model."""

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where released results go, in frame order, from the thread that releases them.

    ``emit`` must return quickly and never raise (a sink with slow I/O queues or spools
    internally): a result counts as within budget only if it reaches the sinks by its
    deadline.
    """

    name: str  # kind and target, without credentials: used in logs, the summary and metrics labels
    wants_images: bool  # True: the agent keeps each frame's image on its FrameResult for this sink

    def emit(self, result: FrameResult) -> None:
        """Take one result (called in frame order, from one thread); never raises."""

    def report(self) -> SinkReport:
        """Counts so far (thread-safe: read by /metrics while the agent runs)."""

    def close(self) -> SinkReport:
        """Finish (flush, sync, drain or spool) and return the final counts; never raises."""
