"""Where the service loads its model from, decided once and said in the log.

Three places, in this order:

1. ``$YOLO_EDGE_HOME`` when it is set: the operator said so.
2. The model baked into the Bento by ``python -m bentos.bake``, but only when the service
   runs from a built Bento: BentoML keeps a Bento's sources in ``<bento>/src`` beside the
   Bento's ``bento.yaml`` (a local ``bentoml serve yolo-edge:latest`` and the container,
   ``/home/bentoml/bento``, alike), and the bake is in ``src/build/model_home``.
3. Otherwise the user's model cache, the one ``yolo-edge models list`` shows
   (``~/.cache/yolo-edge``).

A ``build/model_home`` left in a clone by ``python -m bentos.bake`` is never read by a
service run from that clone: baking changes what the Bento carries, not what
``python -m bentos.serve`` loads.

>>> from pathlib import Path
>>> model_home({}, Path("/nonexistent/clone")).origin is ModelOrigin.CACHE
True
>>> model_home({"YOLO_EDGE_HOME": "/srv/models"}, Path("/nonexistent/clone")).root
PosixPath('/srv/models')
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from bentos.bake import BAKE_HOME
from yolo_edge.errors import ModelNotFoundError
from yolo_edge.models.registry import DEFAULT_MODEL, cache_dir

__all__ = ["ModelHome", "ModelOrigin", "SOURCE_ROOT", "built_bento", "model_home"]

#: The root of the sources this module runs from: a clone, or a Bento's ``src``.
SOURCE_ROOT = Path(__file__).resolve().parent.parent

# BentoML's layout of a built Bento: bento.yaml (a top-level `service:` entry) beside src/
_BENTO_YAML = "bento.yaml"
_BENTO_SOURCES = "src"
_SERVICE_ENTRY = re.compile(r"^service:\s*\S", re.M)


class ModelOrigin(enum.Enum):
    ENV = "$YOLO_EDGE_HOME"
    BENTO = "the model baked into this Bento"
    CACHE = "the user's model cache"


@dataclass(frozen=True)
class ModelHome:
    """Where pinned models are looked up (``root``; None: the registry's own default) and why."""

    root: Path | None
    origin: ModelOrigin

    def describe(self) -> str:
        return f"{self.origin.value} ({self.root if self.root is not None else cache_dir()})"

    def not_found(self, model: str | None, exc: ModelNotFoundError) -> ModelNotFoundError:
        """The error to raise when ``model`` is not where this home says: inside a Bento, say
        what the Bento carries and how to serve another model (the registry's own message
        says to fetch it, which a Bento's image cannot)."""
        if self.origin is not ModelOrigin.BENTO or self.root is None:
            return exc
        models = self.root / "models"
        baked = sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
        name = model or DEFAULT_MODEL
        return ModelNotFoundError(
            f"{exc}. This Bento carries only the model(s) baked into it ({', '.join(baked) or 'none'}, in "
            f"{self.root}): bake {name!r} in (`python -m bentos.bake {name}` before `bentoml build`), or set "
            "YOLO_EDGE_HOME to a folder that has it")


def built_bento(source_root: Path) -> Path | None:
    """The built Bento whose sources ``source_root`` is, or None (a clone, an installed copy)."""
    if source_root.name != _BENTO_SOURCES:
        return None
    info = source_root.parent / _BENTO_YAML
    try:
        text = info.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return source_root.parent if _SERVICE_ENTRY.search(text) else None


def model_home(env: Mapping[str, str], source_root: Path = SOURCE_ROOT) -> ModelHome:
    """Where the service run from ``source_root`` with environment ``env`` loads its model."""
    home = env.get("YOLO_EDGE_HOME")
    if home:
        return ModelHome(Path(home), ModelOrigin.ENV)
    baked = source_root / BAKE_HOME  # bentofile.yaml includes it
    if built_bento(source_root) is not None and baked.is_dir():
        return ModelHome(baked, ModelOrigin.BENTO)
    return ModelHome(None, ModelOrigin.CACHE)
