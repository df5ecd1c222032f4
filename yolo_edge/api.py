"""``yolo_edge.detect``: the one-call entry point."""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

from .detector import Detector
from .errors import ConfigError
from .image import ImageSource
from .remote.wire import short_repr
from .types import Detections

__all__ = ["detect", "close_clients"]

_detectors: dict[tuple, Detector] = {}
_clients: dict[tuple, Any] = {}  # (endpoint or pool members, token, model, options) -> client or EndpointPool
_lock = threading.Lock()


def _shared_detector(model: str | os.PathLike | None, backend: str) -> Detector:
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"model must be a model name like 'yolov3-tiny-coco' or a path to an .onnx file, "
                          f"got {short_repr(model)}")
    if not isinstance(backend, str):
        raise ConfigError(f"backend must be a backend name like 'auto' or 'onnxruntime', got {short_repr(backend)}")
    key = (None if model is None else os.fspath(model), backend)
    with _lock:
        det = _detectors.get(key)
        if det is None:
            det = _detectors[key] = Detector(model, backend=backend)
        return det


def _is_oip(endpoint: Any) -> bool:
    from .remote.oip_wire import OIP_SCHEMES

    if isinstance(endpoint, (list, tuple)):  # a pool: model= decodes for its OIP members
        from .remote.pool import PoolMember

        return any(_is_oip(PoolMember.parse(member).url) for member in endpoint)
    return isinstance(endpoint, str) and endpoint.startswith(OIP_SCHEMES)


def _client_option_names(endpoint: Any) -> frozenset[str]:
    from .remote.endpoint import client_options

    return client_options(endpoint) - {"token"}


def _shared_client(endpoint: Any, token: Any, options: dict[str, Any], model: Any = None) -> Any:
    """One client per (endpoint, token, model, options): one connection pool and one metadata lookup."""
    from .remote.endpoint import open_endpoint

    names = _client_option_names(endpoint)
    unknown = set(options) - names
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for detect(endpoint=...): expected {sorted(names)}")
    key = (endpoint, token, None if model is None else str(model), tuple(sorted(options.items())))
    extra = {"model": model} if _is_oip(endpoint) else {}
    return _shared(key, options, lambda: open_endpoint(endpoint, token=token, **extra, **options))


def _shared_pool(endpoints: Sequence[Any], token: Any, options: dict[str, Any], model: Any = None) -> Any:
    """One :class:`~yolo_edge.remote.pool.EndpointPool` per (members, token, model, options), like the clients."""
    from .remote.pool import EndpointPool, PoolMember

    members = tuple(PoolMember.parse(member) for member in endpoints)
    options = dict(options)
    expected = options.pop("expected_sha256", None)
    key = (members, token, None if model is None else str(model), expected, tuple(sorted(options.items())))
    return _shared(key, options, lambda: EndpointPool(members, expected_sha256=expected, model=model, token=token,
                                                      client_options=options))


def _shared(key: tuple, options: dict[str, Any], make: Any) -> Any:
    """The client kept for ``key``, made by ``make()`` the first time."""
    try:
        hash(key)
    except TypeError:
        raise ConfigError(f"detect(endpoint=...) options must be plain values, got {short_repr(options)}") from None
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make()
        return client


def close_clients() -> None:
    """Close the cloud clients and endpoint pools that :func:`detect` keeps per endpoint.

    Safe to call at any time, from any thread; the next ``detect(endpoint=...)`` makes new ones.
    """
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def detect(
    image: ImageSource | Sequence[ImageSource],
    model: str | os.PathLike | None = None,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    classes: str | Sequence[int | str] | None = None,
    channels: str = "bgr",
    backend: str = "auto",
    endpoint: str | Sequence[Any] | None = None,
    token: str | None = None,
    **cloud_options: Any,
) -> Detections | list[Detections]:
    """Detect objects in an image (or a list of images).

    Locally by default: the model (default ``yolov3-tiny-coco``) is loaded once and
    reused by later calls. With ``endpoint=`` the image is sent to a yolo-edge service
    instead, and the answer is the same (same classes and boxes: the image is sent
    losslessly unless ``jpeg_quality=`` asks otherwise); an ``oip+http://`` endpoint is a
    Triton, KServe or OpenVINO server serving ``model`` (see :mod:`yolo_edge.remote.oip`). One
    client per endpoint is kept and reused, so later calls share its connection and its
    model lookup (:func:`close_clients` closes them). ``cloud_options`` are the client's
    (:class:`~yolo_edge.remote.cloud.CloudClient`'s ``timeout``, ``jpeg_quality``...).

    A list of endpoints (URLs, or ``{"url", "weight", "backup"}`` tables) is one shared
    :class:`~yolo_edge.remote.pool.EndpointPool`: each call goes to the least loaded endpoint and
    fails over to another when one is down, and every answer comes from the same model:
    ``expected_sha256=``, else ``model``'s when given (a registry name's pinned sha256),
    else the first endpoint's; an endpoint on another model is never used.

    >>> import yolo_edge
    >>> dets = yolo_edge.detect("bus.jpg")                          # doctest: +SKIP
    >>> dets = yolo_edge.detect(frame, endpoint="http://127.0.0.1:3000")  # doctest: +SKIP
    >>> dets = yolo_edge.detect(frame, endpoint="oip+http://127.0.0.1:8000/v2/models/yolo")  # doctest: +SKIP
    >>> dets = yolo_edge.detect(frame, endpoint=["http://10.0.0.5:3000", "http://10.0.0.6:3000"])  # doctest: +SKIP
    """
    opts = dict(conf=conf, iou=iou, max_det=max_det, classes=classes)
    single = not isinstance(image, (list, tuple))
    images = [image] if single else list(image)
    if endpoint is not None:
        pool = isinstance(endpoint, (list, tuple))
        if backend != "auto" or (model is not None and not pool and not _is_oip(endpoint)):
            raise ConfigError("model= and backend= apply to local detection; with a yolo-edge endpoint= the "
                              "service's model answers: pin it with expected_sha256=Detector(model).info.sha256 "
                              "(with a list of endpoints, model= names the pool's model)")
        if pool:
            client = _shared_pool(endpoint, token, cloud_options, model=model)
        else:
            client = _shared_client(endpoint, token, cloud_options, model=model)
        results = client.detect_many(images, channels=channels, **opts)
    else:
        if cloud_options or token is not None:
            raise ConfigError(f"{sorted({*cloud_options, *(['token'] if token is not None else [])})} only apply "
                              "with endpoint=...: pass the service URL, or drop them to detect locally")
        results, _ = _shared_detector(model, backend).predict(images, channels=channels, **opts)
    return results[0] if single else results
