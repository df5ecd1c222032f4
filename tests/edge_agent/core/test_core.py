"""The device core on a virtual clock: events in, actions out; no sleeps, no threads, deterministic."""

from __future__ import annotations

import ast
import heapq
import random
from pathlib import Path

import pytest

import edge_agent
from edge_agent.core import (
    Close, CloudDone, CoreConfig, DeviceCore, Encoded, EndpointSpec, Failure, Flush, FrameCaptured, FrameSkipped,
    LateAnswer, LocalDone, LocalReady, Release, RunLocal, SendBatch, Tick, Uploaded, Wake, WakeDone,
)
from yolo_edge.remote.health import HealthConfig
from yolo_edge.remote.wire import FrameStatus
from edge_agent.core.frames import Outcome, Reason, Route
from edge_agent.core.link import Ladder
from edge_agent.core.policy import CloudState, PolicyConfig
from yolo_edge.errors import ConfigError

BUDGET = 0.5


def cfg(**kw) -> CoreConfig:
    policy = kw.pop("policy", PolicyConfig(latency_budget_s=BUDGET, queue_budget=kw.pop("queue_budget", 8)))
    return CoreConfig(policy=policy, **kw)


class Driver:
    """Feeds a core and remembers every action, like the real drivers do."""

    def __init__(self, core: DeviceCore) -> None:
        self.core = core
        self.released = []
        self.late = []
        self.local, self.sent, self.wakes = [], [], []
        self.now = 0.0

    def feed(self, event):
        self.now = max(self.now, event.at)
        actions = self.core.handle(event)
        for a in actions:
            if isinstance(a, Release):
                self.released.extend(a.results)
            elif isinstance(a, LateAnswer):
                self.late.append(a)
            elif isinstance(a, RunLocal):
                self.local.append(a.seq)
            elif isinstance(a, SendBatch):
                self.sent.append(a)
            elif isinstance(a, Wake):
                self.wakes.append(a)
        return actions

    def frame(self, at, **kw):
        return self.feed(FrameCaptured(at=at, seq=self.core.next_seq, **kw))

    def tick_until(self, t):
        """Deliver every timer up to ``t`` exactly when it is due."""
        while (due := self.core.next_timer()) is not None and due <= t:
            self.feed(Tick(at=due))
        self.now = t


def outcomes(results):
    return [(r.seq, r.outcome, r.route) for r in results]


def test_local_frames_run_and_release_in_order():
    d = Driver(DeviceCore(cfg(), cloud=False))
    assert d.frame(0.0) == [RunLocal(0)]
    assert d.frame(0.01) == []  # one worker: the second waits
    d.feed(LocalDone(at=0.04, seq=0, service_s=0.04, answer="a"))
    assert d.local == [0, 1] and outcomes(d.released) == [(0, Outcome.LOCAL, Route.LOCAL)]
    d.feed(LocalDone(at=0.08, seq=1, service_s=0.04, answer="b"))
    assert [r.detections for r in d.released] == ["a", "b"]
    assert d.core.idle and d.core.next_timer() is None


def test_n_local_workers_run_in_parallel():
    d = Driver(DeviceCore(cfg(local_workers=3), cloud=False))
    for i in range(4):
        d.frame(0.001 * i)
    assert d.local == [0, 1, 2]


def test_results_out_of_order_leave_in_order():
    d = Driver(DeviceCore(cfg(local_workers=2), cloud=False))
    d.frame(0.0)
    d.frame(0.0)
    d.feed(LocalDone(at=0.03, seq=1, service_s=0.03))
    assert d.released == []  # 1 waits for 0
    d.feed(LocalDone(at=0.05, seq=0, service_s=0.05))
    assert [r.seq for r in d.released] == [0, 1]


def test_head_not_back_by_its_deadline_leaves_late_and_later_frames_flow():
    """Honest delivery: the window never holds an answered frame past its own deadline."""
    d = Driver(DeviceCore(cfg(local_workers=2), cloud=False))
    d.frame(0.0)  # 0: will hang
    d.frame(0.1)  # 1: answered quickly
    d.feed(LocalDone(at=0.15, seq=1, service_s=0.05, answer="one"))
    assert d.released == [] and d.core.next_timer() == pytest.approx(0.5)
    d.tick_until(0.5)
    (late, on_time) = d.released
    assert (late.seq, late.outcome, late.route, late.reason) == (0, Outcome.LATE, Route.LOCAL, "deadline")
    assert (on_time.seq, on_time.outcome) == (1, Outcome.LOCAL)
    assert on_time.released_at == pytest.approx(0.5) and on_time.released_at <= on_time.deadline
    # the hung frame's answer comes later: counted as a late answer, never released twice
    d.feed(LocalDone(at=0.9, seq=0, service_s=0.9, answer="zero"))
    assert [a.seq for a in d.late] == [0] and len(d.released) == 2
    assert d.core.counters[("late_answer", "local")] == 1


