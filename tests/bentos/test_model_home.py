"""Where the service loads its model from (issue 16): the user's model cache, or the model
baked into a built Bento, and only inside one.

`python -m bentos.bake` writes build/model_home inside the clone; a later service started
from that clone must still load from the cache `yolo-edge models list` shows. The service
is imported in a fresh interpreter from a copy of `bentos` in a temporary "clone" that the
bake wrote into, as `python -m bentos.serve` imports it there (tests/bentos/serving_probe.py).
The built-Bento side, with a real `bentoml build`, is in test_bento_build.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serving_probe import serving_model

from bentos.bake import bake
from bentos.model_home import ModelOrigin, built_bento, model_home
from yolo_edge.models.registry import model_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def baked_clone(tmp_path_factory, default_model_path):
    """A clone with the default model baked into its build/model_home, as the README says."""
    clone = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "bentos", clone / "bentos", ignore=shutil.ignore_patterns("__pycache__"))
    bake("yolov3-tiny-coco", clone / "build" / "model_home")
    return clone


def test_baking_does_not_shadow_the_user_cache(baked_clone, fall_model_path):
    # yolov8s-fall is in the user's cache (`yolo-edge models list`: fetched) but not in the bake
    assert not (baked_clone / "build" / "model_home" / "models" / "yolov8s-fall").exists()
    served = serving_model(baked_clone, "yolov8s-fall", path=[REPO])
    assert (served["path"], served["origin"]) == (str(fall_model_path), "CACHE")


def test_the_baked_model_is_not_loaded_outside_a_bento(baked_clone, default_model_path):
    served = serving_model(baked_clone, "yolov3-tiny-coco", path=[REPO])
    assert (served["path"], served["origin"]) == (str(default_model_path), "CACHE")


def _bento_layout(root: Path, bento_yaml: str | None, baked: bool) -> Path:
    src = root / "src"
    (src / "build" / "model_home" if baked else src).mkdir(parents=True)
    if bento_yaml is not None:
        (root / "bento.yaml").write_text(bento_yaml)
    return src


def test_a_built_bento_is_recognised_by_its_bento_yaml(tmp_path):
    src = _bento_layout(tmp_path / "bento", "service: bentos.service:YoloEdge\nname: yolo-edge\n", baked=True)
    assert built_bento(src) == tmp_path / "bento"
    home = model_home({}, src)
    assert (home.root, home.origin) == (src / "build" / "model_home", ModelOrigin.BENTO)


@pytest.mark.parametrize("bento_yaml", [None, "name: not-a-bento\n", "\x00\xff"])
def test_a_folder_named_src_is_not_a_bento(tmp_path, bento_yaml):
    src = _bento_layout(tmp_path / "work", bento_yaml, baked=True)
    assert built_bento(src) is None
    assert model_home({}, src).origin is ModelOrigin.CACHE


def test_a_bento_without_a_baked_model_uses_the_cache(tmp_path):
    src = _bento_layout(tmp_path / "bento", "service: bentos.service:YoloEdge\n", baked=False)
    home = model_home({}, src)
    assert (home.root, home.origin) == (None, ModelOrigin.CACHE)
    assert str(model_path("yolov3-tiny-coco").parents[2]) in home.describe()  # the cache `models list` reads


def test_yolo_edge_home_wins_everywhere(tmp_path):
    src = _bento_layout(tmp_path / "bento", "service: bentos.service:YoloEdge\n", baked=True)
    for root in (src, tmp_path / "clone"):
        home = model_home({"YOLO_EDGE_HOME": str(tmp_path / "models")}, root)
        assert (home.root, home.origin) == (tmp_path / "models", ModelOrigin.ENV)
        assert "$YOLO_EDGE_HOME" in home.describe()


def test_a_model_missing_from_the_bento_says_what_it_carries_and_how_to_add_one(tmp_path, default_model_path):
    from yolo_edge.errors import ModelNotFoundError
    from yolo_edge.models.resolve import resolve_model

    src = _bento_layout(tmp_path / "bento", "service: bentos.service:YoloEdge\n", baked=False)
    bake("yolov3-tiny-coco", src / "build" / "model_home")
    home = model_home({}, src)
    assert home.origin is ModelOrigin.BENTO
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("yolov8s-fall", home.root)
    err = home.not_found("yolov8s-fall", caught.value)
    assert isinstance(err, ModelNotFoundError)
    assert "carries only the model(s) baked into it (yolov3-tiny-coco" in str(err)
    assert "python -m bentos.bake yolov8s-fall" in str(err) and "YOLO_EDGE_HOME" in str(err)
    # outside a Bento the registry's own message (fetch it) is the right one
    assert model_home({}, tmp_path / "clone").not_found("yolov8s-fall", caught.value) is caught.value
