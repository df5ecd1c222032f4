"""What every remote detection endpoint offers, whichever server is behind it.

:class:`Endpoint` is the small interface the SDK's ``detect(endpoint=...)`` and the
agent's endpoint pool use, satisfied by :class:`~yolo_edge.remote.cloud.CloudClient` (a
yolo-edge BentoML service) and :class:`~yolo_edge.remote.oip.OipClient` (Triton, KServe,
OpenVINO Model Server). :func:`open_endpoint` picks the client from the URL:

==================================================  ==============================
``http://HOST:PORT``, ``https://...``                a yolo-edge service (CloudClient)
``oip+http://HOST:PORT/v2/models/NAME[/versions/V]`` an Open Inference Protocol model (OipClient)
==================================================  ==============================

The agent calls :meth:`Endpoint.detect_frames`: one result per frame, each with its own
status (``ok``, ``expired``: its deadline passed before it was computed, ``error``) and
the model that answered it, and every frame's remaining budget on the wire.

>>> client = open_endpoint("http://127.0.0.1:3000")
>>> isinstance(client, Endpoint), type(client).__name__
(True, 'CloudClient')
>>> client.close()
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from ..errors import ConfigError

# what the clients share, re-exported for the pools and the agent: defined in the transport and the
# wire, which the clients import; the clients never import this module (it imports them)
from .transport import backoff_delay, check_client_args, poll_ready, transport_error, why_unreachable
from .wire import frame_deadlines, image_list

if TYPE_CHECKING:
    from .wire import FrameResult

__all__ = ["Endpoint", "open_endpoint", "client_options", "poll_ready", "check_client_args", "image_list",
           "frame_deadlines", "backoff_delay", "why_unreachable", "transport_error"]


@runtime_checkable
class Endpoint(Protocol):
    """A remote detector: health, model identity, batched detection."""

    #: the URL it was opened with, for logs and metrics labels
    endpoint: str

    def ready(self) -> bool:
        """One quick readiness probe; False on any failure, never raises."""
        ...

    def wake(self, wait_s: float = 0) -> bool:
        """Probe readiness (waking a scaled-to-zero deployment), polling up to ``wait_s``."""
        ...

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check the served model's sha256; raise CloudModelMismatchError when it differs."""
        ...

    def detect_many(
        self,
        images: Sequence[Any],
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
        return_meta: bool = False,
    ) -> Any:
        """Detections for ``images`` (and per-image ``{"model", "timing"}`` metas with ``return_meta``)."""
        ...

    def detect_frames(
        self,
        images: Sequence[Any],
        *,
        budgets_s: Sequence[float | None] | float | None = None,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
    ) -> "list[FrameResult]":
        """One :class:`~yolo_edge.remote.wire.FrameResult` per image, in order, each with its own status.

        ``budgets_s`` is each frame's remaining time in seconds (one number for all, one
        per image, or None: no deadline). A frame whose budget is spent (<= 0) is not
        sent; one whose deadline passes on the server before it is computed comes back
        EXPIRED, not computed: an outcome, not an error, and no fault of the endpoint.
        OK results carry detections in the caller's coordinates. ``result.model``
        carries the served model's sha256. Failures of the endpoint itself (unreachable,
        overloaded, another model) raise :class:`~yolo_edge.errors.CloudError` subclasses.
        """
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


def open_endpoint(url: str, *, model: str | os.PathLike | None = None, **options: Any) -> Endpoint:
    """The client for ``url``: an :class:`~yolo_edge.remote.oip.OipClient` for ``oip+http(s)://``, else a CloudClient.

    ``model`` is the local model an OIP endpoint must serve (it decodes the answers; a
    yolo-edge service decodes on its side, so there it is not used); ``options`` go to
    the client's constructor.
    """
    from .oip_wire import OIP_SCHEMES

    if isinstance(url, str) and url.startswith(OIP_SCHEMES):
        from .oip import OipClient

        return OipClient(url, model=model, **options)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        from .cloud import CloudClient

        return CloudClient(url, **options)
    raise ConfigError(f"endpoint must be 'http(s)://HOST:PORT' (a yolo-edge service) or "
                      f"'oip+http(s)://HOST:PORT/v2/models/NAME' (Triton, KServe, OpenVINO), got {url!r}")


def client_options(url: str) -> frozenset[str]:
    """The keyword options :func:`open_endpoint` takes for ``url`` (the client's constructor's, less ``model``)."""
    from .oip_wire import OIP_SCHEMES

    if isinstance(url, str) and url.startswith(OIP_SCHEMES):
        from .oip import OipClient as client_type
    else:
        from .cloud import CloudClient as client_type
    params = inspect.signature(client_type.__init__).parameters
    return frozenset(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY and name != "model")
