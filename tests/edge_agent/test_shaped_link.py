"""The shaped link of the real-world tests: a namespace, a veth, tbf following a trace; and its removal.

The plan's tests are pure (no root needed). The others make real namespaces and skip,
saying why, where this machine cannot (not root, no tbf...).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from link_probes import BulkSink, bulk_upload, goodput_bps
from link_shaper import L2_FACTOR, plan_tbf
from shaped_link import IP, MIN_RATE_BPS, TC, ShapedLink, clean_stale, skip_unless_shaped_link

from edge_agent.sim.uplink import BUNDLED, PACKET_BYTES, TCP_PAYLOAD_BYTES, bundled

pytestmark = pytest.mark.integration  # network namespaces, veth pairs and tbf links, seconds of real traffic

TESTS = Path(__file__).resolve().parents[1]
PAYLOAD = TCP_PAYLOAD_BYTES / PACKET_BYTES  # what TCP carries of the trace's 1500-byte packets


def _namespaces() -> list[str]:
    return subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout.split()


def _link_exists(dev: str) -> bool:
    return subprocess.run([IP, "link", "show", "dev", dev], capture_output=True).returncode == 0


def _gone(link: ShapedLink) -> bool:
    return link.netns not in _namespaces() and not _link_exists(link.device)


@pytest.fixture
def shaped():
    skip_unless_shaped_link()


# -- the plan (pure) -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_plan_capacity_tracks_the_trace(name):
    trace = bundled(name)
    step, burst = 0.1, 3028
    bps = trace.rate_schedule(step_s=step, start_s=0.0, duration_s=trace.period_s)
    plan = plan_tbf(bps, step_s=step, burst_bytes=burst, min_rate_bps=MIN_RATE_BPS)
    ahead = np.cumsum(plan.capacity_bytes) - np.cumsum(bps / 8 * step)
    zero = np.r_[0, (bps == 0).astype(int), 0]
    edges = np.flatnonzero(np.diff(zero))
    longest_outage_s = float(np.max(edges[1::2] - edges[::2], initial=0)) * step
    one_change = burst / L2_FACTOR + MIN_RATE_BPS / 8 / L2_FACTOR * step
    # behind by at most one change's worth; ahead by that plus the minimum rate's trickle in an outage
    assert ahead.min() >= -one_change - 1
    assert ahead.max() <= one_change + MIN_RATE_BPS / 8 * longest_outage_s + 1
    # what tbf is told: whole bit rates, never below the minimum; a change charged its burst
    assert plan.tbf_bps.min() >= MIN_RATE_BPS
    assert np.all(plan.capacity_bytes[plan.changed] >= burst / L2_FACTOR)


def test_plan_holds_the_minimum_without_refills_through_an_outage():
    plan = plan_tbf(np.r_[np.full(5, 4e6), np.zeros(20), np.full(5, 4e6)], step_s=0.1, burst_bytes=3028,
                    min_rate_bps=MIN_RATE_BPS)
    assert plan.changed[5] and not plan.changed[6:25].any() and plan.changed[25]
    assert (plan.tbf_bps[5:25] == MIN_RATE_BPS).all()


def test_plan_rejects_a_burst_smaller_than_a_frame():
    with pytest.raises(ValueError, match="one full frame"):
        plan_tbf(np.ones(3), step_s=0.1, burst_bytes=1000, min_rate_bps=1000)


# -- the real link ---------------------------------------------------------------------------

def test_link_exists_while_open_and_is_gone_after(shaped):
    with ShapedLink(rate_bps=2e6) as link:
        assert link.netns in _namespaces() and _link_exists(link.device)
        q = link.qdisc()
        assert q["kind"] == "tbf" and abs(q["options"]["rate"] * 8 - 2e6 * L2_FACTOR) <= 8
        peer = subprocess.run([IP, "-n", link.netns, "-o", "-4", "addr", "show", "dev", link.peer],
                              capture_output=True, text=True).stdout
        assert f"inet {link.cloud_ip}/30" in peer
        sleeper = link.popen(["sleep", "60"])
        assert str(sleeper.pid) in subprocess.run([IP, "netns", "pids", link.netns], capture_output=True,
                                                  text=True).stdout.split()
    assert _gone(link)
    sleeper.wait(timeout=5)  # killed with the namespace (poll() could look before the kill lands)
    assert "qdisc" not in subprocess.run([TC, "qdisc", "show", "dev", link.device], capture_output=True, text=True).stdout


def test_everything_is_removed_when_the_body_raises(shaped):
    with pytest.raises(ZeroDivisionError):
        with ShapedLink(bundled("verizon-lte")) as link:
            sleeper = link.popen(["sleep", "60"])
            1 / 0
    assert _gone(link)
    sleeper.wait(timeout=5)


_CHILD = """
import sys, time, json
sys.path.insert(0, {tests!r})
from shaped_link import ShapedLink
with ShapedLink(rate_bps=1e6, prefix="shlt") as link:
    link.popen(["sleep", "60"])
    print(json.dumps({{"netns": link.netns, "device": link.device, "shaper": link._shaper.pid}}), flush=True)
    time.sleep(60)
