"""The yolo-edge BentoML service: a thin HTTP face on :class:`yolo_edge.Detector`.

Decoding, letterbox, NMS and the result format all come from ``yolo_edge``, so the
service answers exactly what ``yolo_edge.detect`` answers on the same image.

Routes::

    POST /detect     multipart: images=<file> (repeatable); optional form fields conf, iou,
                     max_det and classes (a JSON list). Adaptive batching merges frames
                     of concurrent requests into one model batch.
    GET  /metadata   model name, sha256, classes, input size, providers, version, max_batch
    GET  /readyz     503 until the model is loaded AND warmed up, then 200
    GET  /metrics    BentoML's metrics plus yolo_edge_* (see bentos/metrics.py)

Run it (from the repository root)::

    bentoml serve bentos.service:YoloEdge --host 127.0.0.1 --port 3000
    curl -F images=@bus.jpg -F conf=0.3 http://127.0.0.1:3000/detect

Settings come from the environment, read here only: ``YOLO_EDGE_MODEL`` (registry
name or .onnx path; default ``yolov3-tiny-coco``), ``YOLO_EDGE_TOKEN`` (enables bearer
auth), ``YOLO_EDGE_BACKEND``, ``YOLO_EDGE_PRECISION`` (``fp16``/``fp32`` on a GPU
backend; unset: the backend's default), ``YOLO_EDGE_THREADS``, ``YOLO_EDGE_MAX_UPLOAD_BYTES``,
``YOLO_EDGE_MAX_PIXELS``, ``YOLO_EDGE_MAX_IN_FLIGHT``, ``YOLO_EDGE_WARMUP_RUNS`` and
``YOLO_EDGE_HOME`` (default: the model baked into the Bento by ``python -m bentos.bake``,
else ``~/.cache/yolo-edge``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument, ServiceUnavailable

import yolo_edge
from bentos import metrics
from bentos.guard import Guard
from bentos.image import IMAGE
from yolo_edge.backends.engine_cache import PRECISIONS
from yolo_edge.backends.select import describe_backend
from yolo_edge.errors import ImageError, ImageTooLargeError
from yolo_edge.image import decode_image

logger = logging.getLogger(__name__)

# Batching, chosen from measurement on the 2-core CPU (notes/cloud.md): the default model
# takes 29 ms per frame at every batch size when the machine is quiet (batch of 8: 232
# ms) and 3-4x that when it is shared (batch of 8: 0.5-1.1 s). At the autoscaling target
# of 16 concurrent requests a request may wait for a full batch in flight and then run
# in the next: up to ~3 batch latencies. BentoML answers 503 as soon as it predicts
# max_latency_ms will be missed, so the budget must cover the slow case too: at 2 s,
# 21 of 96 requests got 503 at concurrency 16 on the busy machine; at 5 s, none did.
MAX_BATCH_SIZE = 8
MAX_LATENCY_MS = 5000
#: More images than this in one request are refused (400); send several requests instead.
MAX_IMAGES_PER_REQUEST = 32


#: Where ``python -m bentos.bake`` puts the model, relative to the build context.
_BAKED_HOME = Path(__file__).resolve().parent.parent / "build" / "model_home"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Service settings; ``from_env`` is the one place the environment is read."""

    model: str | None = None
    model_home: Path | None = None  # where pinned models live; None: $YOLO_EDGE_HOME or ~/.cache
    token: str | None = None
    backend: str = "auto"
    precision: str | None = None  # "fp16" / "fp32" for GPU backends; None: the backend's default
    threads: int | None = None
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    max_in_flight: int = 64
    warmup_runs: int = 3

    @classmethod
    def from_env(cls, env: Any = os.environ) -> "Settings":
        def num(key: str, default: int | None) -> int | None:
            raw = env.get(key)
            if raw in (None, ""):
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None

        precision = (env.get("YOLO_EDGE_PRECISION") or "").lower() or None
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"YOLO_EDGE_PRECISION must be {' or '.join(PRECISIONS)}, got {env.get('YOLO_EDGE_PRECISION')!r}")
        home = env.get("YOLO_EDGE_HOME")
        if not home and _BAKED_HOME.is_dir():  # inside a Bento: the model baked in by bentos.bake
            home = str(_BAKED_HOME)
        return cls(
            model=env.get("YOLO_EDGE_MODEL") or None,
            model_home=Path(home) if home else None,
            token=env.get("YOLO_EDGE_TOKEN") or None,
            backend=env.get("YOLO_EDGE_BACKEND") or "auto",
            precision=precision,
            threads=num("YOLO_EDGE_THREADS", None),
            max_upload_bytes=num("YOLO_EDGE_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_pixels=num("YOLO_EDGE_MAX_PIXELS", cls.max_pixels),
            max_in_flight=num("YOLO_EDGE_MAX_IN_FLIGHT", cls.max_in_flight),
            warmup_runs=num("YOLO_EDGE_WARMUP_RUNS", cls.warmup_runs),
        )


SETTINGS = Settings.from_env()


@dataclass(frozen=True)
class Options:
    """Per-request detection options; hashable so a batch can be grouped by them."""

    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    classes: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, extra: dict[str, Any]) -> "Options":
        unknown = set(extra) - {"conf", "iou", "max_det", "classes"}
        if unknown:
            raise InvalidArgument(f"unknown form field(s) {sorted(unknown)}: expected images, conf, iou, max_det, classes")

        def unit(key: str) -> float | None:
            value = extra.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"{key} must be a number within [0, 1], got {value!r}")
            return float(value)

        max_det = extra.get("max_det")
        if max_det is not None and (isinstance(max_det, bool) or not isinstance(max_det, int) or not 1 <= max_det <= 1000):
            raise InvalidArgument(f"max_det must be an integer within 1..1000, got {max_det!r}")
        classes = extra.get("classes")
        if classes is not None:
            if isinstance(classes, int) and not isinstance(classes, bool):
                classes = [classes]
            if not isinstance(classes, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes):
                raise InvalidArgument(f"classes must be a JSON list of class ids like [0, 2], got {classes!r}")
            classes = tuple(classes)
        return cls(unit("conf"), unit("iou"), max_det, classes)

    def kwargs(self) -> dict[str, Any]:
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "classes": None if self.classes is None else list(self.classes)}


