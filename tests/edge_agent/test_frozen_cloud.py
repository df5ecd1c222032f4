"""The agent keeps answering locally while its cloud is frozen, and after it comes back.

A real ``bentoml serve`` on 127.0.0.1 is frozen with SIGSTOP (its process group, and the
group of each of its workers, which bentoml starts in sessions of their own) 4 s into a run
at twice the device's local capacity with a 500 ms budget, and resumed with SIGCONT 6 s
later: the requests in flight get no answer, new connections are accepted by the kernel
and never served, and after SIGCONT the service works through what queued up. The same frames
are then run local only. In the frozen window hybrid answers locally at least what local only
answers in the same frames (the frames the cloud cannot take wait for the worker about to be
free: a CI run that planned each busy worker's run as just started dropped them, and answered
17 where local only answered 19); in it together with the 3 s after it, at least 90% (the cloud
is back and takes its share); and its local lane serves again within 1 s of the slow spell
(issue 17: an agent whose local estimate froze answered 1 of 669 frames locally after such a
spell). As the service comes back it works through its
backlog on the device's cores; here the local inferences that start in the first 0.7 s
after SIGCONT take 0.6 s each (longer than the budget), in both runs at the same time
into the run: the spell that locked the local lane out.

The device is the real local Detector padded to a fixed service time (``SlowerEdge``), as in
test_agent_integration.py, so that the test is about routing, not about how the agent and
the service share this machine's cores.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pytest

from edge_agent.cloudserve import LocalService
from edge_agent.config import AgentConfig
from edge_agent.core.frames import Outcome
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient

from agent_fakes import ListSink

pytestmark = pytest.mark.slow  # a real service, two runs of ~15 s

BUDGET_MS = 500.0
FREEZE_AT_S, FROZEN_S, AFTER_S, TAIL_S = 4.0, 6.0, 3.0, 2.0
#: as the service comes back it works through its backlog on the device's cores: the local
#: inferences that start in the first SPELL_S take SLOW_S each, longer than the budget
SPELL_S, SLOW_S = 0.7, 0.6
SECONDS = FREEZE_AT_S + FROZEN_S + AFTER_S + TAIL_S


@pytest.fixture(scope="module")
def service(default_model_path, tmp_path_factory):
    env = {"YOLO_EDGE_HOME": str(default_model_path.parents[2]), "YOLO_EDGE_MODEL": "yolov3-tiny-coco"}
    svc = LocalService(threads=1, env=env, log_dir=tmp_path_factory.mktemp("frozen-svc"))
    svc.start()
    yield svc
    _signal_service(svc, signal.SIGCONT)  # never leave it stopped, whatever failed
    svc.stop()


def _signal_service(svc: LocalService, sig: int) -> int:
    """``sig`` to the service's process group and to the group of each of its workers (bentoml starts
    them in sessions of their own, so the first group alone misses them); how many groups."""
    import psutil  # a bentoml dependency

    try:
        main = psutil.Process(svc.proc.pid)
        procs = [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    groups = []
    for p in procs:
        try:
            g = os.getpgid(p.pid)
        except ProcessLookupError:
            continue
        if g not in groups:
            groups.append(g)
    if sig == signal.SIGCONT:
        groups.reverse()  # workers first, then the server that watches them
    for g in groups:
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            pass
    return len(groups)


class SpellEdge:
    """The padded edge (``SlowerEdge``) with one slow spell: a call that starts within it takes ``SLOW_S``."""

    def __init__(self, edge) -> None:
        self.edge, self.detector, self.service_s = edge, edge.detector, edge.service_s
        self.spell = (float("inf"), float("inf"))
        self.slow_calls = 0

    def __call__(self, image):
        start = time.monotonic()
        if not self.spell[0] <= start < self.spell[1]:
            return self.edge(image)
        self.slow_calls += 1
        dets = self.detector(image)
        time.sleep(max(0.0, SLOW_S - (time.monotonic() - start)))
        return dets


def _run(edge, frames, fps, *, service=None, during=None) -> tuple[ListSink, object, float]:
    """One run of ``SECONDS`` of frames; ``during(start)`` runs on a thread beside it. Returns the sink,
    the run's stats and the monotonic time the run started."""
    sink = ListSink()
    n = int(fps * SECONDS)
    source = replay((frames[i % len(frames)] for i in range(n)), fps=fps)
    if service is None:
        cfg = AgentConfig(latency_budget_ms=BUDGET_MS, mode="local")
        agent, cloud = Agent(cfg, detector=edge, sinks=[sink]), None
    else:
        cfg = AgentConfig(latency_budget_ms=BUDGET_MS, queue_budget=6, max_inflight=4)
        cloud = CloudClient(service.url, timeout=cfg.timeout_s, max_retries=0, expected_sha256=edge.detector.info.sha256)
        agent = Agent(cfg, detector=edge, cloud=cloud, sinks=[sink])
    start = time.monotonic()
    back = start + FREEZE_AT_S + FROZEN_S  # when the cloud comes back; the slow spell begins
    edge.spell = (back, back + SPELL_S)
    side = threading.Thread(target=during, args=(start,)) if during else None
    if side:
        side.start()
    try:
        stats = agent.run(source)
    finally:
        if side:
            side.join(timeout=SECONDS + 30)
        if cloud is not None:
            cloud.close()
    assert stats.frames == n and [r.seq for r in sink.results] == list(range(n)), stats.as_dict()
    return sink, stats, start


