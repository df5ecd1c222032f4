"""Offload detection to Triton, KServe or OpenVINO Model Server (the Open Inference Protocol).

:class:`OipClient` sends the letterboxed batch as one binary tensor (FP16 when the
served model takes FP16) and decodes the raw output locally with the very
:class:`~yolo_edge.detector.Detector` pipeline ``detect()`` uses: a remote
:class:`OipBackend` stands where onnxruntime would, so a remote answer equals a local one.

Before the first inference (and on :meth:`OipClient.verify_model`) the client checks
that the endpoint serves *this* model: one FP32/FP16 input of shape ``[-1|N, 3, H, W]``
matching the local model, an output of the local model's shape, and the sha256 that
``yolo-edge export-triton`` writes into the Triton config's ``parameters`` (read from
``GET /v2/models/NAME/config``). Another model raises
:class:`~yolo_edge.errors.CloudModelMismatchError`; requests then go to the verified
model version only, so answers of two models are never mixed.

A frame's remaining budget travels as the request ``timeout`` (microseconds, Triton's
schedule-policy extension; a request's timeout is the smallest remaining budget of its
frames): the server drops a request still queued when it runs out. :meth:`OipClient.detect_frames`
answers such frames with status EXPIRED (and does not send a frame whose budget is spent);
``detect``/``detect_many`` raise :class:`~yolo_edge.errors.CloudDeadlineExpiredError`.

>>> client = OipClient("oip+http://127.0.0.1:8000/v2/models/yolo")       # doctest: +SKIP
>>> client.wake(wait_s=30)                                               # doctest: +SKIP
True
>>> dets = client.detect("bus.jpg", budget_s=0.2)                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import math
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..backends.onnx_info import OnnxInfo, read_onnx_info
from ..detector import Detector, check_sha256
from ..errors import CloudDeadlineExpiredError, CloudError, CloudModelMismatchError, CloudRequestError, ConfigError
from ..models.resolve import ResolvedModel, resolve_model
from ..types import Detections
from .oip_model import ServedModel, check_output, check_served, identity_problem
from .oip_wire import OipUrl, decode_infer_response, encode_infer_request, parse_oip_url, refine_error
from .transport import HttpTransport, RemoteClient, RetryPolicy, check_client_args
from .values import check_flag, is_int, is_real, short_repr
from .wire import FrameResult, FrameStatus, FrameTiming, ModelRef, frame_deadlines, image_list

__all__ = ["OipClient", "OipBackend", "ServedModel"]

logger = logging.getLogger(__name__)

_HINT = "is the server running at that address (or scaled to zero: call wake())?"
#: what a server without the model-config extension answers GET .../config with
_NO_CONFIG = (400, 404, 405, 501)


class OipBackend:
    """A :class:`~yolo_edge.backends.Backend` whose ``run`` is an inference on an OIP endpoint.

    It describes the local model (input size, outputs, metadata: what the Detector
    decodes with) and sends batches to ``url``. :class:`OipClient` wraps it with
    deadlines, readiness and the endpoint interface the agent uses; ``Detector(model,
    backend=OipBackend(...))`` works too.
    """

    name = "oip"

    def __init__(
        self,
        url: str | OipUrl,
        local: OnnxInfo,
        *,
        expected_sha256: str,
        token: str | None = None,
        timeout: float = 10.0,
        max_batch: int | None = None,
        max_retries: int = 1,
        backoff_s: float = 0.2,
        allow_model_mismatch: bool = False,
        session: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        timeout, backoff_s = check_client_args(token=token, timeout=timeout, max_retries=max_retries,
                                               backoff_s=backoff_s, allow_model_mismatch=allow_model_mismatch,
                                               sleep=sleep)
        if max_batch is not None and (not is_int(max_batch) or max_batch < 1):
            raise ConfigError(f"max_batch must be None (the server's) or an integer >= 1, got {short_repr(max_batch)}")
        self.url = url if isinstance(url, OipUrl) else parse_oip_url(url)
        self.local = local
        self.input_shape = (None, *local.input_shape[1:])
        self.output_shapes = [list(s) for s in local.output_shapes]
        self.metadata = dict(local.metadata)
        self.expected_sha256 = check_sha256(expected_sha256) or ""
        self.token = token
        self.timeout = timeout
        self.max_batch_limit = None if max_batch is None else int(max_batch)
        self.max_retries = int(max_retries)
        self.backoff_s = backoff_s
        self.allow_model_mismatch = allow_model_mismatch
        self._transport = HttpTransport(self.url.base, client="OipClient", hint=_HINT, token=token, timeout=timeout,
                                        retry=RetryPolicy(max_retries=self.max_retries, backoff_s=backoff_s),
                                        session=session, sleep=sleep, refine=refine_error)
        self._served: ServedModel | None = None
        self._lock = threading.Lock()

    # -- Backend interface -----------------------------------------------------------
    @property
    def providers(self) -> tuple[str, ...]:
        return (str(self.url),)

    @property
    def max_batch(self) -> int:
        served = self._served
        if served is None:  # not verified yet (Detector(backend=...) asks before the first run)
            return self.max_batch_limit or 64
        return served.max_batch

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.infer(batch)

    def close(self) -> None:
        self._transport.close()

    # -- the endpoint ------------------------------------------------------------------
    def ready(self) -> bool:
        """``GET .../v2/models/NAME/ready`` answered 200; never raises.

        Not the server-wide ``/v2/health/ready``: under Triton's strict readiness (its
        default) that turns false when any *other* model in the repository failed to load.
        """
        return self._transport.probe(self.url.model_path + "/ready")

    @property
    def verified(self) -> ServedModel | None:
        """The served model once verified; None before (no network I/O)."""
        return self._served

    def served(self) -> ServedModel:
        """The verified served model (verifying it on first use)."""
        served = self._served
        return served if served is not None else self.verify()

    def verify(self, expected_sha256: str | None = None) -> ServedModel:
        """Read the model's metadata and config and check them against the local model."""
        expected = check_sha256(expected_sha256) or self.expected_sha256
        meta = self._get_json(self.url.model_path)
        config = self._get_json(self.url.model_path + "/config", optional=True)
        served = check_served(meta, config, self.local, self.url, self.max_batch_limit)
        problem = identity_problem(served, expected, self.url)
        if problem:
            if not self.allow_model_mismatch:
                raise CloudModelMismatchError(problem + "; or pass allow_model_mismatch=True to accept it")
            logger.warning("%s (accepted: allow_model_mismatch=True)", problem)
        with self._lock:
            self._served = served
            if served.version:  # pin it: a new version loaded later is never mixed in
                self.url = self.url.with_version(served.version)
        return served

    def infer(self, batch: np.ndarray, *, deadline: float | None = None) -> list[np.ndarray]:
        """Run ``batch`` remotely; ``deadline`` (``time.monotonic()``) bounds its wait in the server's queue."""
        served = self.served()
        if batch.ndim != 4 or batch.shape[0] > served.max_batch:
            raise ConfigError(f"batch of shape {batch.shape}: expected [B<={served.max_batch}, 3, H, W]")
        path = self.url.model_path + "/infer"
        url = self.url.base + path

        def body() -> dict[str, Any]:  # at each try: the time left then travels as the request's timeout
            data, headers = encode_infer_request(batch, input_name=served.input_name, datatype=served.datatype,
                                                 output_name=served.output_name,
                                                 timeout_us=_remaining_us(deadline, url))
            return {"data": data, "headers": headers}

        resp = self._transport.request("POST", path, prepare=body, deadline=deadline)
        header, arrays = decode_infer_response(resp.content, resp.headers, url)
        return [check_output(header, arrays, served, batch.shape[0], url)]

    # -- internals ---------------------------------------------------------------------
    def _get_json(self, path: str, *, optional: bool = False) -> Any:
        try:
            resp = self._transport.request("GET", path, accept=_NO_CONFIG if optional else ())
        except CloudRequestError as error:
            if error.status_code not in (400, 404):
                raise
            raise CloudRequestError(f"{error}: does the server serve a model named {self.url.model!r}"
                                    f"{' version ' + self.url.version if self.url.version else ''}?",
                                    status_code=error.status_code) from None
        if resp.status_code in _NO_CONFIG:  # no such extension on this server
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise CloudError(f"GET {resp.url} answered non-JSON: {resp.text[:200]!r}",
                             status_code=resp.status_code) from exc