@dataclass
class Frame:
    """One decoded upload on its way through the batcher."""

    image: np.ndarray
    options: Options
    received: float  # perf_counter when its request was parsed
    decode_s: float


class DetectInput(bentoml.IODescriptor):
    """Multipart ``images`` plus option form fields, turned into :class:`Frame` objects.

    A batchable BentoML API takes exactly one argument, so the options of each request
    travel inside its frames (which also lets one batch mix requests with different
    options). The request is parsed here rather than by BentoML's multipart reader so
    that uploads are read straight from memory, a text field is never taken for a URL
    to download, and decoding runs in a worker thread in the request's own path: a bad
    upload gets its own 4xx and never fails a batch shared with other requests.
    """

    images: list[Path]  # what OpenAPI shows; the batch function receives list[Frame]

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> "DetectInput":
        received = time.perf_counter()
        if not _service_ready():  # the Guard answers first; this covers a call that bypasses it
            raise ServiceUnavailable("the model is still loading or warming up: retry shortly")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BentoMLException("expected multipart/form-data with one or more files in the field 'images' "
                                   "(curl -F images=@photo.jpg ...)", error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        try:
            form = await request.form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=8)
        except Exception as exc:  # starlette's MultiPartException / HTTPException: a malformed body
            raise InvalidArgument(f"could not parse the multipart body: {exc}") from exc
        uploads = form.getlist("images")
        if not uploads:
            raise InvalidArgument("no images: send one or more files in the multipart field 'images'")
        if not all(hasattr(u, "read") and hasattr(u, "filename") for u in uploads):
            raise InvalidArgument("'images' must be file uploads (curl -F images=@photo.jpg), not text or URLs")
        options = Options.parse({k: _form_value(k, v) for k, v in form.multi_items() if k != "images"})
        data = [await u.read() for u in uploads]
        frames = await anyio.to_thread.run_sync(_decode_all, data, options, received)
        return cls.model_construct(images=frames)


def _service_ready() -> bool:
    svc = bentoml.get_current_service()
    return svc is not None and svc.ready


def _form_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise InvalidArgument(f"form field {key!r} must be a plain value, not a file")
    try:
        return json.loads(value)
    except ValueError:
        raise InvalidArgument(f"form field {key!r} must be a number or a JSON list, got {value[:50]!r}") from None


