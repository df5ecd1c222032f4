"""The agent's detection options (classes by name) on both routes, wall-clock times, --version."""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from edge_agent.cli import CloudWithOptions, build_parser, config_from_args, main
from edge_agent.config import AgentConfig, load_config
from edge_agent.core.frames import FrameResult, Outcome, Route
from yolo_edge.errors import ConfigError


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


def test_cloud_endpoints_from_urls_tables_and_repeated_flags(tmp_path):
    from edge_agent.config import CloudEndpoint
    from yolo_edge.errors import ConfigError

    one = AgentConfig(cloud="http://user:secret@gpu-1:3000/?x=1")
    assert [e.url for e in one.endpoints] == ["http://user:secret@gpu-1:3000/?x=1"]
    assert one.endpoints[0].name == "http://gpu-1:3000"  # no credentials or query in logs and labels
    conf = tmp_path / "pool.toml"
    conf.write_text('[agent]\nsource = "photos"\nmax_fails = 2\nfail_timeout_s = 1.5\ncloud = [\n'
                    '  "http://gpu-1:3000",\n  {url = "http://gpu-2:3000", weight = 3, max_batch = 4},\n'
                    '  {url = "oip+http://triton:8000/v2/models/yolo", backup = true},\n]\n')
    cfg = load_config(conf)
    specs = cfg.core().endpoints
    assert [(s.name, s.weight, s.backup, s.max_batch) for s in specs] == [
        ("http://gpu-1:3000", 1.0, False, None), ("http://gpu-2:3000", 3, False, 4),
        ("oip+http://triton:8000/v2/models/yolo", 1.0, True, None)]
    assert cfg.core().health.max_fails == 2 and cfg.core().health.fail_timeout_s == 1.5
    args = build_parser().parse_args(["run", "--source", "x", "--cloud", "http://a:1", "--cloud", "http://b:2"])
    assert [e.name for e in config_from_args(args).endpoints] == ["http://a:1", "http://b:2"]
    assert AgentConfig(cloud="http://a:1", mode="local").endpoints == ()
    for bad, match in [(["http://a:1", "http://a:1"], "must differ"), ("ftp://a", "the scheme must be one of"),
                       ({"url": "http://a:1", "wieght": 2}, "unknown key"), ({"weight": 2}, "no url"),
                       ({"url": "http://a:1", "weight": -1}, "weight must be a positive number"), (7, "a URL or a table")]:
        with pytest.raises(ConfigError, match=match):
            AgentConfig(cloud=bad).core()
    assert isinstance(CloudEndpoint.parse("http://a:1"), CloudEndpoint)


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:99999", "port 99999 is out of range"),
    ("http://127.0.0.1:0", "port 0 is out of range"),
    ("http://[::1", "an IPv6 address opened with '[' is not closed with ']'"),
    ("http://::1:3000", "an IPv6 address must be in brackets"),
    ("gpu-1:3000", "the scheme must be one of http://, https://, oip+http://, oip+https://"),
])
def test_a_bad_cloud_url_is_one_clear_line_from_the_flag_and_from_the_config_file(url, problem, capsys, tmp_path):
    assert main(["run", "--source", str(tmp_path), "--cloud", "http://127.0.0.1:3000", "--cloud", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"edge-agent: error: cloud endpoint {url!r}: {problem}") and "expected http(s)://" in err
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\nsource = "photos"\n\n[[agent.cloud]]\nurl = "{url}"\nweight = 2\n')
    with pytest.raises(ConfigError, match=re.escape(f"cloud endpoint {url!r}: {problem}")):
        load_config(conf)
    assert main(["run", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cloud endpoint {url!r}: {problem}" in err
    with pytest.raises(ConfigError, match=re.escape(problem)):
        AgentConfig(cloud=[{"url": url, "backup": True}])


def test_ipv6_cloud_urls_in_brackets_are_accepted_and_named_with_them():
    cfg = AgentConfig(cloud=["http://[::1]:3000", "oip+http://[fd00::5]:8000/v2/models/yolo"])
    assert [e.name for e in cfg.cloud] == ["http://[::1]:3000", "oip+http://[fd00::5]:8000/v2/models/yolo"]