def test_queued_frame_at_its_deadline_is_dropped_not_run():
    d = Driver(DeviceCore(cfg(), cloud=False))
    d.frame(0.0)
    d.frame(0.0)  # waits behind a frame that never ends in time
    d.tick_until(0.5)
    assert outcomes(d.released) == [(0, Outcome.LATE, Route.LOCAL), (1, Outcome.DROPPED, None)]
    assert d.released[1].reason == "expired_in_queue"
    d.feed(LocalDone(at=0.6, seq=0, service_s=0.6))
    assert d.local == [0]  # frame 1 never ran: its worker time went to nothing


def test_per_frame_budget_never_holds_an_answer_past_its_deadline():
    d = Driver(DeviceCore(cfg(local_workers=2), cloud=False))
    d.frame(0.0, budget_s=2.0)  # 0: long budget, slow
    d.frame(0.0, budget_s=0.3)  # 1: short budget, done at once
    d.feed(LocalDone(at=0.1, seq=1, service_s=0.1))
    d.tick_until(0.3)
    assert [(r.seq, r.outcome, r.reason) for r in d.released] == [(0, Outcome.LATE, "held_order"),
                                                                 (1, Outcome.LOCAL, "local_fits")]
    assert d.released[1].released_at <= d.released[1].deadline


def test_window_full_forces_the_oldest_out():
    d = Driver(DeviceCore(cfg(window=3, local_workers=4), cloud=False))
    for i in range(4):
        d.frame(0.001 * i)
    for seq in (1, 2, 3):
        d.feed(LocalDone(at=0.01, seq=seq, service_s=0.01))
    assert [(r.seq, r.outcome, r.reason) for r in d.released][:1] == [(0, Outcome.LATE, "window_full")]
    assert [r.seq for r in d.released] == [0, 1, 2, 3]


def test_overflow_goes_to_the_cloud_in_batches_within_the_inflight_cap():
    d = Driver(DeviceCore(cfg(max_inflight=1, max_batch=3), cloud_warm=True))
    for i in range(12):
        d.frame(0.001 * i)
    assert d.sent and d.sent[0].endpoint == 0 and len(d.sent) == 1  # one request in flight at most
    first = d.sent[0]
    d.feed(CloudDone(at=0.1, request=first.request, answers=["c"] * len(first.seqs), metas=[{}] * len(first.seqs)))
    assert len(d.sent) == 2 and len(d.sent[1].seqs) > 1  # the frames that waited go out together
    assert all(dl == pytest.approx(s * 0.001 + BUDGET) for s, dl in zip(d.sent[1].seqs, d.sent[1].deadlines))


def drive_cloud_failures(d, n, at, **kw):
    """Send n frames that need the cloud and fail each request."""
    for _ in range(n):
        d.frame(at)
        for req in list(d.sent):
            if req.request in d.core.dispatch.requests:
                d.feed(CloudDone(at=at + 0.01, request=req.request, failure=kw.get("failure", Failure.UNAVAILABLE),
                                 retry_after_s=kw.get("retry_after_s")))
        at += 0.02
    return at


def cloud_only(**kw):
    return cfg(policy=kw.pop("policy", PolicyConfig(latency_budget_s=BUDGET, mode="cloud")), **kw)


def test_endpoint_out_after_failures_then_probed_through_readyz_and_back_within_a_second():
    d = Driver(DeviceCore(cloud_only(health=HealthConfig(max_fails=3, fail_timeout_s=0.8)), cloud_warm=True))
    at = drive_cloud_failures(d, 3, 0.0)
    assert d.core.snapshot(at).cloud_state is CloudState.FAILING
    d.frame(at)
    assert d.released[-1].reason == "cloud_failing"  # no cloud, no local in cloud mode: dropped with the reason
    sent = len(d.sent)
    d.tick_until(0.79)
    assert d.wakes == []  # still out
    d.tick_until(0.9)  # its time out is up: one GET /readyz
    (probe,) = d.wakes
    assert probe.wait_s == 0 and len(d.sent) == sent
    d.feed(WakeDone(at=0.92, ok=True))
    d.frame(0.93)
    assert len(d.sent) == sent + 1  # back in rotation within a second of answering again


def test_a_failed_probe_keeps_it_out_for_another_fail_timeout():
    d = Driver(DeviceCore(cloud_only(health=HealthConfig(max_fails=1, fail_timeout_s=0.5)), cloud_warm=True))
    drive_cloud_failures(d, 1, 0.0)
    d.tick_until(0.6)
    d.feed(WakeDone(at=0.6, ok=False))
    assert d.core.next_timer() == pytest.approx(1.1)
    d.tick_until(1.2)
    assert len(d.wakes) == 2