def _remaining_us(deadline: float | None, url: str) -> int | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise CloudDeadlineExpiredError(f"the frame's deadline passed {-left * 1e3:.1f} ms ago: "
                                        f"not sent to {url}")
    return max(1, int(left * 1e6))


class OipClient(RemoteClient):
    """A detection client for one model on an Open Inference Protocol endpoint.

    ``url`` is ``oip+http://HOST:PORT[/PREFIX]/v2/models/NAME[/versions/V]``. ``model``
    names the local model it serves (default ``yolov3-tiny-coco``): its sha256 is what the
    endpoint must serve, and its metadata decodes the answers. ``max_batch`` caps the
    frames per request (default: the server's ``max_batch_size``). Creating a client does
    no network I/O; the first inference verifies the endpoint.

    Same methods as :class:`~yolo_edge.remote.cloud.CloudClient` (see
    :class:`yolo_edge.remote.endpoint.Endpoint`), plus ``budget_s`` on ``detect``/``detect_many``.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | os.PathLike | ResolvedModel | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        max_batch: int | None = None,
        max_retries: int = 1,
        backoff_s: float = 0.2,
        expected_sha256: str | None = None,
        allow_model_mismatch: bool = False,
        session: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        root: str | os.PathLike | None = None,
    ) -> None:
        oip_url = parse_oip_url(url)
        resolved = resolve_model(model, root)
        self.backend = OipBackend(
            oip_url, read_onnx_info(resolved.path), expected_sha256=expected_sha256 or resolved.sha256,
            token=token, timeout=timeout, max_batch=max_batch, max_retries=max_retries, backoff_s=backoff_s,
            allow_model_mismatch=allow_model_mismatch, session=session, sleep=sleep,
        )
        self.detector = Detector(resolved, backend=self.backend)
        self.endpoint = str(oip_url)
        self._sleep = sleep

    @property
    def expected_sha256(self) -> str:
        """The sha256 the served model must have (the local model's unless given)."""
        return self.backend.expected_sha256

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session if this client created it. Idempotent."""
        self.backend.close()

    def __repr__(self) -> str:
        return f"OipClient({self.endpoint!r}, model={self.detector.info.name!r})"

    # -- health ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Server and model ready; False on any failure, never raises."""
        return self.backend.ready()

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check the served model against the local one (interface and sha256); return what is served."""
        return self.backend.verify(expected_sha256).to_dict()

    # -- detection ---------------------------------------------------------------------
    def detect(self, image: Any, *, budget_s: float | None = None, **options: Any) -> Detections:
        """Detect in one image; ``options`` as for :meth:`detect_many`."""
        return self.detect_many([image], budget_s=budget_s, **options)[0]

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
        budget_s: float | None = None,
    ) -> Any:
        """Detect in several images: one request per ``max_batch`` frames, decoded locally.

        ``budget_s`` is the time left for these frames: it travels as the request timeout,
        and a request whose budget ran out raises :class:`CloudDeadlineExpiredError`.
        With ``return_meta=True`` the result is ``(detections, metas)``, each meta
        ``{"model": {"name", "sha256", "version"}, "timing": {"roundtrip_ms"}}``.
        """
        images = image_list(images, "detect_many")
        check_flag(return_meta, "return_meta")
        if budget_s is not None and not (is_real(budget_s) and -math.inf < budget_s < math.inf):  # NaN fails too
            raise ConfigError(f"budget_s must be None (no deadline) or a finite number of seconds left, "
                              f"got {short_repr(budget_s)}")
        if not images:
            return ([], []) if return_meta else []
        if budget_s is not None and not budget_s > 0:
            raise CloudDeadlineExpiredError(f"no budget left ({budget_s} s): not sent to {self.endpoint}")
        deadline = None if budget_s is None else time.monotonic() + float(budget_s)
        served = self.backend.served()
        roundtrips: list[float] = []

        def infer(batch: np.ndarray) -> list[np.ndarray]:
            start = time.perf_counter()
            out = self.backend.infer(batch, deadline=deadline)
            roundtrips.append((time.perf_counter() - start) * 1e3)
            return out

        dets, _ = self.detector.predict(images, conf=conf, iou=iou, classes=classes, max_det=max_det,
                                        channels=channels, infer=infer)  # type: ignore[arg-type]
        if not return_meta:
            return dets
        model = {"name": served.name, "sha256": served.sha256, "version": served.version}
        metas = [{"model": model, "timing": {"roundtrip_ms": roundtrips[i // served.max_batch]}}
                 for i in range(len(dets))]
        return dets, metas

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
    ) -> list[FrameResult]:
        """One :class:`~yolo_edge.remote.wire.FrameResult` per image, each with its own status.

        Frames go in requests of up to the server's ``max_batch``; each request's
        ``timeout`` is the smallest remaining budget of its frames. A frame whose budget
        is spent before its request is sent is not sent, and a request the server dropped
        because its timeout ran out in the queue ("Request timeout expired": nothing was
        computed) answers all of its frames EXPIRED; neither raises. Detections are
        decoded locally, in the caller's coordinates; ``model`` is the verified served
        model (answers are held to its name and version).
        """
        images = image_list(images, "detect_frames")
        deadlines = frame_deadlines(budgets_s, len(images), time.monotonic()) or [None] * len(images)
        results: list[FrameResult | None] = [None] * len(images)
        pending = list(range(len(images)))
        while pending:
            now = time.monotonic()
            for i in pending:
                late = deadlines[i]
                if late is not None and late <= now:
                    results[i] = FrameResult(status=FrameStatus.EXPIRED, model=self._model_ref(), error=(
                        f"its budget ran out {(now - late) * 1e3:.1f} ms before it could be sent: not sent"))
            pending = [i for i in pending if results[i] is None]
            if not pending:
                break
            served = self.backend.served()
            chunk, pending = pending[:served.max_batch], pending[served.max_batch:]
            spans = [d for d in (deadlines[i] for i in chunk) if d is not None]
            deadline = min(spans) if spans else None
            try:
                dets, _ = self.detector.predict(
                    [images[i] for i in chunk], conf=conf, iou=iou, classes=classes, max_det=max_det,  # type: ignore[arg-type]
                    channels=channels, infer=lambda batch: self.backend.infer(batch, deadline=deadline))
            except CloudDeadlineExpiredError as exc:  # in the server's queue, or before it could be sent
                for i in chunk:
                    results[i] = FrameResult(status=FrameStatus.EXPIRED, model=self._model_ref(), error=str(exc))
                continue
            model, timing = self._model_ref(), FrameTiming(batch_frames=len(chunk))
            for i, det in zip(chunk, dets):
                results[i] = FrameResult(status=FrameStatus.OK, model=model, timing=timing, detections=det)
        return [r for r in results if r is not None]

    def _model_ref(self) -> ModelRef:
        """The verified served model; before verification, the one it must be (the local model's sha256)."""
        served = self.backend.verified
        if served is None:
            return ModelRef(self.backend.url.model, self.backend.expected_sha256)
        return ModelRef(served.name, served.sha256 or "")
