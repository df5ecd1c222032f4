import importlib
import subprocess
import sys

import pytest

import yolo_edge

#: What a module that needs no image decoding, model runtime or network must not load.
HEAVY = ("cv2", "onnxruntime", "onnx", "requests", "urllib3", "bentoml", "torch", "tqdm")


def test_exported_members():
    assert set(yolo_edge.__all__) == {
        "CloudClient", "Detections", "Detector", "EndpointPool", "ModelInfo", "OipClient", "StageTimings",
        "YoloEdgeError", "__version__", "detect", "errors", "load_image", "samples",
    }
    for name in yolo_edge.__all__:
        assert hasattr(yolo_edge, name)


#: Where each public name is defined: the package attribute and `from yolo_edge import <name>` are that object.
DEFINED_IN = {
    "CloudClient": "yolo_edge.remote.cloud", "Detections": "yolo_edge.types", "Detector": "yolo_edge.detector",
    "EndpointPool": "yolo_edge.remote.pool", "ModelInfo": "yolo_edge.types", "OipClient": "yolo_edge.remote.oip",
    "StageTimings": "yolo_edge.detector", "YoloEdgeError": "yolo_edge.errors", "detect": "yolo_edge.api",
    "load_image": "yolo_edge.image",
}


def _fresh(code: str) -> None:
    """Run ``code`` in a new interpreter (nothing imported yet); it fails by raising."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


def test_public_names_are_the_defining_modules_objects():
    assert set(DEFINED_IN) | {"errors", "samples", "__version__"} == set(yolo_edge.__all__)
    assert set(yolo_edge.__all__) <= set(dir(yolo_edge))
    for name, module in DEFINED_IN.items():
        assert getattr(yolo_edge, name) is getattr(importlib.import_module(module), name), name
    assert yolo_edge.errors is importlib.import_module("yolo_edge.errors")
    assert yolo_edge.samples is importlib.import_module("yolo_edge.samples")
    with pytest.raises(AttributeError, match="has no attribute 'Detecter'"):
        yolo_edge.Detecter  # noqa: B018


@pytest.mark.parametrize("name", sorted(DEFINED_IN) + ["errors", "samples", "__version__"])
def test_from_import_works_first_thing(name):
    # each name on its own, in an interpreter where nothing of yolo_edge was imported yet
    _fresh(f"from yolo_edge import {name}\nimport yolo_edge\nassert {name} is yolo_edge.{name}\n"
           f"assert '{name}' in dir(yolo_edge)")


def test_submodules_still_work_as_attributes():
    # `import yolo_edge` once imported every part; code that reached one through the
    # package without importing it keeps working
    _fresh("import yolo_edge\nassert callable(yolo_edge.api.close_clients)\nassert yolo_edge.remote.wire.LIMITS\n"
           "import yolo_edge.api\nassert yolo_edge.api.detect is yolo_edge.detect")


@pytest.mark.parametrize("module", ["yolo_edge", "yolo_edge.remote.wire", "yolo_edge.errors", "yolo_edge.remote.health"])
def test_light_modules_load_no_opencv_runtime_or_http_client(module):
    _fresh(f"import sys\nimport {module}\n"
           f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy")


def test_errors_share_one_root():
    from yolo_edge import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.YoloEdgeError)


def test_import_is_light_and_side_effect_free(tmp_path):
    code = (
        "import sys, logging, yolo_edge, yolo_edge.cli, yolo_edge.models, yolo_edge.export, yolo_edge.remote.endpoint\n"
        "import yolo_edge.remote.oip, yolo_edge.remote.pool, yolo_edge.triton.export, yolo_edge.triton.python_model\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'bentoml', 'tensorrt', 'onnx', 'requests') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not logging.getLogger().handlers, 'import added log handlers'\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "YOLO_EDGE_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert not any(tmp_path.iterdir()), "importing wrote files"