def test_retry_after_is_honoured():
    d = Driver(DeviceCore(cloud_only(), cloud_warm=True))
    drive_cloud_failures(d, 1, 0.0, retry_after_s=2.0)  # a 503 with Retry-After takes it out at once
    assert d.core.snapshot(1.9).cloud_state is CloudState.FAILING
    n = len(d.sent)
    d.frame(1.9)
    assert len(d.sent) == n and d.wakes == []  # nothing before the server's time
    d.tick_until(2.05)
    assert d.wakes and d.wakes[0].wait_s == 0


def test_request_timeout_counts_as_a_failure_and_frees_the_slot():
    d = Driver(DeviceCore(cloud_only(cloud_timeout_s=0.3, max_inflight=1), cloud_warm=True))
    d.frame(0.0)
    req = d.sent[0]
    d.feed(Uploaded(at=0.01, request=req.request, frame_bytes=(1000,)))  # the endpoint has it
    d.tick_until(0.3)
    assert d.core.counters["cloud_timeouts"] == 1 and d.core.pool.endpoints[0].requests == 0
    # the frame goes back through the policy with 0.2 s left: the cloud just showed it takes longer
    (r,) = d.released
    assert (r.outcome, r.reason, r.released_at) == (Outcome.DROPPED, "cloud_too_slow", 0.3)
    d.feed(CloudDone(at=0.7, request=req.request, answers=["x"], metas=[{}]))  # the real answer, much later
    assert d.late and d.late[-1].route is Route.CLOUD


def test_a_request_timed_out_before_its_upload_left_is_the_links_stall_not_the_endpoints():
    """The first uploads go out at the uplink's prior; over a slower link they time out on the
    uplink. Counted as the endpoint's, they said it takes the whole timeout to answer, and over a
    real 1 Mbit/s drive that estimate kept the device from offloading for the rest of its run."""
    d = Driver(DeviceCore(cloud_only(cloud_timeout_s=0.3, max_inflight=1), cloud_warm=True))
    d.frame(0.0)
    d.tick_until(0.3)
    assert d.core.counters[("uplink", "unmeasured_timeouts")] == 1 and d.core.counters["cloud_timeouts"] == 0
    ep = d.core.pool.endpoints[0]
    assert ep.failures == 0 and d.core.pool.model.samples == 0
    assert d.sent[-1].seqs == (0,) and d.sent[-1].encodings == (d.core.cfg.ladder.floor.name,)  # smaller, as a try


def test_cold_cloud_is_woken_when_the_queue_rises_and_used_once_ready():
    d = Driver(DeviceCore(cfg()))
    d.frame(0.0)
    assert d.wakes == []  # idle: no need
    for i in range(3):
        d.frame(0.001 * (i + 1))
    assert len(d.wakes) == 1 and d.core.snapshot(0.01).cloud_state is CloudState.WAKING
    for i in range(10):
        d.frame(0.01 + 0.001 * i)
    assert d.sent == []  # not ready yet
    d.feed(WakeDone(at=0.05, ok=True))
    for i in range(10):
        d.frame(0.06 + 0.001 * i)
    assert d.sent


def test_failed_wake_goes_back_to_cold_and_wakes_again():
    d = Driver(DeviceCore(cloud_only()))
    d.frame(0.0)
    d.feed(WakeDone(at=1.0, ok=False))
    assert d.core.snapshot(1.0).cloud_state is CloudState.COLD and d.core.counters["wake_failures"] == 1
    d.frame(1.1)
    assert len(d.wakes) == 2


def test_model_mismatch_disables_the_cloud_for_good(caplog):
    d = Driver(DeviceCore(cfg()))
    for i in range(4):
        d.frame(0.001 * i)
    d.feed(WakeDone(at=0.1, ok=False, failure=Failure.MISMATCH, message="sha256 bbbb, expected aaaa"))
    assert d.core.snapshot(0.1).cloud_state is CloudState.DISABLED and "OFFLOAD REFUSED" in caplog.text
    for i in range(20):
        d.frame(0.2 + 0.001 * i)
    assert d.sent == [] and len(d.wakes) == 1


def test_local_warmup_sends_frames_to_the_cloud_until_ready():
    d = Driver(DeviceCore(cfg(), local_ready=False))
    d.frame(0.0)
    assert d.wakes and d.released[-1].reason == "cloud_cold"  # woken at once; nothing could take this frame
    d.feed(WakeDone(at=0.05, ok=True))
    d.frame(0.1)
    assert d.sent and d.local == []
    d.feed(LocalReady(at=0.2))
    d.frame(0.21)
    assert d.local == [2]


