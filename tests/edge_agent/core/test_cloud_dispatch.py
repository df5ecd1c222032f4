"""The cloud dispatcher on its own: its queue, its requests, their timeouts, the uplink they cross.

:class:`edge_agent.core.dispatch.CloudDispatch` books a request once, from its send to its answer or
its timeout, and hands back what the core must decide (the frames of a failed or timed-out
request); the hedger (:class:`edge_agent.core.hedge.Hedger`) runs cloud frames locally as well.
Both are tested here without the core, fed event times.
"""

from __future__ import annotations

from collections import Counter

import pytest

from edge_agent.core.dispatch import CloudDispatch
from edge_agent.core.events import CloudDone, Encoded, Failure, RunLocal, Uploaded
from edge_agent.core.estimators import WindowedQuantile
from edge_agent.core.hedge import Headroom, Hedger
from edge_agent.core.lane import LocalLane
from edge_agent.core.link import Ladder
from edge_agent.core.policy import PolicyConfig
from edge_agent.core.pool import CloudPool, EndpointSpec
from edge_agent.core.window import FrameState, ReleaseWindow, Stage
from yolo_edge.errors import ConfigError
from yolo_edge.remote.health import HealthConfig
from yolo_edge.remote.wire import FrameStatus


def parts(*, prior_bps: float | None = None, timeout_s: float = 0.5, batch: int = 1):
    frames, counters = ReleaseWindow(64), Counter()
    pool = CloudPool((EndpointSpec(),), max_inflight=2, max_batch=batch, health=HealthConfig(), cold=False,
                     estimator_horizon_s=3.0, counters=counters)
    headroom = Headroom()
    d = CloudDispatch(policy=PolicyConfig(latency_budget_s=0.5), ladder=Ladder.parse(None), timeout_s=timeout_s,
                      probe_after_s=1.0, uplink_prior_bps=prior_bps, frames=frames, pool=pool, headroom=headroom,
                      counters=counters)
    return d, frames, pool, headroom, counters


def queue(d: CloudDispatch, frames: ReleaseWindow, *seqs: int, at: float = 0.0) -> None:
    for seq in seqs:
        f = frames.add(FrameState(seq, captured=at, deadline=at + 0.5, budget=0.5))
        f.move(Stage.CLOUD_QUEUE)
        d.queue.append(seq)


def test_a_request_is_booked_once_from_its_send_to_its_answer():
    d, frames, pool, _, counters = parts()
    queue(d, frames, 0)
    ep, seqs, rung = d.plan(0.0)
    send = d.send(ep, seqs, rung, 0.0)
    assert send.seqs == (0,) and send.deadlines == (0.5,) and send.timeout_s == 0.5
    assert not d.queue and frames[0].stage is Stage.CLOUD_FLIGHT and frames[0].request == send.request
    assert pool.frames == 1 and counters["requests"] == 1 and d.next_timer(0.0) == pytest.approx(0.5)
    req = d.done(CloudDone(at=0.1, request=send.request, answers=("dets",)))
    assert req.seqs == (0,) and not d.requests and pool.frames == 0
    d.answered(req, CloudDone(at=0.1, request=send.request, answers=("dets",)))
    assert pool.model.quantile(0, 0.5, 0.1) == pytest.approx(0.1)  # what it took, for the estimate
    assert d.next_timer(0.1) is None and list(d.expire(1.0)) == []  # its timeout went with it


def test_a_timed_out_request_is_yielded_once_and_counted_against_its_endpoint():
    d, frames, pool, _, counters = parts()
    queue(d, frames, 0, 1)
    for _ in range(2):
        d.send(*d.plan(0.0), 0.0)
    assert list(d.expire(0.4)) == []
    timed_out = [r.seqs for r in d.expire(0.5)]
    assert timed_out == [(0,), (1,)] and counters["cloud_timeouts"] == 2 and pool.frames == 0
    assert list(d.expire(0.6)) == []
    # the late failure of a timed-out request: counted, not against the endpoint twice, frames not re-routed
    req = d.done(CloudDone(at=0.7, request=1, failure=Failure.TIMEOUT))
    assert d.failed(req, CloudDone(at=0.7, request=1, failure=Failure.TIMEOUT)) is False
    assert counters["cloud_failure_timeout"] == 1


def test_a_failure_is_the_endpoints_and_its_frames_go_back_to_the_core():
    d, frames, _, _, counters = parts()
    queue(d, frames, 0)
    send = d.send(*d.plan(0.0), 0.0)
    ev = CloudDone(at=0.05, request=send.request, failure=Failure.UNAVAILABLE, message="refused")
    assert d.failed(d.done(ev), ev) is True and counters["cloud_failure_unavailable"] == 1


