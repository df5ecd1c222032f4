"""Result and model description types shared by the SDK, the service and the agent."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .coco import coco91_ids
from .errors import ConfigError

__all__ = ["Detections", "ModelInfo"]


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image, in that image's pixel coordinates.

    ``xyxy`` is ``float32 [N, 4]`` (x1, y1, x2, y2), ``confidence`` ``float32 [N]`` and
    ``class_id`` ``int64 [N]``; ``names`` maps class ids to labels. Rows are sorted by
    confidence, highest first.

    >>> d = Detections(xyxy=[[10, 20, 110, 220]], confidence=[0.9], class_id=[0],
    ...                names={0: "person"}, image_shape=(480, 640))
    >>> len(d), d.labels
    (1, ['person'])
    >>> Detections.from_dict(d.to_dict()) == d
    True
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str] = field(default_factory=dict)
    image_shape: tuple[int, int] | None = None  # (height, width) of the source image

    def __post_init__(self) -> None:
        try:
            xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4) if np.size(self.xyxy) else np.zeros((0, 4), np.float32)
            conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
            cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"Detections expects numbers: xyxy [N, 4], confidence [N] and class_id [N] ({exc})") from exc
        if not (len(xyxy) == len(conf) == len(cls)):
            raise ConfigError(
                f"Detections fields must have the same length, got xyxy={len(xyxy)}, "
                f"confidence={len(conf)}, class_id={len(cls)}"
            )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)
        object.__setattr__(self, "names", {int(k): str(v) for k, v in dict(self.names).items()})
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", (int(self.image_shape[0]), int(self.image_shape[1])))

    @classmethod
    def empty(cls, names: Mapping[int, str] | None = None, image_shape: tuple[int, int] | None = None) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names or {}, image_shape)

    def __len__(self) -> int:
        return len(self.class_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.confidence, other.confidence)
            and np.array_equal(self.class_id, other.class_id)
            and dict(self.names) == dict(other.names)
            and self.image_shape == other.image_shape
        )

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        return f"Detections({len(self)}: {summary or 'none'})"

    @property
    def labels(self) -> list[str]:
        return [self.names.get(int(c), str(int(c))) for c in self.class_id]

    def __getitem__(self, index: Any) -> "Detections":
        """Select rows with an int, slice, index array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], self.names, self.image_shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: one entry per detection plus the class names."""
        return {
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "names": {str(k): v for k, v in self.names.items()},
            "detections": [
                {
                    "xyxy": [round(float(v), 3) for v in box],
                    "confidence": round(float(conf), 6),
                    "class_id": int(cls),
                    "label": self.names.get(int(cls), str(int(cls))),
                }
                for box, conf, cls in zip(self.xyxy, self.confidence, self.class_id)
            ],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Detections":
        """Inverse of :meth:`to_dict` (boxes keep the 3-decimal rounding)."""
        try:
            rows = data["detections"]
            names = {int(k): v for k, v in (data.get("names") or {}).items()}
            shape = data.get("image_shape")
            return cls(
                xyxy=np.array([r["xyxy"] for r in rows], np.float32).reshape(-1, 4),
                confidence=np.array([r["confidence"] for r in rows], np.float32),
                class_id=np.array([r["class_id"] for r in rows], np.int64),
                names=names,
                image_shape=tuple(shape) if shape else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                "expected a dict like Detections.to_dict() returns: "
                "{'detections': [{'xyxy': [x1, y1, x2, y2], 'confidence': c, 'class_id': k}], 'names': {...}}"
            ) from exc

    def to_coco(self, image_id: int = 0, category_ids: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
        """COCO results format: ``bbox`` as [x, y, width, height], ``score`` and ``category_id``.

        ``category_ids`` maps class ids to category ids. By default a COCO-80 model (its
        names are COCO's 80 classes: the default model, any Ultralytics COCO export) gets
        COCO's own 91-id scheme, so person is 1 and bus 6, as COCO's annotations and
        evaluation tools expect; any other model keeps its own class ids. Pass
        ``{i: i for i in dets.names}`` to keep a COCO model's 0-79 ids.

        >>> d = Detections(xyxy=[[10, 20, 110, 220]], confidence=[0.9], class_id=[0], names={0: "Normal", 1: "Fall"})
        >>> d.to_coco(image_id=7)
        [{'image_id': 7, 'category_id': 0, 'bbox': [10.0, 20.0, 100.0, 200.0], 'score': 0.9}]
        """
        mapping = coco91_ids(self.names) if category_ids is None else category_ids
        out = []
        for box, conf, cls in zip(self.xyxy, self.confidence, self.class_id):
            x1, y1, x2, y2 = (float(v) for v in box)
            try:
                cat = int(mapping[int(cls)]) if mapping is not None else int(cls)
            except KeyError:
                raise ConfigError(
                    f"category_ids has no entry for class id {int(cls)} ({self.names.get(int(cls), '?')}): "
                    "map every class the detections contain"
                ) from None
            out.append({
                "image_id": image_id,
                "category_id": cat,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(conf), 6),
            })
        return out

    def to_supervision(self) -> Any:
        """The same detections as a ``supervision.Detections`` (needs ``yolo-edge[supervision]``).

        Boxes, confidences and class ids carry over; ``data["class_name"]`` holds the labels,
        as supervision's own model connectors set it.

        >>> d = Detections(xyxy=[[10, 20, 110, 220]], confidence=[0.9], class_id=[5], names={5: "bus"})
        >>> sv_dets = d.to_supervision()
        >>> sv_dets.data["class_name"].tolist()
        ['bus']
        """
        try:
            import supervision as sv
        except ImportError as exc:
            raise ConfigError(
                "Detections.to_supervision() needs the supervision package: pip install 'yolo-edge[supervision]'"
            ) from exc
        return sv.Detections(
            xyxy=self.xyxy.copy(),
            confidence=self.confidence.copy(),
            class_id=self.class_id.copy(),
            data={"class_name": np.array(self.labels, dtype=str)},
        )

    def draw(self, image: np.ndarray, *, thickness: int = 2, font_scale: float = 0.5) -> np.ndarray:
        """Return a copy of ``image`` (HxWx3 uint8, any channel order) with boxes and labels."""
        import cv2  # decoding dependency of the core install

        canvas = np.ascontiguousarray(image).copy()
        for box, conf, cls in zip(self.xyxy.round().astype(int), self.confidence, self.class_id):
            color = _palette(int(cls))
            x1, y1, x2, y2 = (int(v) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            text = f"{self.names.get(int(cls), int(cls))} {conf:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = max(y1, th + base)
            cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), color, -1)
            cv2.putText(canvas, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas


def _palette(i: int) -> tuple[int, int, int]:
    colors = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
              (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
              (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0))
    return colors[i % len(colors)]


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a loaded model is: name, pinned sha256, classes and input geometry."""

    name: str
    sha256: str
    path: str
    names: Mapping[int, str]
    imgsz: tuple[int, int]  # (height, width) the model expects
    stride: int = 32
    output_format: str = "auto"  # "anchor_free", "anchor_based", "nms", or "auto"
    dynamic_batch: bool = False
    version: str = ""
    task: str = "detect"

    def class_ids(self, classes: str | Iterable[int | str] | None, *, check_ids: bool = False) -> list[int] | None:
        """Class ids for ``classes`` given as ids, names (any case) or a comma-separated string.

        None keeps every class. An unknown name raises :class:`ConfigError` listing what the
        model has; so does an id the model does not have with ``check_ids``, otherwise such
        an id is kept and simply matches nothing.

        >>> info = ModelInfo(name="m", sha256="", path="", names={0: "person", 5: "bus"}, imgsz=(640, 640))
        >>> info.class_ids("bus,Person"), info.class_ids([0, "5", 7])
        ([5, 0], [0, 5, 7])
        """
        if classes is None:
            return None
        items = classes.split(",") if isinstance(classes, str) else list(classes)
        by_name = {name.lower(): i for i, name in self.names.items()}
        ids: list[int] = []
        for item in items:
            key = str(item).strip()
            if isinstance(item, (int, np.integer)) or key.isdigit():
                cid = int(key)
                if check_ids and self.names and cid not in self.names:
                    raise ConfigError(f"class id {cid} is not one of {self.name}'s classes: expected "
                                      f"{min(self.names)}-{max(self.names)} or a name, e.g. {self._some_names()}")
            elif key.lower() in by_name:
                cid = by_name[key.lower()]
            else:
                close = difflib.get_close_matches(key.lower(), list(by_name), n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"unknown class {key!r} for model {self.name}: {hint}expected a class id or "
                                  f"one of its {len(self.names)} names, e.g. {self._some_names()}")
            if cid not in ids:
                ids.append(cid)
        return ids

    def _some_names(self) -> str:
        names = list(self.names.values())
        return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "names": {str(k): v for k, v in self.names.items()},
            "imgsz": list(self.imgsz),
            "stride": self.stride,
            "output_format": self.output_format,
            "dynamic_batch": self.dynamic_batch,
            "version": self.version,
            "task": self.task,
        }


def as_names(names: Mapping[Any, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    return {i: str(v) for i, v in enumerate(names)}