def test_local_only_agent_drops_as_local_warming_until_ready():
    d = Driver(DeviceCore(cfg(), cloud=False, local_ready=False))
    d.frame(0.0)
    assert (d.released[0].outcome, d.released[0].reason) == (Outcome.DROPPED, "local_warming")
    d.feed(LocalReady(at=0.1, ok=False, error="engine build failed"))
    d.frame(0.2)
    assert d.released[-1].reason == "local_warming"


def test_local_error_is_a_drop_with_reason():
    d = Driver(DeviceCore(cfg(), cloud=False))
    d.frame(0.0)
    d.feed(LocalDone(at=0.01, seq=0, service_s=0.01, error="RuntimeError: boom"))
    assert (d.released[0].outcome, d.released[0].reason) == (Outcome.DROPPED, "local_error")


def test_close_then_flush_accounts_for_everything():
    d = Driver(DeviceCore(cfg(local_workers=1), cloud=False))
    for i in range(3):
        d.frame(0.0)
    d.feed(Close(at=0.01))
    d.frame(0.02)
    assert d.released == [] or d.released[-1].reason != "shutdown"  # frame 3 waits behind 0..2
    d.feed(Flush(at=0.03))
    assert [(r.seq, r.outcome, r.reason) for r in d.released] == [
        (0, Outcome.LATE, "shutdown"), (1, Outcome.DROPPED, "shutdown"), (2, Outcome.DROPPED, "shutdown"),
        (3, Outcome.DROPPED, "shutdown")]
    assert d.core.idle


def test_skipped_frames_are_accounted():
    d = Driver(DeviceCore(cfg(), cloud=False))
    d.feed(FrameSkipped(at=0.0, seq=0, reason=Reason.STALE_SOURCE))
    assert (d.released[0].outcome, d.released[0].reason) == (Outcome.DROPPED, Reason.STALE_SOURCE)


def test_bad_events_are_typed_errors():
    core = DeviceCore(cfg(), cloud=False)
    with pytest.raises(ConfigError, match="expected 0, got 5"):
        core.handle(FrameCaptured(at=0.0, seq=5))
    with pytest.raises(ConfigError, match="never sent"):
        core.handle(CloudDone(at=0.0, request=99))
    with pytest.raises(ConfigError, match="core event"):
        core.handle("frame")
    with pytest.raises(ConfigError):
        CoreConfig(local_workers=0)
    with pytest.raises(ConfigError):
        core.handle(FrameCaptured(at=0.0, seq=0, budget_s=-1))


def test_a_bad_event_is_rejected_before_anything_changes_time_included():
    d = Driver(DeviceCore(cfg(), cloud=False))
    d.frame(0.0)
    with pytest.raises(ConfigError, match="expected 1, got 5"):
        d.feed(FrameCaptured(at=1.0, seq=5))  # past frame 0's deadline: had time moved, it would be late
    d.feed(LocalDone(at=0.2, seq=0, service_s=0.2, answer="dets"))
    assert [(r.seq, r.outcome) for r in d.released] == [(0, Outcome.LOCAL)]


def test_a_frame_error_is_a_wire_status_and_nothing_else():
    assert CloudDone(at=0.0, request=1, frame_errors={0: "expired"}).frame_errors == {0: FrameStatus.EXPIRED}
    for bad in ("ok", "timeout", None):
        with pytest.raises(ConfigError, match="FrameStatus.EXPIRED or FrameStatus.ERROR"):
            CloudDone(at=0.0, request=1, frame_errors={0: bad})


def test_a_malformed_answer_leaves_its_request_open_for_the_right_one():
    d = Driver(DeviceCore(cloud_only(), cloud_warm=True))
    d.frame(0.0)
    (req,) = d.sent
    snap = d.core.snapshot(0.0)
    with pytest.raises(ConfigError, match="sent 1 frames but got 2 answers"):
        d.feed(CloudDone(at=0.1, request=req.request, answers=("a", "b"), metas=({}, {})))
    assert d.core.snapshot(0.0) == snap and d.released == []  # the pool still counts the request in flight
    with pytest.raises(ConfigError, match="frame sizes"):
        d.feed(Uploaded(at=0.05, request=req.request, frame_bytes=(100, 200)))
    d.feed(CloudDone(at=0.1, request=req.request, answers=("a",), metas=({},)))
    assert [(r.seq, r.outcome) for r in d.released] == [(0, Outcome.CLOUD)]


