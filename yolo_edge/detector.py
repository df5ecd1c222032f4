"""``Detector``: a model, a backend and the pure pre/post-processing around them."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, overload

import numpy as np

from .backends.base import Backend
from .errors import BackendError, ConfigError, UnsupportedModelError, YoloEdgeError
from .image import MAX_PIXELS, Channels, ImageSource, check_channels, check_limit, load_image
from .models.resolve import ResolvedModel, parse_metadata, resolve_model
from .postprocess import OUTPUT_FORMATS, detect_output_format, postprocess
from .preprocess import make_batch
from .remote.wire import DetectOptions, check_classes, check_max_det, check_unit, short_repr
from .types import Detections, ModelInfo, as_names

if TYPE_CHECKING:
    from .stream import StreamResult

__all__ = ["Detector", "StageTimings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage for one :meth:`Detector.predict` call (all images)."""

    decode_s: float = 0.0
    preprocess_s: float = 0.0
    inference_s: float = 0.0
    postprocess_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.decode_s + self.preprocess_s + self.inference_s + self.postprocess_s

    def to_dict(self) -> dict[str, float]:
        return {k: round(v * 1e3, 3) for k, v in (
            ("decode_ms", self.decode_s), ("preprocess_ms", self.preprocess_s),
            ("inference_ms", self.inference_s), ("postprocess_ms", self.postprocess_s))}


_HEX = frozenset("0123456789abcdef")


