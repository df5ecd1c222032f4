"""Sinks, metrics server, config files and the CLI."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import requests

from edge_agent.cli import main
from edge_agent.config import AgentConfig, load_config
from edge_agent.metrics import AgentMetrics, MetricsServer
from edge_agent.core.frames import FrameResult, Outcome, Route
from edge_agent.runner import Agent
from edge_agent.sinks import JsonlSink, WebhookOptions, WebhookSink, make_sink
from yolo_edge import Detections
from yolo_edge.errors import ConfigError

from agent_fakes import SlowDetector


def test_jsonl_and_webhook_sinks(tmp_path):
    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    dets = Detections([[1, 2, 3, 4]], [0.5], [0], {0: "person"})
    res = FrameResult(seq=7, outcome=Outcome.CLOUD, route=Route.CLOUD, captured_at=1.0, deadline=1.5, released_at=1.2,
                      detections=dets)
    sink = JsonlSink(tmp_path / "r.jsonl")
    hook = WebhookSink(f"http://127.0.0.1:{srv.server_address[1]}/hook",
                       WebhookOptions(spool=str(tmp_path / "hook.jsonl")))
    for s in (sink, hook):
        s.emit(res)
        report = s.close()
        assert (report.received, report.delivered, report.spooled) == (1, 1, 0)
    assert not (tmp_path / "hook.jsonl").exists()  # nothing left to deliver: no spool left behind
    srv.shutdown()
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["seq"] == 7 and line["outcome"] == "cloud" and line["latency_ms"] == pytest.approx(200)
    assert line["detections"][0]["label"] == "person"
    assert got == [line]
    with pytest.raises(ConfigError, match="bad sink"):
        make_sink("kafka:topic")


def test_metrics_and_health_endpoints():
    metrics = AgentMetrics()
    agent = Agent(AgentConfig(latency_budget_ms=500), detector=SlowDetector(0.001), metrics=metrics)
    server = MetricsServer(metrics, agent.health, port=0).start()
    try:
        with agent:
            for _ in range(3):
                agent.submit(np.zeros((8, 8, 3), np.uint8))
            health = requests.get(server.url + "/healthz", timeout=2)
            assert health.status_code == 200 and health.json()["cloud"] == "none"  # no cloud configured (disabled: a refused one)
        text = requests.get(server.url + "/metrics", timeout=2).text
        assert 'edge_agent_frames_total{outcome="local",route="local"} 3.0' in text
        assert "edge_agent_latency_seconds_bucket" in text and "edge_agent_local_queue_depth" in text
        assert 'edge_agent_decisions_total{reason="local_fits",route="local"} 3.0' in text
        assert "edge_agent_within_budget_ratio 1.0" in text
        assert 'edge_agent_cloud_state{state="none"} 1.0' in text
        assert requests.get(server.url + "/nope", timeout=2).status_code == 404
    finally:
        server.close()


def test_local_backend_is_visible_in_metrics(default_detector):
    from prometheus_client.parser import text_string_to_metric_families

    from edge_agent.cli import build_agent

    agent, _ = build_agent(AgentConfig(latency_budget_ms=500, sinks=()), detector=default_detector)
    families = {f.name: f for f in text_string_to_metric_families(agent.metrics.exposition().decode())}
    (sample,) = families["edge_agent_local_backend_info"].samples
    assert sample.value == 1 and sample.labels["name"] == "onnxruntime"
    assert "CPUExecutionProvider" in sample.labels["providers"] and "auto" in sample.labels["selected"]


def test_config_files(tmp_path):
    (tmp_path / "a.toml").write_text('[agent]\nsource = "cam.avi"\nlatency_budget_ms = 250\nsinks = ["stdout"]\n')
    (tmp_path / "a.yaml").write_text("source: cam.avi\nqueue_budget: 3\nmode: local\n")
    (tmp_path / "bad.yaml").write_text("source: cam.avi\nlatency_budget: 3\n")
    assert load_config(tmp_path / "a.toml").policy().latency_budget_s == 0.25
    assert load_config(tmp_path / "a.yaml").queue_budget == 3
    with pytest.raises(ConfigError, match="unknown agent setting"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="mode must be one of"):
        AgentConfig(mode="sometimes")
    with pytest.raises(ConfigError, match="max_inflight"):
        AgentConfig(max_inflight=0)
    assert load_config(tmp_path / "a.toml").core().budget_s == 0.25


def test_cli_simulate_json(capsys):
    assert main(["simulate", "--scenario", "steady", "--duration", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in rows} == {"local", "cloud", "threshold", "policy"}
    assert all(0 < r["of_oracle"] <= 1.0 for r in rows)  # the oracle bounds every strategy


def test_cli_run_local_writes_results(tmp_path, capsys, sample_photos, default_model_path):
    import shutil

    for p in sample_photos:
        shutil.copy(p, tmp_path / p.name)
    out = tmp_path / "res.jsonl"
    code = main(["run", "--source", str(tmp_path), "--fps", "5", "--max-frames", "4", "--loop", "--sink",
                 f"jsonl:{out}", "--annotate-dir", str(tmp_path / "ann"), "--latency-budget-ms", "2000",
                 "--summary-json", str(tmp_path / "s.json")])
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [0, 1, 2, 3] and all(x["outcome"] == "local" for x in lines)
    assert any(x["detections"] for x in lines)  # real photos, real detections
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 4
    assert "within budget" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 4


def test_cli_bad_source_is_a_clear_error(capsys):
    assert main(["run", "--source", "/nonexistent/clip.avi"]) == 2
    assert "neither a file" in capsys.readouterr().err


def test_sigterm_shuts_down_cleanly_with_every_frame_accounted(tmp_path, sample_photos, default_model_path):
    import shutil
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    for p in sample_photos:
        shutil.copy(p, tmp_path / p.name)
    out = tmp_path / "res.jsonl"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--source", str(tmp_path), "--loop",
                             "--fps", "40", "--latency-budget-ms", "300", "--sink", f"jsonl:{out}",
                             "--summary-json", str(tmp_path / "s.json")],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 8):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [x["seq"] for x in lines] == list(range(len(lines))) and summary["frames"] == len(lines) > 5
    # no cloud configured: every frame ran locally (in budget or late) or was dropped
    assert {x["outcome"] for x in lines} <= {"local", "late", "dropped"}
    assert "within budget" in stdout