@pytest.mark.parametrize("seed", range(12))
def test_random_event_orders_end_every_frame_exactly_once_in_order_and_honestly(seed):
    """A driver with a random clock: answers, failures, timeouts, wakes in any order."""
    rng = random.Random(seed)
    core = DeviceCore(cfg(local_workers=rng.choice([1, 2]), max_inflight=rng.choice([1, 3]),
                          max_batch=rng.choice([1, 4]), window=rng.choice([4, 256]), cloud_timeout_s=0.4,
                          health=HealthConfig(max_fails=2, fail_timeout_s=0.3),
                          endpoints=tuple(EndpointSpec(name=f"e{i}", backup=i == 2) for i in range(rng.choice([1, 3])))),
                      local_ready=rng.random() < 0.7)
    d = Driver(core)
    pending = []  # (at, event factory)
    t = 0.0
    for _ in range(400):
        t += rng.expovariate(40)
        while pending and pending[0][0] <= t:
            at, make = pending.pop(0)
            d.tick_until(at)
            d.feed(make(at))
        d.tick_until(t)
        before = (len(d.local), len(d.sent), len(d.wakes))
        d.frame(t, budget_s=rng.choice([None, None, 0.2, 0.8]))
        for seq in d.local[before[0]:]:
            dt = rng.lognormvariate(-3.2, 0.5)
            fail = rng.random() < 0.05
            pending.append((t + dt, lambda at, s=seq, dt=dt, f=fail: LocalDone(at=at, seq=s, service_s=dt,
                                                                                error="boom" if f else None)))
        for req in d.sent[before[1]:]:
            dt = rng.lognormvariate(-2.0, 0.8)
            fail = rng.choice([None, None, None, Failure.UNAVAILABLE, Failure.TIMEOUT])
            n = len(req.seqs)
            expired = {i: "expired" for i in range(n) if rng.random() < 0.1}
            pending.append((t + dt, lambda at, r=req.request, f=fail, n=n, e=expired: CloudDone(
                at=at, request=r, answers=None if f else [None] * n, metas=None if f else [{}] * n, failure=f,
                frame_errors={} if f else e)))
        for w in d.wakes[before[2]:]:
            pending.append((t + rng.uniform(0.05, 1.0), lambda at, e=w.endpoint: WakeDone(
                at=at, endpoint=e, ok=rng.random() < 0.8,
                failure=Failure.MISMATCH if rng.random() < 0.02 else None)))
        if rng.random() < 0.01:
            pending.append((t + 0.01, lambda at: LocalReady(at=at)))
        pending.sort(key=lambda p: p[0])
    d.feed(Close(at=t))
    for at, make in pending:
        d.tick_until(at)
        d.feed(make(at))
    d.tick_until(t + 2.0)
    seqs = [r.seq for r in d.released]
    assert seqs == list(range(core.next_seq)) and core.idle
    for r in d.released:
        if r.outcome.within_budget:
            assert r.released_at <= r.deadline and r.route is not None
        if r.outcome is Outcome.DROPPED:
            assert r.reason


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


#: every module of the device core (edge_agent/core/), and the simulator's pure models
PURE = sorted("core" if p.stem == "__init__" else f"core.{p.stem}"
              for p in (Path(edge_agent.__file__).parent / "core").glob("*.py")) + ["sim.oracle", "sim.traces"]


@pytest.mark.parametrize("name", PURE)
def test_device_logic_imports_no_io(name):
    """No clocks, threads, sleeps, sockets or OpenCV in the device's logic."""
    import importlib

    module = importlib.import_module(f"edge_agent.{name}")
    forbidden = {"time", "threading", "socket", "asyncio", "cv2", "requests", "http", "subprocess", "concurrent",
                 "queue", "select"}
    assert not _imports(module) & forbidden, _imports(module) & forbidden
    assert edge_agent.core.DeviceCore  # the package exports the core


# -- the endpoint pool ------------------------------------------------------------------------
def pool_core(*specs, **kw):
    # the endpoints' story: an uplink fast enough not to matter (no prior to plan uploads with)
    kw.setdefault("uplink_prior_bps", None)
    return DeviceCore(cloud_only(endpoints=specs, **kw), cloud_warm=True)


def answer(d, req, at, **kw):
    n = len(req.seqs)
    d.feed(CloudDone(at=at, request=req.request, answers=[f"from-{req.endpoint}"] * n, metas=[{}] * n, **kw))


def test_least_outstanding_per_weight_spreads_the_load():
    d = Driver(pool_core(EndpointSpec(name="a"), EndpointSpec(name="b", weight=3.0), max_inflight=8))
    for i in range(8):
        d.frame(0.001 * i)
    by = [r.endpoint for r in d.sent]
    assert by.count(1) == 6 and by.count(0) == 2  # weight 3 takes three times the frames in flight


def test_a_batch_goes_to_one_endpoint_up_to_its_own_batch_size():
    d = Driver(pool_core(EndpointSpec(name="a", max_inflight=1, max_batch=2),
                         EndpointSpec(name="b", max_inflight=1, max_batch=5),
                         policy=PolicyConfig(latency_budget_s=5.0, mode="cloud")))
    for i in range(10):
        d.frame(0.001 * i)
    first = {r.endpoint: r for r in d.sent}
    answer(d, first[0], 0.05)
    answer(d, first[1], 0.05)
    sizes = {r.endpoint: len(r.seqs) for r in d.sent[2:]}
    assert sizes == {0: 2, 1: 5}


