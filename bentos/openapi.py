"""The service's OpenAPI document, saying what ``/detect`` really takes and answers.

BentoML derives ``/docs.json`` from the API's IO descriptor and lists 400, 404 and 500
for every route. ``/detect`` parses its multipart form itself (``bentos/intake.py``)
and the Guard answers 401, 408, 413, 415, 429 and 503 before BentoML sees a request,
so the generated document would promise less than the service does and say nothing
of the answer's shape. :class:`OpenAPIDocs` serves BentoML's document with ``/detect``
and ``/metadata`` described from :mod:`yolo_edge.remote.wire`, the module that encodes them,
so a schema-driven fuzzer (Schemathesis, in ``tests/bentos/test_openapi.py``) holds
the service to it.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from yolo_edge.image_header import MIME_TYPES
from yolo_edge.remote.wire import BUDGETS_FIELD, LIMITS, FrameStatus

__all__ = ["OpenAPIDocs", "document"]

_REF = "#/components/schemas/{}"

ERROR = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong and how to fix it"},
        "status": {"type": "integer", "description": "the HTTP status, repeated"},
    },
}

_NUMBER = {"type": "number"}
FRAME_RESULT = {
    "type": "object",
    "description": "one image's answer; detections when status is ok, else error says why",
    "required": ["status", "model", "timing"],
    "properties": {
        "status": {"type": "string", "enum": [s.value for s in FrameStatus]},
        "error": {"type": "string"},
        "image_shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                        "description": "[height, width] of the uploaded image"},
        "names": {"type": "object", "additionalProperties": {"type": "string"}},
        "detections": {"type": "array", "maxItems": LIMITS.max_det, "items": {
            "type": "object",
            "required": ["xyxy", "confidence", "class_id", "label"],
            "properties": {
                "xyxy": {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4,
                         "description": "x1, y1, x2, y2 in the uploaded image's pixels"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "class_id": {"type": "integer", "minimum": 0},
                "label": {"type": "string"},
            },
        }},
        "model": {"type": "object", "required": ["name", "sha256"],
                  "properties": {"name": {"type": "string"}, "sha256": {"type": "string"}}},
        "timing": {"type": "object", "properties": {
            "queue_ms": _NUMBER, "decode_ms": _NUMBER, "inference_ms": _NUMBER, "server_ms": _NUMBER,
            "batch_frames": {"type": "integer"}}},
    },
}

SERVICE_INFO = {
    "type": "object",
    "required": ["name", "sha256", "names", "imgsz", "limits"],
    "properties": {
        "name": {"type": "string"},
        "sha256": {"type": "string"},
        "names": {"type": "object", "additionalProperties": {"type": "string"}},
        "imgsz": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "version": {"type": "string"},
        "max_batch": {"type": "integer"},
        "limits": {"type": "object", "additionalProperties": {"type": "integer", "nullable": True}},
    },
}

_STATUS_TEXT = {
    400: "the request is malformed, or an option or an image is invalid",
    401: "missing or wrong bearer token",
    408: "the request body did not arrive in time",
    413: "the body, an image or the request's pixels are above the limits",
    415: "not multipart/form-data, or an image format the service refuses",
    429: "too many requests in flight: retry after Retry-After seconds",
    500: "the service failed (see its log)",
    503: "warming up, overloaded or too many uploads arriving: retry after Retry-After seconds",
    504: "the request could not be processed in time",
}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _STATUS_TEXT[status],
                                "content": {"application/json": {"schema": {"$ref": _REF.format("Error")}}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return response


def _detect(num_classes: int, auth: bool) -> dict[str, Any]:
    id_range = {"minimum": 0, **({"maximum": num_classes - 1} if num_classes else {"maximum": LIMITS.max_class_id})}
    statuses = [400, *([401] if auth else []), 408, 413, 415, 429, 500, 503, 504]
    return {
        "tags": ["Service APIs"],
        "operationId": "detect",
        "summary": "Detect objects in 1 to %d images" % LIMITS.max_images,
        "description": "Frames of concurrent requests share model batches; each image gets its own result, "
                       "in upload order. Supported formats: " + ", ".join(sorted(MIME_TYPES.values())) + ".",
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "additionalProperties": False,
                "properties": {
                    "images": {"type": "array", "minItems": 1, "maxItems": LIMITS.max_images,
                               "items": {"type": "string", "format": "binary"}},
                    "conf": {"type": "number", "minimum": 0, "maximum": 1, "description": "default 0.25"},
                    "iou": {"type": "number", "minimum": 0, "maximum": 1, "description": "default 0.45"},
                    "max_det": {"type": "integer", "minimum": 1, "maximum": LIMITS.max_det, "description": "default 300"},
                    "classes": {"type": "array", "maxItems": LIMITS.max_classes, "items": {"type": "integer", **id_range},
                                "description": "class ids to keep, as one JSON list like [0, 2]"},
                    BUDGETS_FIELD: {
                        # no minItems: an empty list is no field at all in a multipart body
                        "type": "array", "maxItems": LIMITS.max_images,
                        "items": {"type": "number", "minimum": 0, "maximum": LIMITS.max_budget_s, "nullable": True},
                        "description": "seconds left to each image, one per image in upload order (null: no "
                                       "deadline), as one JSON list like [0.25, 0.3]; an image whose deadline has "
                                       "passed when its batch starts, or falls before the batch's expected end, is "
                                       "answered status 'expired', not computed"},
                },
            },
            "encoding": {"classes": {"contentType": "application/json"},
                         BUDGETS_FIELD: {"contentType": "application/json"}},
        }}},
        "responses": {
            "200": {"description": "one result per image",
                    "content": {"application/json": {"schema": {
                        "type": "array", "minItems": 1, "maxItems": LIMITS.max_images,
                        "items": {"$ref": _REF.format("FrameResult")}}}}},
            **{str(s): _error(s) for s in statuses},
        },
    }


def document(spec: dict[str, Any], *, num_classes: int, auth: bool) -> dict[str, Any]:
    """BentoML's generated ``spec`` with /detect, /metadata and the probes described as they behave."""
    spec = copy.deepcopy(spec)
    paths = spec.setdefault("paths", {})
    generated = paths.get("/detect", {}).get("post", {})  # keeps BentoML's x-bentoml-name for its UI
    paths["/detect"] = {"post": {**generated, **_detect(num_classes, auth)}}
    paths["/metadata"] = {"get": {
        "tags": ["Service APIs"], "operationId": "metadata", "summary": "The model and the limits of this service",
        "responses": {"200": {"description": "the model and the limits",
                              "content": {"application/json": {"schema": {"$ref": _REF.format("ServiceInfo")}}}},
                      **({"401": _error(401)} if auth else {})}}}
    for probe in ("/readyz", "/livez", "/healthz"):
        if probe in paths:
            paths[probe]["get"]["responses"]["503"] = {"description": "not ready (the model is warming up)"}
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({"Error": ERROR, "FrameResult": FRAME_RESULT, "ServiceInfo": SERVICE_INFO})
    return spec


class OpenAPIDocs:
    """ASGI middleware answering ``GET /docs.json`` with :func:`document` of BentoML's spec."""

    def __init__(self, app: Any, *, service: Any, auth: bool, path: str = "/docs.json",
                 num_classes: Callable[[], int] | None = None) -> None:
        self.app = app
        self.service = service
        self.auth = auth
        self.path = path
        self._num_classes = num_classes or self._classes_of_the_running_service
        self._body: bytes | None = None

    @staticmethod
    def _classes_of_the_running_service() -> int:
        import bentoml

        svc = bentoml.get_current_service()
        return len(svc.info.names) if svc is not None else 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        if self._body is None:
            spec = document(self.service.openapi_spec.asdict(), num_classes=self._num_classes(), auth=self.auth)
            self._body = json.dumps(spec).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self._body})
