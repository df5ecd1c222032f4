"""COCO's category ids: the 80 detection classes live in a 91-id scheme (person is 1).

Models trained on COCO number their 80 classes 0-79; COCO's annotation files and its
evaluation tools use the original ids 1-90 with gaps. :func:`coco91_ids` recognizes a
COCO-80 model by its class names (Ultralytics' spelling or Darknet's ``coco.names``) and
gives the mapping; for any other model it returns None, and ids stay the model's own.

>>> ids = coco91_ids({0: "person", 1: "bicycle", **{i: n for i, n in enumerate(COCO80_NAMES) if i > 1}})
>>> ids[0], ids[5], ids[79]
(1, 6, 90)
>>> coco91_ids({0: "Normal", 1: "Fall"}) is None
True
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["COCO80_NAMES", "COCO80_TO_91", "coco91_ids"]

#: the 80 class names in model order (0-79), as COCO's annotation files spell them
COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

#: COCO category id of each of the 80 classes (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused)
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)

# Darknet's coco.names (and so the default model) spells six classes the old VOC way
_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
            "diningtable": "dining table", "tvmonitor": "tv"}


def coco91_ids(names: Mapping[int, str]) -> dict[int, int] | None:
    """``{class id: COCO category id}`` when ``names`` are COCO's 80 classes in order, else None."""
    if sorted(names) != list(range(len(COCO80_NAMES))):
        return None
    for i, expected in enumerate(COCO80_NAMES):
        name = names[i].strip().lower()
        if _ALIASES.get(name, name) != expected:
            return None
    return dict(enumerate(COCO80_TO_91))