def test_backups_serve_only_while_no_primary_can():
    d = Driver(pool_core(EndpointSpec(name="primary"), EndpointSpec(name="backup", backup=True),
                         health=HealthConfig(max_fails=1, fail_timeout_s=5.0)))
    d.frame(0.0)
    assert d.sent[-1].endpoint == 0
    d.feed(CloudDone(at=0.01, request=d.sent[-1].request, failure=Failure.UNAVAILABLE))  # the primary goes out
    d.frame(0.02)
    assert d.sent[-1].endpoint == 1


def test_one_endpoint_on_another_model_is_dropped_from_the_pool_and_its_answer_never_used(caplog):
    d = Driver(pool_core(EndpointSpec(name="good"), EndpointSpec(name="wrong"), max_inflight=1))
    d.frame(0.0)
    d.frame(0.001)
    reqs = {r.endpoint: r for r in d.sent}
    d.feed(CloudDone(at=0.05, request=reqs[1].request, failure=Failure.MISMATCH, message="sha256 bbbb, expected aaaa"))
    answer(d, reqs[0], 0.06)
    snaps = {e.name: e.state for e in d.core.snapshot(0.06).endpoints}
    assert snaps == {"good": "ready", "wrong": "disabled"} and "OFFLOAD REFUSED by endpoint wrong" in caplog.text
    for i in range(6):
        d.frame(0.1 + 0.001 * i)
        answer(d, d.sent[-1], 0.11 + 0.001 * i)
    assert all(r.endpoint == 0 for r in d.sent[2:])
    assert all(r.endpoint in (None, "good") for r in d.released)  # no result from the other model, ever
    assert d.core.counters[("endpoint", "wrong", "model_mismatch")] == 1


def test_a_slow_endpoint_gets_less_traffic():
    d = Driver(pool_core(EndpointSpec(name="fast"), EndpointSpec(name="slow"), max_inflight=4))
    t, inflight = 0.0, []
    for i in range(300):
        t += 0.02
        while inflight and inflight[0][0] <= t:
            at, req = inflight.pop(0)
            d.tick_until(at)
            answer(d, req, at)
        n = len(d.sent)
        d.frame(t)
        for req in d.sent[n:]:
            inflight.append((t + (0.05 if req.endpoint == 0 else 0.25), req))
        inflight.sort(key=lambda x: x[0])
    by = [r.endpoint for r in d.sent]
    assert by.count(0) > 2 * by.count(1) > 0


def test_expired_frames_come_back_as_such_and_the_rest_of_the_batch_is_answered():
    d = Driver(pool_core(EndpointSpec(name="a", max_inflight=1, max_batch=3)))
    for i in range(4):
        d.frame(0.001 * i)
    answer(d, d.sent[0], 0.05)
    req = d.sent[1]
    answer(d, req, 0.1, frame_errors={1: "expired"})
    results = {r.seq: r for r in d.released}
    assert results[req.seqs[1]].reason == "expired_at_endpoint" and results[req.seqs[1]].outcome is Outcome.DROPPED
    assert results[req.seqs[0]].outcome is Outcome.CLOUD and results[req.seqs[0]].endpoint == "a"


def test_a_killed_endpoint_goes_out_and_the_others_carry_its_traffic():
    d = Driver(pool_core(EndpointSpec(name="a"), EndpointSpec(name="b"), health=HealthConfig(max_fails=2)))
    t, done = 0.0, 0
    for i in range(40):
        t += 0.01
        d.frame(t)
        while done < len(d.sent):  # answer every request, resent frames included
            req = d.sent[done]
            done += 1
            if req.endpoint == 1:  # b refuses every request
                d.feed(CloudDone(at=t + 0.001, request=req.request, failure=Failure.UNAVAILABLE))
            else:
                answer(d, req, t + 0.005)
    later = [r.endpoint for r in d.sent[10:]]
    assert later and set(later) == {0}  # a failure sends the traffic elsewhere at once
    assert d.core.pool.endpoints[1].failures >= 1 and all(r.outcome is not Outcome.DROPPED for r in d.released)


def test_an_endpoint_failing_again_and_again_goes_out_of_rotation():
    d = Driver(pool_core(EndpointSpec(name="only"), health=HealthConfig(max_fails=3, fail_timeout_s=0.8)))
    drive_cloud_failures(d, 3, 0.0)
    assert [e.state for e in d.core.snapshot(0.1).endpoints] == ["out"]
    assert d.core.counters[("endpoint", "only", "taken_out")] == 1


