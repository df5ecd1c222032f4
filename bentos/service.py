"""The yolo-edge BentoML service: a thin HTTP face on :class:`yolo_edge.Detector`.

Decoding, letterbox, NMS and the result format all come from ``yolo_edge``, so the
service answers exactly what ``yolo_edge.detect`` answers on the same image; the request
and the answer are :mod:`yolo_edge.remote.wire`'s, the same code the client uses.

Routes::

    POST /detect     multipart: images=<file> (repeatable); optional form fields conf, iou,
                     max_det, classes (a JSON list) and budgets_s (a JSON list: each
                     frame's seconds left). Adaptive batching merges frames of concurrent
                     requests into one model batch; a frame whose deadline has passed
                     when its batch starts, or falls before the batch's expected end,
                     is answered "expired", never computed (bentos/batch.py).
    GET  /metadata   model name, sha256, classes, input size, providers, version, limits
    GET  /readyz     503 until the model is loaded AND warmed up, then 200
    GET  /metrics    BentoML's metrics plus yolo_edge_* (see bentos/metrics.py)
    GET  /docs.json  the OpenAPI document (form fields and every error response)

A request is checked whole before it joins a batch (``bentos/intake.py``): a bad
request gets its own JSON 4xx and never touches the others; in a batch, each frame has
its own status (``bentos/batch.py``). Client errors log one line, not a traceback.

Run it (from the repository root)::

    bentoml serve bentos.service:YoloEdge --host 127.0.0.1 --port 3000
    curl -F images=@bus.jpg -F conf=0.3 http://127.0.0.1:3000/detect

Settings come from the environment, read here only: ``YOLO_EDGE_MODEL`` (registry
name or .onnx path; default ``yolov3-tiny-coco``), ``YOLO_EDGE_TOKEN`` (enables bearer
auth), ``YOLO_EDGE_BACKEND``, ``YOLO_EDGE_PRECISION`` (``fp16``/``fp32`` on a GPU
backend; unset: the backend's default), ``YOLO_EDGE_THREADS``, ``YOLO_EDGE_MAX_UPLOAD_BYTES``
(per request body), ``YOLO_EDGE_MAX_IMAGE_BYTES`` (per encoded image), ``YOLO_EDGE_MAX_PIXELS``
(per image), ``YOLO_EDGE_MAX_REQUEST_PIXELS`` (per request; the four default to
:data:`yolo_edge.remote.wire.LIMITS`, and ``GET /metadata`` says which are in force),
``YOLO_EDGE_MAX_IN_FLIGHT``, ``YOLO_EDGE_MAX_OPEN_UPLOADS``, ``YOLO_EDGE_BODY_TIMEOUT_S``,
``YOLO_EDGE_WARMUP_RUNS``, ``YOLO_EDGE_HOME`` (default: inside a built Bento, the model
baked into it by ``python -m bentos.bake``, else the user's cache ``~/.cache/yolo-edge``, as
``yolo-edge models list`` shows it; bentos/model_home.py; the log says which), ``YOLO_EDGE_ACCESS_LOG`` (``1``:
BentoML's access log, one line per request; off by default, the request metrics count every
request) and, for benchmarks only, ``YOLO_EDGE_BENCH_NO_INFERENCE`` (``1``: answer every frame
with no boxes and run no model, so that the serving path can be timed alone;
``bentos/bench_backend.py``).

The serving path is kept lean (issue 18, measured by ``benchmarks/service_bench.py``): the
Guard holds the body once and hands the same chunks on, a small request is decoded on the
event loop (a thread hop costs more than decoding it), the answer is written as JSON
bytes directly (:class:`DetectOutput`) instead of through BentoML's pydantic output model,
and adaptive batching never holds a request back while the model is idle (bentos/dispatch.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import Field

import yolo_edge
from bentos import dispatch, metrics
from bentos.batch import ModelTime, doomed, run_batch
from bentos.bench_backend import ENV as BENCH_ENV
from bentos.bench_backend import NoInference
from bentos.guard import Guard, install_json_protocol_errors
from bentos.image import IMAGE
from bentos.intake import Frame, IntakeLimits, PixelBudget, Rejected, arrival, decode_frames, read_form
from bentos.model_home import ModelHome, ModelOrigin, model_home
from bentos.openapi import OpenAPIDocs
from yolo_edge.backends.engine_cache import PRECISIONS
from yolo_edge.backends.select import describe_backend
from yolo_edge.errors import ModelNotFoundError
from yolo_edge.remote.wire import LIMITS, FrameStatus, ModelRef, ServiceInfo

logger = logging.getLogger(__name__)

# Batching, chosen from measurement on the 2-core CPU (BENCHMARKS.md, "Batching
# measurements"): the default model takes 29 ms per frame at every batch size when the
# machine is quiet (batch of 8: 232 ms) and 3-4x that when it is shared (batch of 8:
# 0.5-1.1 s). At the autoscaling target of 16 concurrent requests a request may wait for
# a full batch in flight and then run in the next: up to ~3 batch latencies. BentoML
# answers 503 as soon as it predicts max_latency_ms will be missed, so the budget must
# cover the slow case too: at 2 s, 21 of 96 requests got 503 at concurrency 16 on the
# busy machine; at 5 s, none did.
MAX_BATCH_SIZE = 8
MAX_LATENCY_MS = 5000
#: More images than this in one request are refused (400); send several requests instead.
MAX_IMAGES_PER_REQUEST = LIMITS.max_images
#: BentoML answers 504 for a request that has not started its answer within this.
REQUEST_TIMEOUT_S = 60
#: A request with at most this many pixels (all its images) is decoded on the event loop:
#: a 416x416 JPEG decodes in well under a millisecond, less than handing it to a thread.
INLINE_DECODE_PIXELS = 640 * 640


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Service settings; ``from_env`` is the one place the environment is read."""

    model: str | None = None
    model_home: Path | None = None  # where pinned models live; None: the user's cache (bentos/model_home.py)
    model_origin: ModelOrigin = ModelOrigin.CACHE  # why there, for the log
    token: str | None = None
    backend: str = "auto"
    precision: str | None = None  # "fp16" / "fp32" for GPU backends; None: the backend's default
    threads: int | None = None
    # the sizes a request is held to: yolo_edge.remote.wire.LIMITS's, which the SDK, the guard and the proxy share
    max_upload_bytes: int = LIMITS.max_request_bytes  # one request body
    max_image_bytes: int = LIMITS.max_image_bytes  # one encoded image
    max_pixels: int = LIMITS.max_pixels  # per image
    max_request_pixels: int = LIMITS.max_request_pixels  # per request: 32 full-HD frames, or two at the image limit
    # all requests of a worker together, from decode to answer
    max_decoded_pixels: int = 160_000_000
    max_in_flight: int = 64  # requests whose body has arrived
    max_open_uploads: int = 256  # requests whose body is still arriving
    max_buffered_bytes: int = 256 << 20  # bodies held for those, together
    body_timeout_s: float = 30.0
    warmup_runs: int = 3
    access_log: bool = False  # BentoML's access log: a log line (and its formatting) for every request
    # benchmarks only (bentos/bench_backend.py): answer every frame with no boxes, running no model
    bench_no_inference: bool = False

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_image_bytes", "max_pixels", "max_request_pixels", "max_decoded_pixels",
                     "max_in_flight", "max_open_uploads", "max_buffered_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"YOLO_EDGE_{name.upper()} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.body_timeout_s < REQUEST_TIMEOUT_S:
            raise ValueError(f"YOLO_EDGE_BODY_TIMEOUT_S must be within (0, {REQUEST_TIMEOUT_S}) seconds, "
                             f"got {self.body_timeout_s}")

    @classmethod
    def from_env(cls, env: Any = os.environ) -> "Settings":
        def num(key: str, default: Any, kind: type = int) -> Any:
            raw = env.get(key)
            if raw in (None, ""):
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
            if kind is float and not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {raw!r}")
            return value

        def flag(key: str) -> bool:
            raw = (env.get(key) or "").strip().lower()
            if raw not in _FLAGS:
                raise ValueError(f"{key} must be 1 or 0 (true/false, yes/no), got {env.get(key)!r}")
            return _FLAGS[raw]

        precision = (env.get("YOLO_EDGE_PRECISION") or "").lower() or None
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"YOLO_EDGE_PRECISION must be {' or '.join(PRECISIONS)}, got {env.get('YOLO_EDGE_PRECISION')!r}")
        home = model_home(env)
        return cls(
            model=env.get("YOLO_EDGE_MODEL") or None,
            model_home=home.root,
            model_origin=home.origin,
            token=env.get("YOLO_EDGE_TOKEN") or None,
            backend=env.get("YOLO_EDGE_BACKEND") or "auto",
            precision=precision,
            threads=num("YOLO_EDGE_THREADS", None),
            max_upload_bytes=num("YOLO_EDGE_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_image_bytes=num("YOLO_EDGE_MAX_IMAGE_BYTES", cls.max_image_bytes),
            max_pixels=num("YOLO_EDGE_MAX_PIXELS", cls.max_pixels),
            max_request_pixels=num("YOLO_EDGE_MAX_REQUEST_PIXELS", cls.max_request_pixels),
            max_decoded_pixels=num("YOLO_EDGE_MAX_DECODED_PIXELS", cls.max_decoded_pixels),
            max_in_flight=num("YOLO_EDGE_MAX_IN_FLIGHT", cls.max_in_flight),
            max_open_uploads=num("YOLO_EDGE_MAX_OPEN_UPLOADS", cls.max_open_uploads),
            max_buffered_bytes=num("YOLO_EDGE_MAX_BUFFERED_BYTES", cls.max_buffered_bytes),
            body_timeout_s=num("YOLO_EDGE_BODY_TIMEOUT_S", cls.body_timeout_s, float),
            warmup_runs=num("YOLO_EDGE_WARMUP_RUNS", cls.warmup_runs),
            access_log=flag("YOLO_EDGE_ACCESS_LOG"),
            bench_no_inference=flag(BENCH_ENV),
        )


_FLAGS = {"": False, "0": False, "false": False, "no": False, "off": False,
          "1": True, "true": True, "yes": True, "on": True}


SETTINGS = Settings.from_env()
dispatch.install()  # before BentoML builds the batch dispatchers (bentos/dispatch.py)
#: Decoded pixels held by this worker's requests (one budget per worker process).
PIXELS = PixelBudget(SETTINGS.max_decoded_pixels, on_change=metrics.decoded)


class DetectInput(bentoml.IODescriptor):
    """Multipart ``images`` plus option form fields, turned into :class:`Frame` objects.

    A batchable BentoML API takes exactly one argument, so the options of each request
    travel inside its frames (which also lets one batch mix requests with different
    options). ``from_http_request`` parses the request itself (``bentos/intake.py``),
    and the batch function receives list[Frame].
    """

    # BentoML passes every field to the batch function, which takes exactly one: the
    # options are documented by bentos/openapi.py instead of as fields here
    images: list[Path] = Field(description=f"1 to {LIMITS.max_images} image files")

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> "DetectInput":
        received = arrival(request, time.perf_counter())
        svc = bentoml.get_current_service()
        if svc is None or not svc.ready:  # the Guard answers first; this covers a call that bypasses it
            raise ServiceUnavailable("the model is still loading or warming up: retry shortly")
        limits = _intake_limits(len(svc.info.names))
        m = metrics.get()
        try:
            options, uploads = await read_form(request, limits, PIXELS)
            if sum(u.header.pixels for u in uploads) <= INLINE_DECODE_PIXELS:
                frames = decode_frames(uploads, options, received, limits, m.decode_seconds.observe)
            else:
                frames = await anyio.to_thread.run_sync(
                    decode_frames, uploads, options, received, limits, m.decode_seconds.observe)
        except Rejected as exc:
            m.frames.labels(outcome=exc.outcome).inc()
            raise BentoMLException(str(exc), error_code=exc.status) from None
        return cls.model_construct(images=frames)


class DetectOutput(bentoml.IODescriptor):
    """The answer to one request: a JSON list with one :meth:`FrameResult.to_dict` per image.

    Written with ``json.dumps`` straight into the response: BentoML's default output
    (from the ``list[dict]`` annotation) validates the list through a pydantic model and
    rebuilds that model's JSON schema for every response, a fixed cost per request that
    the answer (plain dicts, made by yolo_edge.remote.wire) does not need. /docs.json describes
    the answer (bentos/openapi.py).
    """

    media_type = "application/json"

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Any:
        from starlette.responses import Response

        return Response(json.dumps(obj, separators=(",", ":"), allow_nan=False), media_type=cls.media_type)


def _intake_limits(num_classes: int) -> IntakeLimits:
    return IntakeLimits(max_image_bytes=min(SETTINGS.max_image_bytes, SETTINGS.max_upload_bytes),
                        max_pixels=SETTINGS.max_pixels,
                        max_request_pixels=SETTINGS.max_request_pixels, num_classes=num_classes)


def _service_ready() -> bool:
    svc = bentoml.get_current_service()
    return svc is not None and svc.ready


class _ClientErrorsInOneLine(logging.Filter):
    """BentoML logs every exception an API raises with its traceback; a client's 4xx (or a
    503 refusal: busy, warming up) is not a failure of the service, so it becomes one INFO
    line saying what was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(getattr(exc, "error_code", None), "value", 500)
        if isinstance(exc, BentoMLException) and (code < 500 or code == 503):
            record.msg, record.args = "refused %d on %s: %s", (code, _path(record), str(exc)[:300])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _path(record: logging.LogRecord) -> str:
    args = record.args if isinstance(record.args, tuple) else ()
    return f"{args[1]} {args[0]}" if len(args) == 2 else "a request"


@bentoml.service(
    image=IMAGE,  # CUDA 12.6 + cuDNN 9 + onnxruntime-gpu built for them (bentos/image.py)
    resources={"gpu": 1, "gpu_type": "nvidia-l4"},  # what BentoCloud gives it (deployment.yaml: gpu.l4.1)
    workers=1,  # one model copy; onnxruntime already uses every core for one batch
    threads=1,  # the batcher runs one batch at a time per worker anyway
    traffic={"timeout": REQUEST_TIMEOUT_S, "concurrency": 16},
    metrics={"enabled": True, "namespace": "bentoml_service"},
    logging={"access": {"enabled": SETTINGS.access_log}},
)
class YoloEdge:
    """Object detection with a yolo_edge.Detector behind adaptive batching."""

    def __init__(self) -> None:
        # BentoML's server logging shows INFO of its own "bentoml" logger only (root: WARNING);
        # the service's lines (where the model came from, warm-up done) follow its level
        logging.getLogger("bentos").setLevel(logging.getLogger("bentoml").getEffectiveLevel())
        options = {"precision": SETTINGS.precision} if SETTINGS.precision else None
        home = ModelHome(SETTINGS.model_home, SETTINGS.model_origin)
        try:
            self.detector = yolo_edge.Detector(SETTINGS.model, backend=SETTINGS.backend, threads=SETTINGS.threads,
                                               max_pixels=SETTINGS.max_pixels, root=SETTINGS.model_home,
                                               backend_options=options)
        except ModelNotFoundError as exc:
            raise home.not_found(SETTINGS.model, exc) from exc
        if SETTINGS.bench_no_inference:
            logger.warning("%s=1: BENCHMARK MODE, every frame is answered with no boxes and no model runs", BENCH_ENV)
            self.detector = yolo_edge.Detector(SETTINGS.model, backend=NoInference(self.detector.backend),
                                               max_pixels=SETTINGS.max_pixels, root=SETTINGS.model_home)
        logger.info("serving %s from %s: %s", self.detector.info.name, self.detector.info.path, home.describe())
        self.info = self.detector.info
        self.model = ModelRef(self.info.name, self.info.sha256)
        self.model_time = ModelTime()  # what a batch will take, to drop frames that could not make their deadline
        self._ready = threading.Event()
        metrics.get().set_model(self.info.name, self.info.sha256, yolo_edge.__version__)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @bentoml.on_startup
    def _start_warmup(self) -> None:
        install_json_protocol_errors()  # in the worker, where uvicorn runs
        logging.getLogger("bentoml._internal.server.http_app").addFilter(_ClientErrorsInOneLine())
        # warm up in the background so /livez answers (and /readyz says "not yet") meanwhile
        threading.Thread(target=self._warmup, name="yolo-edge-warmup", daemon=True).start()

    def _warmup(self) -> None:
        t0 = time.perf_counter()
        try:
            self.detector.warmup(runs=max(1, SETTINGS.warmup_runs))
        except Exception:  # a model that cannot run must never report ready
            logger.exception("warm-up failed; /readyz stays 503")
            return
        logger.info("warm-up done in %.2f s (%d runs); ready", time.perf_counter() - t0, SETTINGS.warmup_runs)
        self._ready.set()

    def __is_ready__(self) -> bool:
        return self._ready.is_set()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS, input_spec=DetectInput,
                 output_spec=DetectOutput)
    def detect(self, images: list[Frame]) -> list[dict[str, Any]]:
        """Detect objects in each uploaded image; boxes are in that image's pixels."""
        m = metrics.get()
        start = time.perf_counter()
        results = run_batch(self.detector, images, self.model, observe_compute=m.inference_seconds.observe, start=start,
                            model_time=self.model_time)
        computed = sum(1 for r in results if r.status is not FrameStatus.EXPIRED)
        if computed:
            m.batch_frames.observe(computed)
        late = doomed(images, results, start)
        if late:
            logger.error("%d frame(s) of a batch were computed after their deadline had passed", late)
            m.doomed_computed.inc(late)
        for r in results:
            m.frames.labels(outcome=r.status.value).inc()
        return [r.to_dict() for r in results]

    def metadata(self) -> dict[str, Any]:
        backend = self.detector.backend
        return ServiceInfo(
            name=self.info.name, sha256=self.info.sha256, names=self.info.names, imgsz=self.info.imgsz,
            version=yolo_edge.__version__, max_batch=MAX_BATCH_SIZE, max_images=LIMITS.max_images,
            max_upload_bytes=SETTINGS.max_upload_bytes, max_pixels=SETTINGS.max_pixels,
            max_image_bytes=min(SETTINGS.max_image_bytes, SETTINGS.max_upload_bytes),
            max_request_pixels=SETTINGS.max_request_pixels,
            extra={
                "providers": list(backend.providers),
                "backend": backend.name,
                "backend_info": describe_backend(backend),  # which backend auto chose, and why
                "model_version": self.info.version,
                "model_max_batch": backend.max_batch,
                "ready": self.ready,
            },
        ).to_dict()


def _metadata_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def metadata(request: Request) -> JSONResponse:
        svc = bentoml.get_current_service()
        if svc is None:
            return JSONResponse({"error": "the service is starting: retry shortly", "status": 503}, status_code=503)
        return JSONResponse(svc.metadata())

    return Starlette(routes=[Route("/metadata", metadata, methods=["GET"])])


YoloEdge.mount_asgi_app(_metadata_app(), path="/")
YoloEdge.add_asgi_middleware(
    Guard,
    token=SETTINGS.token,
    max_body_bytes=SETTINGS.max_upload_bytes,
    max_in_flight=SETTINGS.max_in_flight,
    max_open_uploads=SETTINGS.max_open_uploads,
    max_buffered_bytes=SETTINGS.max_buffered_bytes,
    body_timeout_s=SETTINGS.body_timeout_s,
    on_reject=metrics.reject,
    on_count=metrics.count,
    is_ready=_service_ready,
)
# inside the Guard: the docs need the token when the service does
YoloEdge.add_asgi_middleware(OpenAPIDocs, service=YoloEdge, auth=SETTINGS.token is not None)
