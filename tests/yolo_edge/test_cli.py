import json
import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "yolo_edge.cli", *args], capture_output=True, text=True)


def test_detect_json_and_save(default_model_path, bus_jpg, zidane_jpg, tmp_path):
    r = _cli("detect", str(bus_jpg), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "yolov3-tiny-coco" and any(d["label"] == "person" for d in out["detections"])
    r = _cli("detect", str(bus_jpg), str(zidane_jpg), "--save", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"bus.jpg", "bus.json", "zidane.jpg", "zidane.json"}
    assert "detect" in r.stderr  # the progress bar


def test_bad_file_is_reported_not_a_traceback(default_model_path, bus_jpg, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    r = _cli("detect", str(bad), str(bus_jpg))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "could not decode" in r.stderr
    assert "bus.jpg: " in r.stdout  # the good file was still processed


def test_unknown_model_exit_code():
    r = _cli("detect", "x.jpg", "--model", "nope")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_models_list(default_model_path):
    r = _cli("models", "list")
    assert r.returncode == 0 and "yolov3-tiny-coco" in r.stdout and "(default)" in r.stdout
