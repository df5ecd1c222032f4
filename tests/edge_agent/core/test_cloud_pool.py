"""The device's endpoint pool (edge_agent.core.pool.CloudPool) over the SDK's balancer, driven with event times.

The rules themselves are pinned in tests/yolo_edge/remote/test_balancer.py; these pin what the
device adds (its answer-time estimates in the choice, the phases it shows, its counters)
and that the state is the balancer's, not a copy.
"""

from __future__ import annotations

from collections import Counter

from edge_agent.core.events import Failure, Wake
from edge_agent.core.policy import CloudState
from edge_agent.core.pool import CloudPool, EndpointSpec, Phase
from yolo_edge.remote.balancer import MemberState
from yolo_edge.remote.health import HealthConfig


def pool(*names: str, cold: bool = False, **health) -> CloudPool:
    return CloudPool(tuple(EndpointSpec(name=n) for n in names), max_inflight=2, max_batch=4,
                     health=HealthConfig(**health), cold=cold, counters=Counter())


def test_the_endpoints_state_is_the_balancers():
    p = pool("a", "b")
    a, b = p.endpoints
    assert [m.client for m in p.balancer.members] == [a, b] and (a.max_inflight, a.max_batch) == (2, 4)
    p.sent(a, 3)
    assert (a.requests, a.frames, p.balancer.members[0].outstanding_frames, p.frames) == (1, 3, 3, 3)
    p.finished(a, 3)
    assert (a.requests, a.frames) == (0, 0) and p.counters[("endpoint", "a", "requests")] == 1


def test_the_choice_weighs_the_device_estimates_and_the_age_of_a_request_held():
    p = pool("a", "b")
    a, b = p.endpoints
    for t in range(8):  # a answers in 0.1 s, b in 0.3 s
        p.answered(a, n=1, since=t, depth=0, now=t + 0.1)
        p.answered(b, n=1, since=t, depth=0, now=t + 0.3)
    assert p.pick(10.0, deadline=10.2) is a and p.pick(10.0, deadline=10.05) is a  # fits; else the soonest
    p.sent(a, 4)
    assert p.pick(10.0) is b  # both fit: the fewer frames outstanding
    # a holds a request sent 1 s ago: its answer time is at least that, and it fits no more
    assert p.pick(10.0, deadline=10.5, held_since=lambda e: 9.0 if e is a else None) is b


def test_phases_cold_waking_ready_out_probing_and_back_at_event_times():
    p = pool("a", cold=True, max_fails=1, fail_timeout_s=0.5)
    (a,) = p.endpoints
    assert a.phase is Phase.COLD and p.view(0.0) == (CloudState.COLD, 1) and p.pick(0.0) is None
    assert p.wake(2.0) == [Wake(0, 2.0)] and a.phase is Phase.WAKING and p.wake(2.0) == []
    p.woken(0, 0.1, ok=False, failure=None, message="")
    assert a.phase is Phase.COLD and p.counters["wake_failures"] == 1
    p.wake(2.0)
    p.woken(0, 0.2, ok=True, failure=None, message="")
    assert a.phase is Phase.READY and p.view(0.2) == (CloudState.READY, 8)
    p.failed(a, 1.0, Failure.UNAVAILABLE, message="503")
    assert a.phase is Phase.OUT and p.next_timer() == 1.5 and p.counters[("endpoint", "a", "taken_out")] == 1
    assert p.probes_due(1.4) == [] and p.probes_due(1.5) == [Wake(0, 0.0)] and a.phase is Phase.PROBING
    p.woken(0, 1.6, ok=True, failure=None, message="")
    assert a.phase is Phase.READY and a.member.state is MemberState.READY and a.failures == 1


def test_a_mismatch_disables_for_good_and_is_counted_once():
    p = pool("a", "b")
    a, _ = p.endpoints
    p.failed(a, 0.0, Failure.MISMATCH, message="it serves model 'fall'")
    p.failed(a, 0.1, Failure.MISMATCH, message="it serves model 'fall'")
    p.failed(a, 5.0, Failure.TIMEOUT)
    snap = p.snapshot(5.0)[0]
    assert (snap.state, snap.reason, snap.failures) == ("disabled", "it serves model 'fall'", 3)
    assert p.counters[("endpoint", "a", "model_mismatch")] == 1 and p.probes_due(10.0) == []
