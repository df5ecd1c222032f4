"""The router on its own: a frame admitted, shown to the policy, and sent where the policy says.

:class:`edge_agent.core.routing.Router` is tested here without the core, over the core's real parts
(``core_parts.Parts``) and with scripted policies, fed event times.
"""

from __future__ import annotations

import math

import pytest

from edge_agent.core.events import FrameCaptured, FrameSkipped, Wake
from edge_agent.core.frames import Outcome, Reason, Route
from edge_agent.core.policy import CloudState
from edge_agent.core.window import Stage
from yolo_edge.errors import ConfigError

from core_parts import BUDGET, Parts, always


def test_a_captured_frame_is_numbered_and_goes_where_the_policy_says():
    p = Parts(policy=always(Route.LOCAL, Reason.LOCAL_FITS))
    assert p.router.admit(FrameCaptured(at=0.0, seq=0), closing=False) == []
    f = p.frames[0]
    assert p.router.next_seq == 1 and f.deadline == BUDGET and f.reason is Reason.LOCAL_FITS
    assert f.stage is Stage.LOCAL_QUEUE and list(p.lane.queue) == [0] and not p.ended
    assert p.counters[("decision", "local", "local_fits")] == 1 and not p.router.offloading


def test_a_frame_per_frame_budget_and_capture_time_set_its_deadline():
    p = Parts(policy=always(Route.LOCAL, Reason.LOCAL_FITS))
    p.router.admit(FrameCaptured(at=1.0, seq=0, captured_at=0.9, budget_s=0.2), closing=False)
    assert p.frames[0].captured == 0.9 and p.frames[0].deadline == pytest.approx(1.1)


def test_a_frame_that_comes_while_closing_or_too_old_is_dropped_without_the_policy():
    def never(obs):
        raise AssertionError("the policy was asked")

    p = Parts(policy=never)
    p.router.admit(FrameCaptured(at=0.0, seq=0), closing=True)
    p.router.admit(FrameCaptured(at=1.0, seq=1, captured_at=0.0), closing=False)
    assert p.ended == [(0, Outcome.DROPPED, Reason.SHUTDOWN), (1, Outcome.DROPPED, Reason.EXPIRED)]
    assert p.router.next_seq == 2


def test_a_skipped_frame_is_dropped_for_the_sources_reason():
    p = Parts()
    p.router.skipped(FrameSkipped(at=0.0, seq=0, reason=Reason.STALE_SOURCE))
    assert p.ended == [(0, Outcome.DROPPED, Reason.STALE_SOURCE)] and p.router.next_seq == 1


def test_the_policy_sees_the_device_as_it_is_for_that_frame():
    p = Parts()
    p.frame(0, Stage.LOCAL_RUN)
    p.frame(1, Stage.CLOUD_QUEUE)
    obs = p.router.observe(p.frame(2, at=0.1), 0.2)
    assert (obs.frame_age_s, obs.budget_s) == (pytest.approx(0.1), BUDGET)
    assert (obs.local_busy, obs.local_queued, obs.local_ready, obs.local_left_s) == (1, 0, True, (0.05,))
    assert (obs.cloud_state, obs.cloud_pending, obs.cloud_capacity) == (CloudState.READY, 1, 2)
    assert obs.cloud_eta_s is None and not obs.cloud_probe_due  # nothing measured yet, and a frame is queued


def test_a_frame_the_cloud_cannot_take_is_shown_the_cloud_out_of_reach():
    p = Parts()
    f = p.frame(0)
    slow_link = p.router.observe(f, 0.0, cloud_block=Reason.UPLINK_TOO_SLOW)
    assert slow_link.cloud_link_s == math.inf and slow_link.cloud_eta_s == math.inf
    assert not slow_link.cloud_link_free and not slow_link.cloud_probe_due
    gone = p.router.observe(f, 0.0, cloud_block=Reason.CLOUD_BUSY)
    assert gone.cloud_link_s == 0.0 and gone.cloud_eta_low_s == math.inf


