"""The real agent and a real ``bentoml serve`` over a real shaped uplink (namespace, veth, tbf).

The agent's uploads cross a link of known capacity over real TCP: the encoding it chooses,
the goodput it measures from the acknowledgements (``yolo_edge.remote.upload_timing``) and what it
reports must follow the link. Skips, saying why, where this machine cannot shape a link.
``make bench-uplink`` runs the longer comparison against local only on real traces.
"""

from __future__ import annotations

import os

import pytest
from agent_fakes import ListSink
from shaped_link import ShapedLink, skip_unless_shaped_link

from edge_agent.config import AgentConfig
from edge_agent.runner import Agent
from edge_agent.sources import replay
from yolo_edge.remote.cloud import CloudClient

pytestmark = pytest.mark.slow  # a bentoml serve in a namespace per test: ~30 s each


@pytest.fixture(scope="module")
def cores():
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]  # the agent's local worker, the service (the same on one core)


def run_agent(edge, detector, url, frames, *, fps, seconds, local_core, mode="hybrid"):
    cfg = AgentConfig(mode=mode, latency_budget_ms=500, max_inflight=4, local_threads=1, local_cpus=(local_core,))
    clouds = [CloudClient(url, timeout=cfg.timeout_s, max_retries=0, expected_sha256=detector.info.sha256)]
    assert clouds[0].wake(wait_s=60)
    sink = ListSink()
    agent = Agent(cfg, detector=edge, cloud=clouds, cloud_warm=True, sinks=[sink])
    stats = agent.run(replay((frames[i % len(frames)] for i in range(int(fps * seconds))), fps=fps))
    clouds[0].close()
    stats.scrape = agent.metrics.exposition().decode()
    return stats, sink.results


@pytest.mark.parametrize("rate_mbps", [1.5, 40.0])
def test_the_encoding_and_the_measured_goodput_follow_the_link(rate_mbps, edge, detector, frames, cores):
    skip_unless_shaped_link()
    local_core, cloud_core = cores
    fps = 2.0 / edge.service_s  # twice what the local worker can do
    with ShapedLink(rate_bps=rate_mbps * 1e6) as link:
        with link.service(threads=1, cpus={cloud_core}) as svc:
            stats, results = run_agent(edge, detector, svc.url, frames, fps=fps, seconds=12, local_core=local_core)
    uploads = [r.upload for r in results if r.upload]
    assert uploads, stats.as_dict()
    encodings = {u["encoding"] for u in uploads}
    if rate_mbps < 2:
        # a 150-260 KB PNG takes about a second at 1.5 Mbit/s: never lossless once the link is known
        assert encodings - {"png"}, encodings
        assert sum(u["encoding"] == "png" for u in uploads) <= 2
    else:
        assert "png" in encodings  # the link allows lossless: the cloud's answer equals the local one
    # the goodput the agent measured from its own uploads is the link's, within what TCP and
    # HTTP framing take (a fast link is seen through single uploads that TCP does not fill)
    goodput = stats.uplink["goodput_bps"] if stats.uplink else None
    low = 0.5 if rate_mbps < 2 else 0.05
    assert goodput is not None and low * rate_mbps * 1e6 < goodput < 1.1 * rate_mbps * 1e6, stats.uplink
    assert stats.dishonest == 0 and stats.seqs_in_order
    for r in results:
        if r.upload and r.outcome.value == "cloud":
            assert r.upload["exact"] == (r.upload["encoding"] == "png")
            assert r.upload["bytes"] and r.upload["bytes"] > 0
    summary = stats.as_dict()
    assert sum(v["frames"] for v in summary["uploads"].values()) == len(uploads)
    # /metrics says the same, in the Prometheus text format
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(stats.scrape)}
    by_encoding = {s.labels["encoding"]: s.value for s in families["edge_agent_uploaded_frames"].samples
                   if s.name.endswith("_total")}
    assert by_encoding == {k: v["frames"] for k, v in summary["uploads"].items()}
    assert families["edge_agent_uplink_goodput_bits_per_second"].samples[0].value > 0
