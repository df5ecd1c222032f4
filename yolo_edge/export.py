"""Export an Ultralytics checkpoint to ONNX and register it (needs ``yolo-edge[export]``)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .errors import BackendError, ConfigError, ModelError
from .models.fetch import sha256_file
from .models.registry import LocalEntry, cache_dir, register_local
from .models.resolve import parse_metadata

__all__ = ["export_ultralytics", "ultralytics_settings_dir"]

log = logging.getLogger(__name__)


def ultralytics_settings_dir(root: str | os.PathLike | None = None) -> Path:
    """Where Ultralytics keeps its settings: ``$YOLO_CONFIG_DIR``, set to the model cache's
    ``ultralytics/`` when unset (it takes effect only before Ultralytics is first imported)."""
    if not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = str(cache_dir(root) / "ultralytics")
        log.info("Ultralytics settings go to %s (set YOLO_CONFIG_DIR to choose)", os.environ["YOLO_CONFIG_DIR"])
    return Path(os.environ["YOLO_CONFIG_DIR"])


def export_ultralytics(
    weights: str | os.PathLike,
    *,
    imgsz: int = 640,
    name: str | None = None,
    opset: int | None = None,
    dynamic: bool = False,
    nms: bool = False,
    nms_conf: float = 0.25,
    nms_iou: float = 0.45,
    out_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> LocalEntry:
    """Export ``weights`` (a ``.pt`` checkpoint or a model ``.yaml``) with Ultralytics.

    The ONNX lands in the model cache (or ``out_dir``), and an entry with its sha256,
    class names, image size and opset is written to the local registry, so that
    ``Detector(name)`` loads it and verifies it on every load.

    With ``nms=True`` the graph ends in NMS (output ``[B, 300, 6]``), and ``nms_conf`` /
    ``nms_iou`` are baked into it: at run time a higher ``conf`` still filters, but a
    lower one cannot bring boxes back, and ``iou`` has no effect. The defaults are
    ``Detector``'s own, so both exports of one checkpoint give the same detections.

    Ultralytics keeps its settings in ``$YOLO_CONFIG_DIR`` (by default ``~/.config/Ultralytics``):
    unless that is set, it is set here to ``ultralytics/`` in the model cache, before
    Ultralytics is imported, so an export writes nothing outside the cache and the
    checkpoint's folder (where Ultralytics writes the ONNX before it is moved to the cache).
    """
    ultralytics_settings_dir(root)
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise BackendError("exporting needs Ultralytics: pip install 'yolo-edge[export]'") from exc
    try:
        import onnx
    except ImportError as exc:
        raise BackendError("exporting needs the onnx package: pip install 'yolo-edge[export]'") from exc
    src = Path(weights)
    if src.suffix not in (".pt", ".yaml", ".yml"):
        raise ConfigError(f"expected an Ultralytics .pt checkpoint or model .yaml, got {src}")
    if src.suffix == ".pt" and not src.is_file():
        raise ModelError(f"checkpoint {src} not found (Ultralytics would try to download it; yolo-edge never does)")
    name = name or src.stem
    if not (0.0 <= nms_conf < 1.0 and 0.0 < nms_iou <= 1.0):
        raise ConfigError(f"need 0 <= nms_conf < 1 and 0 < nms_iou <= 1, got nms_conf={nms_conf}, nms_iou={nms_iou}")
    kwargs = dict(format="onnx", imgsz=imgsz, dynamic=dynamic, nms=nms, simplify=True)
    if nms:
        kwargs.update(conf=nms_conf, iou=nms_iou)
    if opset:
        kwargs["opset"] = opset
    try:
        exported = Path(YOLO(str(src), task="detect").export(**kwargs))
    except Exception as exc:  # Ultralytics raises many untyped errors
        raise ModelError(f"Ultralytics export of {src} failed: {exc}") from exc
    dest_dir = Path(out_dir) if out_dir else cache_dir(root) / "exports"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{name}.onnx"
    if exported.resolve() != dest.resolve():
        shutil.move(str(exported), dest)
    model = onnx.load(str(dest), load_external_data=False)
    meta = parse_metadata({p.key: p.value for p in model.metadata_props})
    names = meta.get("names", {})
    sz = meta.get("imgsz", [imgsz, imgsz])
    entry = LocalEntry(
        name=name,
        path=str(dest.resolve()),
        sha256=sha256_file(dest),
        names={int(k): str(v) for k, v in names.items()},
        imgsz=(int(sz[0]), int(sz[1])),
        opset=int(model.opset_import[0].version),
        source=str(src.resolve()) if src.exists() else str(src),
    )
    register_local(entry, root)
    log.info("registered %s (%s) -> %s", name, entry.sha256[:12], dest)
    return entry
