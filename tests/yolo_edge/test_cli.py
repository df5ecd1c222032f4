import json
import shutil
import subprocess
import sys

import cv2
import pytest

import yolo_edge

pytestmark = pytest.mark.integration  # the CLIs as subprocesses on real images


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "yolo_edge.cli", *args], capture_output=True, text=True)


def test_detect_json_and_save(default_model_path, bus_jpg, zidane_jpg, tmp_path):
    r = _cli("detect", str(bus_jpg), "--json")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)  # one JSON shape: a list, even for one image
    assert out["model"] == "yolov3-tiny-coco" and any(d["label"] == "person" for d in out["detections"])
    assert out["image"] == str(bus_jpg) and out["frame"] is None
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


def test_unknown_model_exit_code(bus_jpg):
    r = _cli("detect", str(bus_jpg), "--model", "nope")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_models_list(default_model_path):
    r = _cli("models", "list")
    assert r.returncode == 0 and "yolov3-tiny-coco" in r.stdout and "(default)" in r.stdout


@pytest.fixture
def photos(tmp_path, sample_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_photos:
        shutil.copy(p, folder)
    return folder


def test_detect_folder_glob_and_missing(default_model_path, photos, tmp_path):
    r = _cli("detect", str(photos), "--json")
    assert r.returncode == 0, r.stderr
    assert [rec["image"] for rec in json.loads(r.stdout)] == [str(photos / "bus.jpg"), str(photos / "zidane.jpg")]
    r = _cli("detect", str(photos / "*.jpg"), str(tmp_path / "nope"), "--json")  # a pattern the shell left alone
    assert r.returncode == 1 and "Traceback" not in r.stderr
    records = json.loads(r.stdout)
    assert records[0] == {"image": str(tmp_path / "nope"), "frame": None, "time_s": None,
                          "error": "no such file or folder"}
    assert [rec["image"] for rec in records[1:]] == [str(photos / "bus.jpg"), str(photos / "zidane.jpg")]
    r = _cli("detect", str(tmp_path / "*.gif"))
    assert r.returncode == 2 and "no file matches this pattern" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = _cli("detect", str(tmp_path / "empty"))
    assert r.returncode == 2 and "folder has no image or video files" in r.stderr


def test_detect_video_every_nth_frame(default_model_path, bus_jpg, tmp_path):
    frame = cv2.resize(cv2.imread(str(bus_jpg)), (320, 432))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 432))
    for _ in range(7):
        writer.write(frame)
    writer.release()
    r = _cli("detect", str(clip), "--every", "3", "--json", "--save", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [(rec["frame"], rec["time_s"]) for rec in records] == [(0, 0.0), (3, 0.3), (6, 0.6)]
    assert all(any(d["label"] == "bus" for d in rec["detections"]) for rec in records)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"clip_{i:06d}.{ext}" for i in (0, 3, 6) for ext in ("jpg", "json")]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    r = _cli("detect", str(broken), str(bus_jpg))
    assert r.returncode == 1 and "cannot open video" in r.stderr and "bus.jpg: " in r.stdout


def test_detect_classes_by_name_or_id(default_model_path, bus_jpg):
    for classes in (["bus"], ["5"], ["person,bus"], ["person", "5"]):
        r = _cli("detect", str(bus_jpg), "--json", "--classes", *classes)
        assert r.returncode == 0, r.stderr
        labels = {d["label"] for d in json.loads(r.stdout)[0]["detections"]}
        assert labels == ({"bus"} if classes in (["bus"], ["5"]) else {"person", "bus"})
    r = _cli("detect", str(bus_jpg), "--classes", "buss")
    assert r.returncode == 2 and "unknown class 'buss'" in r.stderr and "did you mean bus" in r.stderr


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(f"yolo-edge {yolo_edge.__version__} (Python ")


def test_samples_command_copies_the_photos(sample_photos, tmp_path):
    r = _cli("samples", str(tmp_path / "photos"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["bus.jpg", "zidane.jpg"]
    assert (tmp_path / "photos" / "bus.jpg").read_bytes() == sample_photos[0].read_bytes()
