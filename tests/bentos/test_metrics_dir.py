"""Two services on one host keep their own /metrics (bentos.serve, as LocalService starts them).

Plain `bentoml serve` keeps every server's Prometheus files in one directory under
BENTOML_HOME and empties it when a server starts, so a second server wipes the first
one's counters. Both servers here share one BENTOML_HOME, as two servers of one user do.
"""

from __future__ import annotations

import doctest
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bentos import serve
from edge_agent.cloudserve import LocalService

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]  # two real services; about 6 s here


def _frames_ok(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "yolo_edge_frames_total" and sample.labels.get("outcome") == "ok":
                return sample.value
    return 0.0


def _detect(url: str, jpeg: bytes, n: int) -> None:
    for _ in range(n):
        r = requests.post(url + "/detect", files=[("images", ("bus.jpg", jpeg, "image/jpeg"))], timeout=60)
        assert r.status_code == 200, r.text


def test_second_service_leaves_the_first_ones_metrics(tmp_path, default_model_path, bus_jpg):
    home = tmp_path / "bentoml"
    env = {"BENTOML_HOME": str(home), "YOLO_EDGE_HOME": str(default_model_path.parents[2]),
           "YOLO_EDGE_MODEL": "yolov3-tiny-coco", "YOLO_EDGE_WARMUP_RUNS": "1"}
    first = LocalService(threads=1, env=env, log_dir=tmp_path)
    second = LocalService(threads=1, env=env, log_dir=tmp_path)
    jpeg = bus_jpg.read_bytes()
    try:
        first.start()
        _detect(first.url, jpeg, 3)
        assert _frames_ok(first.url) == 3
        second.start()  # plain `bentoml serve` would empty the shared directory here
        _detect(second.url, jpeg, 1)
        assert _frames_ok(first.url) == 3  # the first one's counts survived the second's start
        assert _frames_ok(second.url) == 1  # and neither sees the other's
        dirs = sorted(p.name for p in home.iterdir() if p.name.startswith("prometheus_multiproc_dir."))
        assert dirs == sorted(f"prometheus_multiproc_dir.{s.port}" for s in (first, second))
    finally:
        second.stop()
        first.stop()
    deadline = time.monotonic() + 10
    while any(home.glob("prometheus_multiproc_dir.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(home.glob("prometheus_multiproc_dir.*")), "a stopped server leaves its metrics directory"


def test_launcher_arguments_and_directory():
    assert doctest.testmod(serve).failed == 0
    args, metrics_dir, port = serve.split_args(["yolo-edge:latest", "--host", "0.0.0.0", "--port=3005"])
    assert (args, metrics_dir, port) == (["yolo-edge:latest", "--host", "0.0.0.0", "--port=3005"], None, 3005)
    assert serve.metrics_dir_for(3005).name == "prometheus_multiproc_dir.3005"
    assert serve.metrics_dir_for(None, {"BENTOML_PORT": "3123"}).name == "prometheus_multiproc_dir.3123"