def test_to_the_cloud_it_joins_the_cloud_queue_and_counts_as_wanted_there():
    p = Parts(policy=always(Route.CLOUD, Reason.LOCAL_OVER_BUDGET))
    p.router.route(p.frame(0), 0.0)
    assert p.frames[0].stage is Stage.CLOUD_QUEUE and list(p.dispatch.queue) == [0]
    assert p.router.offloading and p.headroom.cloud_rate(0.0) == 1.0


def test_a_drop_ends_the_frame_with_the_decisions_reason():
    p = Parts(policy=always(Route.DROP, Reason.CLOUD_BUSY))
    p.router.route(p.frame(0), 0.0)
    assert p.ended == [(0, Outcome.DROPPED, Reason.CLOUD_BUSY)]
    assert p.headroom.cloud_rate(0.0) == 1.0  # it wanted the cloud, which could not take it
    assert p.counters[("decision", "drop", "cloud_busy")] == 1


def test_a_wake_the_decision_asks_for_is_handed_back_to_the_core():
    p = Parts(policy=always(Route.LOCAL, Reason.LOCAL_FITS, wake=True), cold=True)
    assert p.router.route(p.frame(0), 0.0) == [Wake(0, p.cfg.wake_timeout_s)]


def test_a_baseline_that_sends_a_blocked_frame_to_the_cloud_drops_it_with_the_block():
    p = Parts(policy=always(Route.CLOUD, Reason.ABOVE_THRESHOLD))
    f = p.frame(0, Stage.CLOUD_QUEUE)
    p.dispatch.queue.clear()
    p.router.route(f, 0.0, fallback=True, cloud_block=Reason.UPLINK_TOO_SLOW)
    assert p.ended == [(0, Outcome.DROPPED, Reason.UPLINK_TOO_SLOW)]
    assert not p.router.offloading  # a frame given back does not change the policy's mode


def test_a_route_the_device_cannot_take_is_a_config_error():
    warming = Parts(policy=always(Route.LOCAL, Reason.LOCAL_FITS), local_ready=False)
    with pytest.raises(ConfigError, match="not ready"):
        warming.router.route(warming.frame(0), 0.0)
    local_only = Parts(policy=always(Route.CLOUD, Reason.CLOUD_ONLY), cloud=False)
    with pytest.raises(ConfigError, match="no cloud is configured"):
        local_only.router.route(local_only.frame(0), 0.0)


def test_a_failed_request_gives_back_only_its_own_frames_and_a_hedged_one_keeps_its_local_run():
    p = Parts(policy=always(Route.LOCAL, Reason.FALLBACK_CLOUD_FAILING), batch=3)
    send = p.send(0, 1, 2)
    p.frames[1].hedged = True
    p.hedger.both.start(1)
    p.frames[2].move(Stage.DONE)  # it left already
    req = p.dispatch.requests[send.request]
    assert p.router.give_back(req, 0.1) == []
    assert p.frames[0].stage is Stage.LOCAL_QUEUE and list(p.lane.queue) == [0] and p.frames[0].request is None
    assert p.frames[1].stage is Stage.LOCAL_RUN and not p.frames[1].hedged and 1 not in p.hedger.both


def test_a_request_not_uploaded_sends_its_frames_back_with_the_uplink_too_slow():
    seen = []
    p = Parts(policy=always(Route.DROP, Reason.UPLINK_TOO_SLOW, seen=seen))
    req = p.dispatch.requests[p.send(0).request]
    p.router.not_sent(req, 0.2)
    assert p.counters[("uplink", "not_sent_requests")] == 1
    assert seen[0].cloud_link_s == math.inf and p.ended == [(0, Outcome.DROPPED, Reason.UPLINK_TOO_SLOW)]
    # a request that timed out gave its frames back then: not again
    p2 = Parts(policy=always(Route.DROP, Reason.UPLINK_TOO_SLOW))
    req2 = p2.dispatch.requests[p2.send(0).request]
    req2.timed_out = True
    assert p2.router.not_sent(req2, 0.6) == [] and not p2.ended