def check_sha256(value: Any, name: str = "expected_sha256") -> str | None:
    """None, or a sha256 as 64 lowercase hex digits."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or not set(value.lower()) <= _HEX:
        raise ConfigError(f"{name} must be a sha256 of 64 hex digits (yolo-edge models list shows them), "
                          f"got {short_repr(value)}")
    return value.lower()


_PREDICT_OPTIONS = frozenset({"channels", "conf", "iou", "max_det", "classes"})


def _classes_arg(classes: Any) -> Any:
    """``classes`` as given: None, a comma-separated string of names/ids, or ids and names."""
    if classes is None or isinstance(classes, str):
        return classes
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, (bool, np.bool_)):
        return [classes]
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        classes = classes.tolist()
    if not isinstance(classes, (list, tuple)) or not all(
            isinstance(c, str) or (isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)))
            for c in classes):
        raise ConfigError(f"classes must be class ids or names, like [0, 5] or 'person,bus', got {short_repr(classes)}")
    return list(classes)


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= 1024:
        raise ConfigError(f"threads must be None (the runtime decides) or an integer within 1..1024, got {short_repr(threads)}")
    return int(threads)


def _check_model_arg(model: Any, name: str) -> None:
    if model is not None and not isinstance(model, (str, os.PathLike, ResolvedModel)):
        raise ConfigError(f"{name} must be a model name like 'yolov3-tiny-coco' or a path to an .onnx file, "
                          f"got {short_repr(model)}")


class Detector:
    """Detect objects with a YOLO model.

    ``model`` is a registry name (default ``yolov3-tiny-coco``), a name registered by
    ``yolo-edge export``, a path to an ONNX file, or an already verified
    :class:`~yolo_edge.models.resolve.ResolvedModel`. ``backend`` is ``"auto"``,
    ``"onnxruntime"``, ``"tensorrt"``, ``"torch"`` or a :class:`~yolo_edge.backends.Backend`
    instance; ``backend_options`` go to it (``precision``, ``max_batch``, ``cache_dir``,
    ``device``, ``half``, ``prefer``: see :func:`yolo_edge.backends.select.select_backend`).
    A Detector keeps no per-call state, so one instance can be shared by threads.
    On a model exported with NMS inside (``[B, 300, 6]``) ``iou`` has no effect and
    ``conf`` can only raise the threshold baked into the graph.

    A model loaded by path is identified by its own sha256 (``info.sha256``); it carries
    a registered name only when its bytes are that registered model's.
    ``expected_sha256=`` pins the file: any other bytes raise
    :class:`~yolo_edge.errors.ModelIntegrityError` before the model is loaded.

    >>> det = Detector()                                    # doctest: +SKIP
    >>> dets = det("bus.jpg")                               # doctest: +SKIP
    >>> [label for label in dets.labels]                    # doctest: +SKIP
    ['bus', 'person', 'person', 'person', 'person']
    """

    def __init__(
        self,
        model: str | os.PathLike | ResolvedModel | None = None,
        *,
        backend: str | Backend = "auto",
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        classes: str | Sequence[int | str] | None = None,
        threads: int | None = None,
        providers: Sequence[Any] | None = None,
        backend_options: Mapping[str, Any] | None = None,
        output_format: str | None = None,
        max_pixels: int = MAX_PIXELS,
        root: str | os.PathLike | None = None,
        expected_sha256: str | None = None,
    ) -> None:
        from .backends.select import BACKENDS  # names only: no runtime is imported

        self.conf, self.iou, self.max_det = check_unit("conf", conf), check_unit("iou", iou), check_max_det(max_det)
        classes = _classes_arg(classes)
        _check_model_arg(model, "model")
        if isinstance(backend, str) and backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)} or a Backend instance, got {short_repr(backend)}")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ConfigError(f"root must be the path of a model folder (like ~/.cache/yolo-edge), got {short_repr(root)}")
        threads = _check_threads(threads)
        if providers is not None and (isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence)):
            raise ConfigError(f"providers must be a list like ['CPUExecutionProvider'], got {short_repr(providers)}")
        if backend_options is not None and not (isinstance(backend_options, Mapping)
                                                and all(isinstance(k, str) for k in backend_options)):
            raise ConfigError(f"backend_options must be a dict of option names to values, got {short_repr(backend_options)}")
        if output_format is not None and (not isinstance(output_format, str) or output_format not in (*OUTPUT_FORMATS, "auto")):
            raise ConfigError(f"output_format must be one of {OUTPUT_FORMATS} or 'auto', got {short_repr(output_format)}")
        self.max_pixels = check_limit("max_pixels", max_pixels)
        expected = check_sha256(expected_sha256)
        resolved = resolve_model(model, root, expected_sha256=expected)
        self.backend: Backend = self._make_backend(backend, resolved, threads, providers, backend_options or {})
        self.info = self._describe(resolved, output_format)
        # ids or names ("person,bus"), checked against the model's classes once, here
        self.classes = self.info.class_ids(classes, check_ids=True)
        if self.classes is not None:
            check_classes(self.classes, len(self.info.names) or None)
        log.info("Detector ready: %s (%s) on %s %s", self.info.name, self.info.sha256[:12], self.backend.name, list(self.backend.providers))
        if self.info.output_format == "nms":
            log.info("%s has NMS inside the graph: iou has no effect, and conf only filters above the "
                     "threshold it was exported with", self.info.name)

    @staticmethod
    def _make_backend(
        backend: str | Backend, resolved: ResolvedModel, threads: int | None,
        providers: Sequence[Any] | None, options: Mapping[str, Any],
    ) -> Backend:
        if not isinstance(backend, str):
            if not isinstance(backend, Backend):
                raise ConfigError(f"backend must be a name or implement yolo_edge.backends.Backend, got {type(backend).__name__}")
            return backend
        from .backends.select import select_backend  # heavy runtimes import only inside the chosen branch

        try:
            return select_backend(resolved.path, backend=backend, threads=threads, providers=providers, **options)
        except YoloEdgeError:
            raise
        except Exception as exc:  # a damaged file can fail deep inside a runtime (bad metadata text, say)
            raise BackendError(f"could not load {resolved.path} with backend {backend!r}: {exc!r}; "
                               "check the file is a complete ONNX model") from exc

    def _describe(self, resolved: ResolvedModel, output_format: str | None) -> ModelInfo:
        meta = parse_metadata(getattr(self.backend, "metadata", {}) or {})
        shape = self.backend.input_shape
        if shape[2] is not None and shape[3] is not None:
            imgsz = (int(shape[2]), int(shape[3]))
        elif "imgsz" in meta:
            sz = meta["imgsz"]
            imgsz = (int(sz[0]), int(sz[1])) if isinstance(sz, (list, tuple)) else (int(sz), int(sz))
        else:
            raise UnsupportedModelError(
                f"{resolved.path}: the input height/width are dynamic and the ONNX metadata has no imgsz; "
                "export with a fixed imgsz"
            )
        names = as_names(meta["names"]) if "names" in meta else {}
        fmt = output_format or resolved.output_format
        if fmt == "auto" and meta.get("output_format") in OUTPUT_FORMATS:
            fmt = meta["output_format"]
        if fmt == "auto" and (meta.get("end2end") or meta.get("nms")):
            fmt = "nms"
        out_shape = getattr(self.backend, "output_shapes", [[None, None, None]])[0]
        if fmt == "auto":
            fmt = detect_output_format(out_shape, len(names) or None)
        elif fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output_format must be one of {OUTPUT_FORMATS} or 'auto', got {fmt!r}")
        if not names:  # no metadata: number the classes from the output width
            width = {"anchor_free": (out_shape[1], 4), "anchor_based": (out_shape[2], 5)}.get(fmt)
            if width and isinstance(width[0], int):
                names = {i: str(i) for i in range(width[0] - width[1])}
        return ModelInfo(
            name=resolved.name,
            sha256=resolved.sha256,
            path=str(resolved.path),
            names=names,
            imgsz=imgsz,
            stride=int(meta.get("stride", 32)),
            output_format=fmt,
            dynamic_batch=shape[0] is None,
            version=str(meta.get("version", "")),
            task=str(meta.get("task", "detect")),
        )

    @overload
    def __call__(self, images: ImageSource, **kwargs: Any) -> Detections: ...
    @overload
    def __call__(self, images: list, **kwargs: Any) -> list[Detections]: ...

    def __call__(self, images, **kwargs):
        """Detect in one image (returns ``Detections``) or a list (returns a list)."""
        unknown = set(kwargs) - _PREDICT_OPTIONS
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}: expected {sorted(_PREDICT_OPTIONS)}")
        single = not isinstance(images, (list, tuple))
        results, _ = self.predict([images] if single else list(images), **kwargs)
        return results[0] if single else results

    def predict(
        self,
        images: Sequence[ImageSource],
        *,
        channels: Channels = "bgr",
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: str | Sequence[int | str] | None = None,
        infer: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
    ) -> tuple[list[Detections], StageTimings]:
        """Detect in a list of images, batching up to the backend's limit; also returns timings.

        Options left as None take the values the Detector was made with. ``classes`` are ids or
        names. ``infer`` runs each letterboxed batch in place of ``self.backend.run``, for this
        call only: a remote engine given per-request options (the frame's deadline, see
        :class:`yolo_edge.remote.oip.OipClient`), while image loading, letterbox, decode and NMS
        stay exactly this Detector's.
        """
        if not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            raise ConfigError(f"predict expects a list of images, got {type(images).__name__}; "
                              "call the detector itself, det(image), for a single image")
        check_channels(channels)
        conf, iou, max_det, classes = self._options(conf, iou, max_det, classes)
        t0 = time.perf_counter()
        frames = [load_image(img, channels=channels, max_pixels=self.max_pixels) for img in images]
        t_decode = time.perf_counter() - t0
        t_pre = t_inf = t_post = 0.0
        results: list[Detections] = []
        run = self.backend.run if infer is None else infer
        step = max(1, self.backend.max_batch)
        for start in range(0, len(frames), step):
            chunk = frames[start : start + step]
            t0 = time.perf_counter()
            blob, params = make_batch(chunk, self.info.imgsz)
            t1 = time.perf_counter()
            pred = run(blob)[0]
            t2 = time.perf_counter()
            for i, p in enumerate(params):
                xyxy, score, cls = postprocess(pred[i], self.info.output_format, p, conf=conf, iou=iou, max_det=max_det, classes=classes)
                results.append(Detections(xyxy, score, cls, self.info.names, p.orig_shape))
            t3 = time.perf_counter()
            t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + t3 - t2
        return results, StageTimings(t_decode, t_pre, t_inf, t_post)

    def _options(self, conf: Any, iou: Any, max_det: Any, classes: Any) -> tuple[float, float, int, list[int] | None]:
        """Per-call options checked, with the Detector's own values where None."""
        classes = _classes_arg(classes)
        if classes is not None and (isinstance(classes, str) or any(isinstance(c, str) for c in classes)):
            classes = self.info.class_ids(classes)  # names to ids (an unknown name is a ConfigError)
        opts = DetectOptions(conf=conf, iou=iou, max_det=max_det, classes=classes).for_model(len(self.info.names))
        return (self.conf if opts.conf is None else opts.conf, self.iou if opts.iou is None else opts.iou,
                self.max_det if opts.max_det is None else opts.max_det,
                self.classes if opts.classes is None else list(opts.classes))

    def stream(
        self,
        frames: Iterable[Any],
        *,
        channels: Channels = "bgr",
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: str | Sequence[int | str] | None = None,
        errors: str = "raise",
        queue_size: int = 2,
        inference_cpus: Collection[int] | None = None,
        prepare_cpus: Collection[int] | None = None,
    ) -> Iterator["StreamResult"]:
        """Detect in a stream of frames, pipelined: decode and letterbox of the next frames and
        NMS of the previous one run while the model runs; results in input order.

        ``frames`` is any iterable of images (paths, bytes, arrays, PIL images) or of
        :class:`yolo_edge.inputs.Frame` (``yolo_edge.inputs.frames(files)`` reads image files
        and videos). Yields one :class:`~yolo_edge.stream.StreamResult` per frame, whose
        detections equal ``self(frame)``. A frame that cannot be read raises its
        :class:`~yolo_edge.errors.ImageError` at its place (``errors="raise"``), or comes as
        a result with ``error`` set while the stream goes on (``errors="yield"``). At most
        ``queue_size`` frames wait between stages; ``inference_cpus`` and ``prepare_cpus``
        pin the model's thread and the decoding thread to CPU cores (Linux). Leaving the
        loop early stops the stream's threads. See :mod:`yolo_edge.stream`.

        >>> det = Detector()                                              # doctest: +SKIP
        >>> for r in det.stream(["bus.jpg", "zidane.jpg"]):               # doctest: +SKIP
        ...     print(r.source, r.detections)
        bus.jpg Detections(5: 4 person, 1 bus)
        zidane.jpg Detections(5: 3 person, 2 tie)
        """
        from .stream import _Options, check_cpus, run_stream

        check_channels(channels)
        opts = _Options(*self._options(conf, iou, max_det, classes))
        if errors not in ("raise", "yield"):
            raise ConfigError(f"errors must be 'raise' (a frame that cannot be read ends the stream) or 'yield' "
                              f"(it comes as a result with its error), got {short_repr(errors)}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, (int, np.integer)) or not 1 <= queue_size <= 64:
            raise ConfigError(f"queue_size must be an integer within 1..64 (frames waiting between stages), "
                              f"got {short_repr(queue_size)}")
        if (isinstance(frames, (str, bytes, os.PathLike)) or not isinstance(frames, Iterable)
                or (isinstance(frames, np.ndarray) and frames.ndim != 4)):
            raise ConfigError(f"stream expects an iterable of frames (a list, a generator, yolo_edge.inputs.frames(...)), "
                              f"got {type(frames).__name__}; call the detector itself, det(image), for one image")
        return run_stream(self, frames, opts, channels=channels, errors=errors, queue_size=int(queue_size),
                          inference_cpus=check_cpus(inference_cpus, "inference_cpus"),
                          prepare_cpus=check_cpus(prepare_cpus, "prepare_cpus"))

    def warmup(self, runs: int = 2) -> None:
        """Run a blank frame through the model so the first real request is not slow."""
        blank = np.full((*self.info.imgsz, 3), 114, np.uint8)
        for _ in range(runs):
            self.predict([blank])

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Detector(model={self.info.name!r}, backend={self.backend.name!r}, providers={list(self.backend.providers)})"