"""


def _child() -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(TESTS))], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    info = json.loads(proc.stdout.readline())
    assert info["netns"] in _namespaces()
    return proc, info


def _wait_gone(info: dict, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if info["netns"] not in _namespaces() and not _link_exists(info["device"]):
            return True
        time.sleep(0.1)
    return False


def test_sigterm_removes_the_link(shaped):
    proc, info = _child()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert _wait_gone(info, timeout=0.5)


def test_a_killed_owner_leaves_nothing_behind(shaped):
    # SIGKILL runs no cleanup in the owner: its shaper sees it gone and removes the link
    proc, info = _child()
    proc.kill()
    proc.wait()
    assert _wait_gone(info)


def test_a_leftover_of_a_crashed_run_is_removed_at_the_next_start(shaped):
    proc, info = _child()
    os.kill(info["shaper"], signal.SIGKILL)  # the shaper first, so that nobody cleans up
    proc.kill()
    proc.wait()
    time.sleep(0.2)
    assert info["netns"] in _namespaces()  # left behind, sleep and all
    assert info["netns"] in clean_stale("shlt")
    assert _wait_gone(info, timeout=0.5)
    assert subprocess.run([IP, "netns", "pids", info["netns"]], capture_output=True).returncode != 0


def test_a_fixed_rate_carries_its_rate(shaped):
    rate = 3e6
    with ShapedLink(rate_bps=rate) as link:
        sink = BulkSink.start(link, port=5001)
        bulk_upload(link.cloud_ip, 5001, seconds=5.0)
        samples = sink.samples(timeout=30)
    t0, t1 = samples[0, 0] + 1.0, samples[0, 0] + 5.0  # after TCP's start-up
    assert goodput_bps(samples, t0, t1) == pytest.approx(rate * PAYLOAD, rel=0.10)


def test_a_trace_is_followed(shaped):
    trace = bundled("verizon-lte")
    with ShapedLink(trace, start_s=20.0) as link:
        sink = BulkSink.start(link, port=5001)
        bulk_upload(link.cloud_ip, 5001, seconds=10.0)
        samples = sink.samples(timeout=60)
        sched = link.schedule()
        records = [r for r in link.records() if "t" in r]
        link.check()
    t0, t1 = samples[0, 0] + 2.0, samples[0, 0] + 10.0
    trace_bps = link.trace_bytes(t0, t1) * 8 / (t1 - t0)
    assert trace_bps > 1e6  # a stretch with something to carry
    assert goodput_bps(samples, t0, t1) == pytest.approx(trace_bps * PAYLOAD, rel=0.15)
    # the kernel holds what the plan said at each change (tc keeps whole bytes per second)
    changes = [r for r in records if r["changed"]]
    assert len(changes) > 50
    for r in changes:
        assert abs(r["rate_bps"] - sched.plan.tbf_bps[r["k"]]) <= 8
    # the plan as applied gives what the trace has over the stretch, within a couple of packets
    # and what steps applied late shift (measured 0.07-0.15% over 8 s; 0.21% with two test suites
    # running beside it on the 2 cores)
    want = link.trace_bytes(t0, t1)
    assert sched.capacity_bytes(t0, t1) == pytest.approx(want, abs=max(2 * 3028, 0.004 * want))
    # and its trace form replays the same bytes
    replay = sched.as_uplink_trace()
    assert replay.bytes_between(t0 - sched.start, t1 - sched.start) == pytest.approx(sched.capacity_bytes(t0, t1),
                                                                                       abs=2 * PACKET_BYTES)


def test_a_real_service_in_the_namespace_answers_through_the_link(shaped, bus_jpg):
    from yolo_edge.remote.cloud import CloudClient

    with ShapedLink(rate_bps=20e6) as link:
        with link.service(threads=1, cpus={os.sched_getaffinity(0).pop()}) as svc:
            assert svc.url.startswith(f"http://{link.cloud_ip}:")
            before = link.qdisc()["bytes"]
            dets = CloudClient(svc.url, timeout=60).detect(bus_jpg)
            assert len(dets) > 0
            assert link.qdisc()["bytes"] - before > bus_jpg.stat().st_size  # the upload crossed the shaper
            pids = subprocess.run([IP, "netns", "pids", link.netns], capture_output=True, text=True).stdout.split()
            assert str(svc.proc.pid) in pids
    assert _gone(link)
    assert svc.proc.poll() is not None
