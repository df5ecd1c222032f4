"""The agent's endpoint pool against three real ``bentoml serve`` replicas on 127.0.0.1.

One replica is SIGKILLed mid-run and started again on the same port, one is slowed down
(its processes are stopped for three quarters of every 100 ms, as a CPU-throttled container
is), and one serves another model (the fall detector). The real local Detector runs every
local frame, padded to a slower edge device (conftest.py), and the camera runs at twice its
rate, so the overflow has to go to the pool.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from edge_agent.cloudserve import LocalService
from edge_agent.config import AgentConfig
from edge_agent.core.frames import Outcome, Route
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient

from agent_fakes import ListSink

pytestmark = pytest.mark.slow


def _service(default_model_path, tmp_path_factory, model: str) -> LocalService:
    env = {"YOLO_EDGE_HOME": str(default_model_path.parents[2])}
    return LocalService(model=model, threads=1, env=env, log_dir=tmp_path_factory.mktemp(f"pool-{model}"))


@pytest.fixture(scope="module")
def replicas(default_model_path, fall_model_path, tmp_path_factory):
    svcs = {"killed": _service(default_model_path, tmp_path_factory, "yolov3-tiny-coco"),
            "slowed": _service(default_model_path, tmp_path_factory, "yolov3-tiny-coco"),
            "other_model": _service(default_model_path, tmp_path_factory, "yolov8s-fall")}
    try:
        for svc in svcs.values():
            svc.start()
        yield svcs
    finally:
        for svc in svcs.values():
            svc.stop(signal.SIGKILL)


class Throttle:
    """Stops a service's processes for ``stopped_s`` of every ``period_s``: a slowed replica."""

    def __init__(self, svc: LocalService, *, period_s: float = 0.1, stopped_s: float = 0.075) -> None:
        root = psutil.Process(svc.proc.pid)
        self.procs = [root, *root.children(recursive=True)]
        self.period_s, self.stopped_s = period_s, stopped_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _signal(self, sig: int) -> None:
        for p in self.procs:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._signal(signal.SIGSTOP)
            time.sleep(self.stopped_s)
            self._signal(signal.SIGCONT)
            time.sleep(self.period_s - self.stopped_s)

    def __enter__(self) -> "Throttle":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._signal(signal.SIGCONT)


def test_pool_survives_a_killed_a_slowed_and_a_wrong_replica(replicas, edge, frames, caplog):
    order = ["killed", "slowed", "other_model"]
    budget_ms = 3000 * edge.service_s
    cfg = AgentConfig(latency_budget_ms=budget_ms, queue_budget=6, max_inflight=2,
                      cloud=[replicas[name].url for name in order])
    clients = [CloudClient(replicas[name].url, timeout=cfg.timeout_s, max_retries=0,
                           expected_sha256=edge.detector.info.sha256) for name in order]
    sink = ListSink()
    agent = Agent(cfg, detector=edge, cloud=clients, sinks=[sink])
    fps = 2 / edge.service_s
    marks: dict[str, float] = {}
    stop = threading.Event()

    def chaos():
        time.sleep(6.0)
        replicas["killed"].stop(signal.SIGKILL)  # no goodbye
        marks["killed"] = time.monotonic()
        time.sleep(3.0)
        marks["restarting"] = time.monotonic()
        replicas["killed"].start(wait=True)
        marks["restarted"] = time.monotonic()
        time.sleep(8.0)
        stop.set()

    with Throttle(replicas["slowed"]):
        box = {}
        runner = threading.Thread(target=lambda: box.setdefault(
            "stats", agent.run(replay((frames[i % len(frames)] for i in range(int(fps * 120))), fps=fps), stop=stop)))
        runner.start()
        chaos()
        runner.join(timeout=60)
    for c in clients:
        c.close()
    stats = box["stats"]

    # every frame exactly once, in order
    seqs = [r.seq for r in sink.results]
    assert seqs == list(range(len(seqs))) and stats.frames == len(seqs) > 50
    # none answered by the replica that serves another model: it is out of rotation for good
    cloud = [r for r in sink.results if r.outcome is Outcome.CLOUD]
    names = {name: AgentConfig(cloud=replicas[name].url).cloud[0].name for name in order}
    assert cloud and not [r for r in cloud if r.endpoint == names["other_model"]]
    assert all(r.meta["model"]["sha256"] == edge.detector.info.sha256 for r in cloud)
    assert "OFFLOAD REFUSED by endpoint" in caplog.text
    # offload resumed on the restarted replica
    after = [r for r in cloud if r.endpoint == names["killed"] and r.captured_at > marks["restarted"]]
    assert after, stats.as_dict()
    # while both were up, the slowed replica got less of the traffic than the healthy one
    both_up = [r for r in cloud if r.captured_at < marks["killed"] or r.captured_at > marks["restarted"] + 1.0]
    by = {name: sum(r.endpoint == names[name] for r in both_up) for name in ("killed", "slowed")}
    assert by["slowed"] < by["killed"], by
    # and what counts as within budget reached the sink by its deadline
    for r, got_at in zip(sink.results, sink.received_at):
        assert not r.within_budget or got_at <= r.deadline
    assert any(r.route is Route.LOCAL and r.outcome is Outcome.LOCAL for r in sink.results)
