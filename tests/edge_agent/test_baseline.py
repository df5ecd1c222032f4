"""Every run's summary carries its baseline: local alone on the same frames, replayed through the
device core in local-only mode on the run's own arrival times and measured local service times.

The replay is checked against arithmetic on a virtual clock, and against a real local-only
run of the threaded agent (the same frames, the same local worker, the wall clock); the
summary path the demo prints is checked for numbers consistent with its JSON.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edge_agent.baseline import METHOD, Arrival, Recording, RunRecorder, baseline_of, replay_local_only
from edge_agent.summary import summarize
from edge_agent.config import AgentConfig
from edge_agent.core import CoreConfig
from edge_agent.demo import lost_to, result_lines
from edge_agent.core.frames import Outcome, Reason
from edge_agent.core.policy import PolicyConfig
from edge_agent.runner import Agent
from edge_agent.sources import open_source
from yolo_edge.errors import ConfigError

from agent_fakes import FakeCloud, ListSink, SlowDetector

IMG = np.zeros((32, 48, 3), np.uint8)


def core_cfg(budget_s: float = 0.5, queue: int = 8) -> CoreConfig:
    return CoreConfig(policy=PolicyConfig(latency_budget_s=budget_s, queue_budget=queue))


def test_local_alone_keeps_up_with_a_slow_stream():
    rec = Recording(arrivals=[Arrival(at=i * 0.1) for i in range(50)], service_s=[0.05])
    base = replay_local_only(rec, core_cfg())
    assert (base.frames, base.within_budget, base.outcomes[Outcome.LOCAL]) == (50, 50, 50)
    assert base.seqs_in_order and base.dishonest == 0


def test_local_alone_answers_about_its_capacity_of_a_fast_stream():
    # 40 fps for 10 s against a worker of 10 fps: about a quarter answered, the rest dropped with reasons
    rec = Recording(arrivals=[Arrival(at=i * 0.025) for i in range(400)], service_s=[0.1, 0.1, 0.1])
    base = replay_local_only(rec, core_cfg())
    assert base.frames == 400 and sum(base.outcomes.values()) == 400
    assert 90 <= base.within_budget <= 105, base.as_dict()
    assert base.outcomes[Outcome.CLOUD] == 0 and not any(r.startswith("cloud") for r in base.drops)


def test_skipped_frames_and_a_late_local_backend_are_replayed_as_they_happened():
    arrivals = [Arrival(at=i * 0.1, skipped=Reason.STALE_SOURCE if i % 5 == 0 else None) for i in range(30)]
    rec = Recording(arrivals=arrivals, service_s=[0.02], local_ready_at=1.05)
    base = replay_local_only(rec, core_cfg())
    assert base.drops[Reason.STALE_SOURCE] == 6
    assert base.drops[Reason.LOCAL_WARMING] == 8  # frames 1-4, 6-9 arrived before the backend was ready
    assert base.within_budget == 30 - 6 - 8


def test_nothing_to_replay_without_a_local_measurement():
    with pytest.raises(ConfigError, match="no local inference time was measured"):
        replay_local_only(Recording(arrivals=[Arrival(at=0.0)]), core_cfg())


def _record(agent_cfg: AgentConfig, *, cloud=None, service_s: float, n: int, fps: float):
    recorder, sink = RunRecorder(), ListSink()
    agent = Agent(agent_cfg, detector=recorder.timed(SlowDetector(service_s)), cloud=cloud, sinks=[sink])
    stats = agent.run(recorder.frames(open_source([IMG] * n, fps=fps)))
    return recorder, stats


@pytest.mark.integration  # the threaded agent for 3 s of real time
def test_the_replay_of_a_local_only_run_reproduces_it():
    """The threaded agent alone at twice its capacity, then its recording replayed: the same count, near enough.

    The replay sees the measured service times, so the only differences are the thread
    hand-offs the virtual clock does not have: a few frames either way.
    """
    cfg = AgentConfig(latency_budget_ms=400, queue_budget=6)
    recorder, stats = _record(cfg, service_s=0.04, n=150, fps=50)
    replayed = replay_local_only(recorder.recording, cfg.core())
    assert replayed.frames == stats.frames == 150
    assert 60 <= stats.within_budget <= 100, stats.as_dict()
    assert abs(replayed.within_budget - stats.within_budget) <= 10, (replayed.as_dict(), stats.as_dict())


@pytest.mark.integration  # the demo's summary path, seconds of real time
def test_the_demo_summary_path_prints_the_baseline_and_gain_of_its_json(tmp_path):
    """A hybrid run at twice local capacity (a fake cloud that takes real time), then what the demo prints."""
    cfg = AgentConfig(latency_budget_ms=400, queue_budget=6, max_inflight=4, cloud="http://127.0.0.1:9")
    recorder, stats = _record(cfg, cloud=FakeCloud(rtt_s=0.03), service_s=0.04, n=150, fps=50)
    summary, lines = summarize(stats, cfg, recorder, watch=None)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    summary = json.loads((tmp_path / "summary.json").read_text())  # what the demo writes, read back
    base = summary["baseline"]
    assert base["method"] == METHOD and base["frames"] == summary["frames"] == 150
    # every local inference was measured: those answered in time and those that came too late
    assert summary["outcomes"]["cloud"] > 0 and base["local_service_samples"] >= summary["outcomes"]["local"]
    assert base["gain_frames"] == stats.within_budget - base["within_budget"]
    assert base["gain_points"] == pytest.approx(100 * base["gain_frames"] / 150, abs=0.01)
    assert base["gain_frames"] > 10, summary  # the cloud carried frames local alone would have lost

    printed = "\n".join(lines + result_lines(summary, fps=50.0, local_fps=25.0))
    m = re.search(r"local alone: (\d+) of (\d+) frames within budget \(([\d.]+)%\); this run: (\d+)", printed)
    assert m and (int(m[1]), int(m[2]), int(m[4])) == (base["within_budget"], 150, stats.within_budget)
    m = re.search(r"gain over local alone: ([+-]\d+) frames, ([+-][\d.]+) points", printed)
    assert m and int(m[1]) == base["gain_frames"] and float(m[2]) == pytest.approx(base["gain_points"], abs=0.05)
    m = re.search(r"local alone ([\d.]+)%, hybrid ([\d.]+)%: ([+-]\d+) frames \(([+-][\d.]+) points\)", printed)
    assert m, printed
    assert float(m[1]) == pytest.approx(100 * base["within_budget_share"], abs=0.05)
    assert float(m[2]) == pytest.approx(100 * summary["within_budget_share"], abs=0.05)
    assert int(m[3]) == base["gain_frames"]
    lost, why = lost_to(summary)
    assert f"the cloud carried {summary['outcomes']['cloud']} frames; {lost} frames lost to {why}" in printed
    assert lost == 150 - stats.within_budget


def test_the_baseline_counts_only_the_frames_the_run_counted():
    rec = Recording(arrivals=[Arrival(at=i * 0.1) for i in range(11)], service_s=[0.01])
    run = replay_local_only(Recording(arrivals=rec.arrivals[:10], service_s=[0.01]), core_cfg())
    base = baseline_of(rec, core_cfg(), run)  # a signal stopped the run after the source gave an 11th frame
    assert base.frames == 10 and base.gain_frames == 0