def _window(sink: ListSink, first: float, lo: float, hi: float) -> list:
    """The results of the frames captured between ``lo`` and ``hi`` seconds after the run's first frame."""
    return [r for r in sink.results if first + lo <= r.captured_at < first + hi]


def _describe(results) -> str:
    c = Counter((r.outcome.value, r.reason) for r in results)
    return ", ".join(f"{o}[{why}]: {k}" for (o, why), k in sorted(c.items(), key=lambda kv: -kv[1]))


def test_local_answers_continue_while_the_cloud_is_frozen(service, edge, frames):
    edge = SpellEdge(edge)
    fps = 2 / edge.service_s  # twice what the device can do alone
    marks: dict[str, float] = {}

    def freeze(start: float) -> None:
        time.sleep(max(0.0, start + FREEZE_AT_S - time.monotonic()))
        marks["groups"] = _signal_service(service, signal.SIGSTOP)
        marks["stopped"] = time.monotonic()
        time.sleep(max(0.0, start + FREEZE_AT_S + FROZEN_S - time.monotonic()))
        _signal_service(service, signal.SIGCONT)
        marks["continued"] = time.monotonic()

    hybrid, h_stats, _ = _run(edge, frames, fps, service=service, during=freeze)
    h_slow, h_spell, edge.slow_calls = edge.slow_calls, edge.spell, 0
    local, l_stats, _ = _run(edge, frames, fps)
    assert h_slow >= 1 and edge.slow_calls >= 1, (h_slow, edge.slow_calls)  # both runs had their slow spell

    for sink in (hybrid, local):  # honest: counted within budget means released by the deadline
        late = [r.seq for r, got in zip(sink.results, sink.received_at) if r.within_budget and got > r.deadline]
        assert late == [] and all(r.released_at <= r.deadline for r in sink.results if r.within_budget)
        assert all((r.detections is not None) == (r.outcome is not Outcome.DROPPED) for r in sink.results
                   if r.outcome is not Outcome.LATE)
    assert marks["groups"] >= 2, "the service's workers were not found: the freeze would miss them"
    assert sum(r.outcome is Outcome.CLOUD for r in hybrid.results if r.captured_at < marks["stopped"]) > 0, \
        f"the cloud took no frame before it froze: {_describe(hybrid.results)}"
    # frozen means frozen: no cloud answer for a frame captured while it was stopped came back in time
    assert not [r.seq for r in hybrid.results if r.outcome is Outcome.CLOUD
                and marks["stopped"] + 0.1 < r.captured_at < marks["continued"] - BUDGET_MS / 1000], _describe(hybrid.results)

    h0, l0 = hybrid.results[0].captured_at, local.results[0].captured_at
    frozen = (marks["stopped"] - h0, marks["continued"] - h0)
    # the frozen window, and it with the 3 s after (a 3 s window alone holds ~8 local answers,
    # and which of them land in it depends on the phase of the slow spell: +-1 frame is 12%)
    for name, (lo, hi) in (("frozen", frozen), ("frozen and 3 s after", (frozen[0], frozen[1] + AFTER_S))):
        h, lo_only = _window(hybrid, h0, lo, hi), _window(local, l0, lo, hi)
        h_local = sum(r.outcome is Outcome.LOCAL for r in h)
        l_local = sum(r.outcome is Outcome.LOCAL for r in lo_only)
        print(f"{name} window {lo:.1f}-{hi:.1f} s: hybrid local {h_local} ({_describe(h)}); "
              f"local only {l_local} ({_describe(lo_only)})")
        assert l_local > 0, f"local only answered nothing {lo:.1f}-{hi:.1f} s: {_describe(lo_only)}"
        assert h_local >= (1.0 if name == "frozen" else 0.9) * l_local, (
            f"{name} window {lo:.1f}-{hi:.1f} s: hybrid answered {h_local} locally, local only {l_local}; "
            f"hybrid: {_describe(h)}; local only: {_describe(lo_only)}; hybrid stats {h_stats.as_dict()}")
    # the local lane serves again within 1 s of the slow spell's end (its last slow call may run past it)
    spell_end = h_spell[1] + SLOW_S
    resumed = [r.seq for r in hybrid.results if r.outcome is Outcome.LOCAL and spell_end <= r.captured_at < spell_end + 1.0]
    assert resumed, f"no local answer within 1 s of the slow spell: {_describe(_window(hybrid, h0, spell_end - h0, spell_end - h0 + 1.0))}"
