import subprocess
import sys

import yolo_edge


def test_exported_members():
    assert set(yolo_edge.__all__) == {
        "CloudClient", "Detections", "Detector", "EndpointPool", "ModelInfo", "OipClient", "StageTimings",
        "YoloEdgeError", "__version__", "detect", "errors", "load_image", "samples",
    }
    for name in yolo_edge.__all__:
        assert hasattr(yolo_edge, name)


def test_errors_share_one_root():
    from yolo_edge import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.YoloEdgeError)


def test_import_is_light_and_side_effect_free(tmp_path):
    code = (
        "import sys, logging, yolo_edge, yolo_edge.cli, yolo_edge.models, yolo_edge.export, yolo_edge.endpoint\n"
        "import yolo_edge.oip, yolo_edge.pool, yolo_edge.triton.export, yolo_edge.triton.python_model\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'bentoml', 'tensorrt', 'onnx', 'requests') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not logging.getLogger().handlers, 'import added log handlers'\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "YOLO_EDGE_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert not any(tmp_path.iterdir()), "importing wrote files"
