import json

import numpy as np
import pytest

from yolo_edge import Detections
from yolo_edge.errors import ConfigError


def _dets():
    return Detections(
        xyxy=[[10, 20, 110, 220], [5, 5, 15, 25]], confidence=[0.9, 0.4], class_id=[0, 5],
        names={0: "person", 5: "bus"}, image_shape=(480, 640),
    )


def test_validation_and_dtypes():
    d = _dets()
    assert d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64 and len(d) == 2
    with pytest.raises(ConfigError, match="same length"):
        Detections(xyxy=[[0, 0, 1, 1]], confidence=[0.5, 0.6], class_id=[0])


def test_json_roundtrip_and_coco():
    d = _dets()
    assert Detections.from_dict(json.loads(d.to_json())) == d
    coco = d.to_coco(image_id=7)
    assert coco[0] == {"image_id": 7, "category_id": 0, "bbox": [10.0, 20.0, 100.0, 200.0], "score": 0.9}
    assert d.to_coco(category_ids={0: 1, 5: 6})[1]["category_id"] == 6
    with pytest.raises(ConfigError, match="expected a dict"):
        Detections.from_dict({"boxes": []})


def test_indexing_and_empty():
    d = _dets()
    assert d[d.confidence > 0.5].labels == ["person"]
    assert d[1].labels == ["bus"]
    assert len(Detections.empty()) == 0 and "none" in repr(Detections.empty())


def test_draw_changes_only_a_copy():
    img = np.zeros((480, 640, 3), np.uint8)
    out = _dets().draw(img)
    assert img.sum() == 0 and out.sum() > 0 and out.shape == img.shape
