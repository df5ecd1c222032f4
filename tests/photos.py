"""Real photos available offline: the fetched samples, and scikit-image's (the [test] extra).

scikit-image is found without importing it (its data files ship in the wheel), so a
missing install only shortens the list.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["skimage_data", "skimage_photos"]

#: Photos with everyday objects (people, a cat, a cup, a motorbike...), and a gray one.
PHOTO_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "camera.png",
               "hubble_deep_field.jpg", "retina.jpg")


def skimage_data() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def skimage_photos() -> list[Path]:
    folder = skimage_data()
    return [folder / name for name in PHOTO_NAMES if folder and (folder / name).is_file()]
