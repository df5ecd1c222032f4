import json
import subprocess
import sys
from pathlib import Path

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
    with pytest.raises(ConfigError, match="no entry for class id 5 \\(bus\\)"):
        d.to_coco(category_ids={0: 1})
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


def _coco_dets(names):
    return Detections(xyxy=[[10, 20, 110, 220], [5, 5, 15, 25], [1, 1, 2, 2]], confidence=[0.9, 0.4, 0.3],
                      class_id=[0, 5, 79], names=names, image_shape=(480, 640))


def test_coco_model_gets_cocos_category_ids(darknet_files):
    """The default model (Darknet's coco.names spelling) and Ultralytics' spelling both map: person is 1."""
    from yolo_edge.coco import COCO80_NAMES

    darknet_names = dict(enumerate(darknet_files[2]))
    for names in (darknet_names, dict(enumerate(COCO80_NAMES))):
        assert [r["category_id"] for r in _coco_dets(names).to_coco()] == [1, 6, 90]
    keep = _coco_dets(darknet_names).to_coco(category_ids={i: i for i in darknet_names})
    assert [r["category_id"] for r in keep] == [0, 5, 79]
    renamed = {**darknet_names, 5: "coach"}  # not COCO's classes any more: ids stay the model's own
    assert [r["category_id"] for r in _coco_dets(renamed).to_coco()] == [0, 5, 79]


def test_coco_table_matches_ultralytics():
    """An independent source for the 80 -> 91 table and the names (ultralytics, from the [export] extra)."""
    import yaml

    converter = pytest.importorskip("ultralytics.data.converter")
    from yolo_edge.coco import COCO80_NAMES, COCO80_TO_91

    assert list(COCO80_TO_91) == converter.coco80_to_coco91_class()
    coco_yaml = Path(converter.__file__).resolve().parents[1] / "cfg" / "datasets" / "coco.yaml"
    assert list(yaml.safe_load(coco_yaml.read_text())["names"].values()) == list(COCO80_NAMES)


def test_to_supervision_round_trip_and_annotate():
    sv = pytest.importorskip("supervision")
    d = _dets()
    s = d.to_supervision()
    assert isinstance(s, sv.Detections) and len(s) == 2
    np.testing.assert_array_equal(s.xyxy, d.xyxy)
    np.testing.assert_array_equal(s.confidence, d.confidence)
    np.testing.assert_array_equal(s.class_id, d.class_id)
    assert list(s.data["class_name"]) == ["person", "bus"]
    assert len(d[d.confidence > 0.5].to_supervision()) == 1 and len(Detections.empty().to_supervision()) == 0
    frame = np.zeros((480, 640, 3), np.uint8)
    drawn = sv.BoxAnnotator().annotate(frame.copy(), s)  # supervision's own tools take it as is
    assert drawn[20, 60].any() and not drawn[300, 300].any()


def test_supervision_is_imported_only_when_asked():
    code = "import sys, yolo_edge; yolo_edge.Detections.empty().to_dict(); assert 'supervision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_class_ids_by_name_or_id():
    from yolo_edge import ModelInfo

    info = ModelInfo(name="m", sha256="", path="", names={0: "person", 1: "bicycle", 5: "bus"}, imgsz=(640, 640))
    assert info.class_ids(None) is None
    assert info.class_ids(["Bus", "0", 1, "bus"]) == [5, 0, 1]
    assert info.class_ids("person, bus") == [0, 5]
    with pytest.raises(ConfigError, match="unknown class 'persn'.*did you mean person"):
        info.class_ids(["persn"])
    assert info.class_ids([7]) == [7]  # per-call ids stay as given: they match nothing
    with pytest.raises(ConfigError, match="class id 7 is not one of m's classes: expected 0-5"):
        info.class_ids([7], check_ids=True)