def _decode_all(data: list[bytes], options: Options, received: float) -> list[Frame]:
    return [_decode_upload(i, raw, options, received) for i, raw in enumerate(data)]


def _decode_upload(index: int, raw: bytes, options: Options, received: float) -> Frame:
    m = metrics.get()
    t0 = time.perf_counter()
    try:
        image = decode_image(raw, max_pixels=SETTINGS.max_pixels, max_bytes=SETTINGS.max_upload_bytes)
    except ImageTooLargeError as exc:
        m.frames.labels(outcome="too_large").inc()
        raise BentoMLException(f"image {index}: {exc}", error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE) from exc
    except ImageError as exc:
        m.frames.labels(outcome="invalid").inc()
        raise InvalidArgument(f"image {index}: {exc}") from exc
    decode_s = time.perf_counter() - t0
    m.decode_seconds.observe(decode_s)
    return Frame(image, options, received, decode_s)


@bentoml.service(
    image=IMAGE,  # CUDA 12.6 + cuDNN 9 + onnxruntime-gpu built for them (bentos/image.py)
    resources={"gpu": 1, "gpu_type": "nvidia-l4"},  # what BentoCloud gives it (deployment.yaml: gpu.l4.1)
    workers=1,  # one model copy; onnxruntime already uses every core for one batch
    threads=1,  # the batcher runs one batch at a time per worker anyway
    traffic={"timeout": 60, "concurrency": 16},
    metrics={"enabled": True, "namespace": "bentoml_service"},
)
class YoloEdge:
    """Object detection with a yolo_edge.Detector behind adaptive batching."""

    def __init__(self) -> None:
        options = {"precision": SETTINGS.precision} if SETTINGS.precision else None
        self.detector = yolo_edge.Detector(SETTINGS.model, backend=SETTINGS.backend, threads=SETTINGS.threads,
                                           max_pixels=SETTINGS.max_pixels, root=SETTINGS.model_home,
                                           backend_options=options)
        logger.info("serving %s from %s", self.detector.info.name, self.detector.info.path)
        self.info = self.detector.info
        self._ready = threading.Event()
        metrics.get().set_model(self.info.name, self.info.sha256, yolo_edge.__version__)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @bentoml.on_startup
    def _start_warmup(self) -> None:
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

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS, input_spec=DetectInput)
    def detect(self, images: list[Frame]) -> list[dict[str, Any]]:
        """Detect objects in each uploaded image; boxes are in that image's pixels."""
        start = time.perf_counter()
        m = metrics.get()
        results: list[dict[str, Any]] = [{} for _ in images]
        groups: dict[Options, list[int]] = {}
        for i, frame in enumerate(images):
            groups.setdefault(frame.options, []).append(i)
        model = {"name": self.info.name, "sha256": self.info.sha256}
        try:
            for options, indices in groups.items():
                dets, timings = self.detector.predict([images[i].image for i in indices], **options.kwargs())
                compute_s = timings.preprocess_s + timings.inference_s + timings.postprocess_s
                m.inference_seconds.observe(compute_s)
                done = time.perf_counter()
                for i, det in zip(indices, dets):
                    frame = images[i]
                    results[i] = {**det.to_dict(), "model": model, "timing": {
                        "queue_ms": round((start - frame.received) * 1e3, 3),
                        "decode_ms": round(frame.decode_s * 1e3, 3),
                        "inference_ms": round(compute_s * 1e3, 3),
                        "server_ms": round((done - frame.received) * 1e3, 3),
                        "batch_frames": len(images),
                    }}
        except Exception:
            m.frames.labels(outcome="error").inc(len(images))
            raise
        m.batch_frames.observe(len(images))
        m.frames.labels(outcome="ok").inc(len(images))
        return results

    def metadata(self) -> dict[str, Any]:
        backend = self.detector.backend
        return {
            "name": self.info.name,
            "sha256": self.info.sha256,
            "names": {str(k): v for k, v in self.info.names.items()},
            "imgsz": list(self.info.imgsz),
            "providers": list(backend.providers),
            "backend": backend.name,
            "backend_info": describe_backend(backend),  # which backend auto chose, and why
            "version": yolo_edge.__version__,
            "model_version": self.info.version,
            "max_batch": MAX_BATCH_SIZE,
            "model_max_batch": backend.max_batch,
            "ready": self.ready,
        }


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
    on_reject=metrics.reject,
    is_ready=_service_ready,
)