def _slow_stale_link():
    """A hybrid core whose local backend is still warming up, uploading PNG only, whose uplink was measured at 16.7 kB/s (its frames
    of 7.5 kB do not fit a 0.5 s budget on it) and then left unused for over ``probe_after_s``."""
    d = Driver(DeviceCore(cfg(ladder=Ladder.parse("png")), cloud_warm=True, local_ready=False))
    d.frame(0.0)
    (first,) = d.sent
    d.feed(Uploaded(at=0.45, request=first.request, frame_bytes=(7_500,)))
    d.feed(CloudDone(at=0.48, request=first.request, answers=("c",), metas=({},)))
    assert d.core.link.goodput(0.48) == pytest.approx(7_500 / 0.45, rel=0.01)
    d.tick_until(2.0)
    assert d.core.link.stale(2.0, d.core.cfg.probe_after_s)
    return d


def test_a_probe_of_a_slow_stale_link_is_sent_with_a_budget_the_client_can_upload():
    """The probe is a chance: its planned upload would spend its whole budget, so the budget on
    the wire is net of the network time only. Net of the planned upload too, the client would
    answer it expired without uploading it, the link would never be measured again, and every
    next frame would go the same way (780 requests, 777 never uploaded, over a real 1 Mbit/s drive)."""
    d = _slow_stale_link()
    d.frame(2.0)
    probe = d.sent[-1]
    assert probe.seqs == (1,) and probe.encodings == (d.core.cfg.ladder.floor.name,)
    planned_upload = d.core.link.upload_end(2.0, d.core.sizes.estimate(d.core.cfg.ladder.floor)) - 2.0
    assert planned_upload > BUDGET  # the plan says it cannot make it
    assert probe.deadlines[0] - 2.0 - probe.network_s > 0.4  # yet the client gets to upload it


def test_frames_the_client_did_not_upload_are_not_the_endpoints_expiries():
    d = _slow_stale_link()
    d.frame(2.0)
    probe = d.sent[-1]
    samples = d.core.pool.model.count if hasattr(d.core.pool.model, "count") else None
    missing = d.core._headroom.missing
    d.feed(CloudDone(at=2.01, request=probe.request, answers=(None,), metas=({},),
                     frame_errors={0: FrameStatus.EXPIRED}, uploaded=False))
    assert d.core.counters[("uplink", "not_sent_requests")] == 1
    assert d.core.counters[("endpoint", "cloud", "frames_expired")] == 0  # not the endpoint's answer
    assert d.core._headroom.missing == missing
    if samples is not None:
        assert d.core.pool.model.count == samples
    (r,) = [r for r in d.released if r.seq == 1]
    assert (r.outcome, r.reason) == (Outcome.DROPPED, "uplink_too_slow")
    with pytest.raises(ConfigError, match="uploaded=False"):
        CloudDone(at=2.02, request=probe.request, answers=("c",), metas=({},), uploaded=False)


def test_a_request_reported_uploaded_cannot_be_answered_as_not_sent():
    d = Driver(DeviceCore(cloud_only(), cloud_warm=True))
    d.frame(0.0)
    (req,) = d.sent
    d.feed(Uploaded(at=0.05, request=req.request, frame_bytes=(1000,)))
    snap = d.core.snapshot(0.1)
    with pytest.raises(ConfigError, match="not uploaded"):
        d.feed(CloudDone(at=0.1, request=req.request, answers=(None,), metas=({},),
                         frame_errors={0: FrameStatus.EXPIRED}, uploaded=False))
    assert d.core.snapshot(0.1) == snap


def test_a_cloud_answer_back_after_its_deadline_counts_as_missed_like_an_expired_one():
    d = Driver(DeviceCore(cloud_only(), cloud_warm=True))
    d.frame(0.0)
    d.frame(0.01)
    (first,) = d.sent  # one upload at a time until the link is measured
    d.feed(Uploaded(at=0.2, request=first.request, frame_bytes=(1000,)))
    d.feed(CloudDone(at=0.3, request=first.request, answers=("c",), metas=({},)))
    assert d.core._headroom.missing == 0.0
    second = d.sent[-1]
    assert second.seqs == (1,)
    d.feed(CloudDone(at=0.7, request=second.request, answers=("c",), metas=({},)))  # after its 0.51 s deadline
    assert d.core._headroom.missing == pytest.approx(0.5)


