"""The agent's detection options (classes by name) on both routes, wall-clock times, --version."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from edge_agent.cli import CloudWithOptions, build_parser, config_from_args, main
from edge_agent.config import AgentConfig, load_config
from edge_agent.frames import FrameResult, Outcome, Route


def test_results_carry_wall_clock_times():
    r = FrameResult(seq=3, outcome=Outcome.LOCAL, route=Route.LOCAL, captured_at=100.0, deadline=100.5,
                    released_at=100.25)
    assert "captured_wall" not in r.to_dict()  # no offset known: monotonic times only
    now = time.time()
    r.wall_offset_s = now - 100.0
    d = r.to_dict()
    captured = datetime.fromisoformat(d["captured_wall"].replace("Z", "+00:00")).timestamp()
    finished = datetime.fromisoformat(d["finished_wall"].replace("Z", "+00:00")).timestamp()
    assert d["captured_wall"].endswith("Z") and captured == pytest.approx(now, abs=1e-5)
    assert finished - captured == pytest.approx(0.25, abs=1e-5) and d["captured_at"] == 100.0


def test_classes_setting_from_file_and_flags(tmp_path):
    assert AgentConfig(classes="person, bus").classes == ("person", "bus")
    assert AgentConfig(classes=[0, "bus"]).classes == (0, "bus")
    assert AgentConfig().classes is None
    conf = tmp_path / "agent.toml"
    conf.write_text('[agent]\nsource = "photos"\nclasses = ["person", 5]\n')
    assert load_config(conf).classes == ("person", 5)
    args = build_parser().parse_args(["run", "--config", str(conf), "--classes", "bus,tie"])
    assert config_from_args(args).classes == ("bus", "tie")


def test_bad_class_name_is_a_clear_error(capsys, tmp_path, default_model_path):
    assert main(["run", "--source", str(tmp_path), "--classes", "persn"]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'persn'" in err and "did you mean person" in err and "Traceback" not in err


def test_cloud_requests_carry_the_agents_options():
    class Client:
        expected_sha256 = None
        endpoint = "http://127.0.0.1:1"

        def __init__(self):
            self.calls = []

        def detect_many(self, images, **kwargs):
            self.calls.append(kwargs)
            return [], []

        def wake(self, wait_s=0):
            return wait_s == 3

        def verify_model(self):
            return {"sha256": "x"}

        def close(self):
            self.calls.append("closed")

    client = Client()
    cloud = CloudWithOptions(client, conf=0.4, iou=0.5, classes=[0, 5])
    cloud.detect_many(["img"], return_meta=True)
    assert client.calls == [{"conf": 0.4, "iou": 0.5, "classes": [0, 5], "return_meta": True}]
    assert cloud.wake(wait_s=3) and cloud.verify_model() == {"sha256": "x"}
    cloud.close()
    assert client.calls[-1] == "closed"


def test_version(capsys):
    import yolo_edge

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"edge-agent {yolo_edge.__version__} (Python ")