def test_an_all_expired_answer_says_the_answer_would_have_come_after_the_last_deadline():
    d, frames, pool, _, _ = parts()
    queue(d, frames, 0)
    send = d.send(*d.plan(0.0), 0.0)
    ev = CloudDone(at=0.02, request=send.request, answers=(None,), frame_errors={0: FrameStatus.EXPIRED})
    d.answered(d.done(ev), ev)
    assert pool.model.quantile(0, 0.5, 0.6) >= 0.5  # not a 20 ms answer


def test_events_about_a_request_are_checked_before_anything_changes():
    d, frames, _, _, _ = parts()
    queue(d, frames, 0)
    send = d.send(*d.plan(0.0), 0.0)
    with pytest.raises(ConfigError, match="never sent"):
        d.check(CloudDone(at=0.1, request=99, answers=("x",)))
    with pytest.raises(ConfigError, match="got 2 answers"):
        d.check(CloudDone(at=0.1, request=send.request, answers=("x", "y")))
    with pytest.raises(ConfigError, match="2 frame sizes"):
        d.check(Encoded(at=0.01, request=send.request, frame_bytes=(10, 20)))
    with pytest.raises(ConfigError, match="whole numbers of bytes"):
        d.check(Uploaded(at=0.01, request=send.request, frame_bytes=(-1,)))
    assert send.request in d.requests and frames[0].stage is Stage.CLOUD_FLIGHT  # nothing changed


def test_the_real_sizes_and_the_upload_move_the_uplink():
    d, frames, _, _, _ = parts(prior_bps=8e6)  # 1 MB/s
    queue(d, frames, 0)
    send = d.send(*d.plan(0.0), 0.0)
    d.encoded(Encoded(at=0.01, request=send.request, frame_bytes=(200_000,)))
    # its time on the link, from its real size at the goodput planned for
    assert d.link.free_at(0.01) == pytest.approx(200_000 / d.link.plan_Bps(0.01), rel=0.01)
    d.uploaded(Uploaded(at=0.15, request=send.request, frame_bytes=(200_000,)))
    assert d.uploads_reported and d.requests[send.request].uploaded_at == 0.15
    assert d.sizes.estimate(frames[0].rung) == 200_000


def test_the_head_that_no_encoding_gets_across_in_time_is_handed_back():
    d, frames, _, _, _ = parts(prior_bps=8e6)
    d.uploaded(Uploaded(at=0.0, request=0, frame_bytes=()))  # the driver reports uploads
    d.link.start(100, 0.0, 2_000_000)  # 2 s of another upload still on the link
    queue(d, frames, 0)
    assert d.plan(0.0) == "uplink_too_slow"


def hedger(d, frames, pool, headroom, counters, *, busy: bool = False) -> tuple[Hedger, LocalLane]:
    lane = LocalLane(workers=1, ready=True, estimator=WindowedQuantile(32), prior_s=0.1)
    if busy:
        lane.start(99, 0.0)
    return Hedger(enabled=True, lane=lane, dispatch=d, frames=frames, pool=pool, headroom=headroom,
                  counters=counters, local_quantile=0.75, probe_after_s=1.0, uploads_share_local_cpu=False), lane


def test_an_idle_worker_takes_a_queued_cloud_frame_at_the_last_moment_a_local_run_still_makes_it():
    d, frames, pool, headroom, counters = parts()
    queue(d, frames, 0)
    h, lane = hedger(d, frames, pool, headroom, counters)
    assert h.next_due(0.0) == pytest.approx(0.4)  # deadline 0.5 less a 0.1 s run
    assert h.step(0.3) == []  # the cloud still has time
    assert h.step(0.4) == [RunLocal(0)]
    assert frames[0].stage is Stage.LOCAL_RUN and not d.queue and lane.busy == 1
    assert counters[("hedge", "moved_local")] == 1


def test_a_frame_in_flight_runs_on_both_routes_and_the_second_answer_is_only_counted():
    d, frames, pool, headroom, counters = parts()
    queue(d, frames, 0)
    d.send(*d.plan(0.0), 0.0)
    h, _ = hedger(d, frames, pool, headroom, counters)
    assert h.step(0.4) == [RunLocal(0)]
    assert frames[0].hedged and frames[0].stage is Stage.CLOUD_FLIGHT and 0 in h.both
    assert not h.both.second(0) and h.both.second(0)


def test_a_disabled_hedger_never_hedges_or_rescues():
    d, frames, pool, headroom, counters = parts()
    queue(d, frames, 0)
    h, _ = hedger(d, frames, pool, headroom, counters)
    h.enabled = False
    assert h.next_due(0.0) is None and h.step(0.45) == [] and not h.rescue(frames[0], 0.1)