# -- the uplink: the encoding and the link's projection --------------------------------------
def over_a_link(core: DeviceCore, *, fps: float, seconds: float, link_Bps: float = 1e6,
                sizes: dict | None = None, encoded: bool = True) -> Driver:
    """Frames at ``fps`` for ``seconds`` through a FIFO uplink of ``link_Bps`` to an endpoint that
    answers 20 ms after a request's upload has left (the driver reports Encoded, Uploaded, CloudDone)."""
    sizes = sizes or {"png": 100_000, "jpeg70": 10_000}
    d, queue, link_free, handled, order = Driver(core), [], 0.0, 0, 0

    def push(at, event):
        nonlocal order
        order += 1
        heapq.heappush(queue, (at, order, event))

    for i in range(int(seconds * fps)):
        push(i / fps, lambda at: FrameCaptured(at=at, seq=d.core.next_seq))
    while queue or d.core.next_timer() is not None:
        timer = d.core.next_timer()
        if timer is not None and (not queue or timer < queue[0][0]):
            d.feed(Tick(at=max(timer, d.now)))
        else:
            at, _, make = heapq.heappop(queue)
            d.feed(make(at))
        for req in d.sent[handled:]:
            frame_bytes = tuple(sizes[e] for e in req.encodings)
            start = max(d.now, link_free)
            link_free = start + sum(frame_bytes) / link_Bps
            if encoded:
                push(d.now, lambda at, r=req.request, b=frame_bytes: Encoded(at=at, request=r, frame_bytes=b))
            push(link_free, lambda at, r=req.request, b=frame_bytes: Uploaded(at=at, request=r, frame_bytes=b))
            push(link_free + 0.02, lambda at, r=req.request, n=len(req.seqs): CloudDone(
                at=at, request=r, answers=("c",) * n, metas=({},) * n))
        handled = len(d.sent)
    return d


def test_the_encoding_is_one_the_link_can_carry_for_every_frame_sent_not_only_for_this_one():
    """Lossless takes 0.1 s a frame on this link: each one alone fits its deadline, but at 20 frames
    a second the link falls behind at once and the frames after it are late (a real Verizon LTE
    uplink, in the simulator: 300 frames a minute lost). The ladder steps down to what keeps up."""
    ladder = Ladder.parse("png,jpeg70")
    busy = over_a_link(DeviceCore(cloud_only(ladder=ladder), cloud_warm=True), fps=20, seconds=4)
    later = [e for req in busy.sent if req.seqs[0] >= 20 for e in req.encodings]
    assert later and set(later) == {"jpeg70"}
    assert all(r.outcome is Outcome.CLOUD for r in busy.released if r.seq >= 20)
    # two frames a second: the link keeps up with lossless, and lossless it is
    calm = over_a_link(DeviceCore(cloud_only(ladder=ladder), cloud_warm=True), fps=2, seconds=4)
    assert {e for req in calm.sent[1:] for e in req.encodings} == {"png"}
    assert all(r.outcome is Outcome.CLOUD for r in calm.released)


def test_the_real_encoded_sizes_move_the_links_projection():
    """A scene that changes makes frames larger than the last ones: planned at the old size, the
    next upload would be put on a link still busy with this one."""
    d = over_a_link(DeviceCore(cloud_only(ladder=Ladder.parse("jpeg70")), cloud_warm=True), fps=2, seconds=1,
                    sizes={"jpeg70": 10_000})
    assert d.core.sizes.estimate(Ladder.parse("jpeg70").floor) == 10_000
    d.frame(2.0)
    req = d.sent[-1]
    before = d.core.link.free_at(2.0)
    d.feed(Encoded(at=2.0, request=req.request, frame_bytes=(40_000,)))
    g = d.core.link.plan_Bps(2.0)
    assert d.core.link.free_at(2.0) == pytest.approx(before + 30_000 / g)
    assert d.core.sizes.estimate(Ladder.parse("jpeg70").floor) > 10_000  # learnt before the upload ends
    d.feed(Uploaded(at=2.05, request=req.request, frame_bytes=(40_000,)))
    assert d.core.link.sent_bytes == 2 * 10_000 + 40_000  # counted once
    for bad in ((1, 2), (-5,)):
        d.frame(3.0)
        with pytest.raises(ConfigError, match="frame sizes"):
            d.feed(Encoded(at=3.0, request=d.sent[-1].request, frame_bytes=bad))


def test_the_next_upload_goes_onto_the_link_one_round_trip_before_this_one_is_acknowledged():
    """The device hears that an upload left one round trip after its last byte did: waiting for
    that, the link would idle for a round trip between uploads (a quarter of a 1 Mbit/s link)."""
    from edge_agent.core.link import Uplink

    link = Uplink(prior_bps=8e6, safety=1.0)
    link.start(1, 0.0, 10_000)
    link.finish(1, 0.06, rtt_s=0.05)  # 10 kB in 10 ms, acknowledged 50 ms later
    end = link.start(2, 1.0, 100_000)  # 100 ms on the link
    assert end == pytest.approx(1.1)
    assert not link.accepting(1.0) and link.accepting(end - 0.05 - link.lead_s)
