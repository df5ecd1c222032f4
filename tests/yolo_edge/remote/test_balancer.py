"""The pools' shared rules (yolo_edge.remote.balancer): the model rule, who serves, health transitions.

Both drivers (EndpointPool, tests/yolo_edge/test_pool*.py; the agent's CloudPool,
tests/edge_agent/core/test_core.py and test_agent_pool_model.py) are tested through them; these
pin the rules themselves.
"""

from __future__ import annotations

import math

import pytest

from yolo_edge.remote.balancer import Health, HealthConfig, ModelRule, failed, on_success, probe_failed, serving

A, B = "a" * 64, "b" * 64


def test_a_given_model_is_never_replaced_by_an_answer():
    rule = ModelRule(A.upper(), name="coco")
    assert rule.sha256 == A
    assert rule.judge(A, "coco") is None and rule.judge(A.upper(), first=True) is None
    assert "serves model 'fall' with sha256 bbbbbbbbbbbb..., not the pool's aaaaaaaaaaaa" in rule.judge(B, "fall",
                                                                                                       first=True)
    assert rule.judge("", first=True) == "it does not say which model it serves" and rule.sha256 == A


def test_without_one_only_the_first_endpoint_names_the_model_and_then_it_is_fixed():
    rule = ModelRule()
    assert "first endpoint's" in rule.judge(B, "fall") and rule.sha256 is None  # a heavier, faster second: refused
    assert rule.judge("", first=True) is not None and rule.sha256 is None  # nameless: names nothing
    assert rule.judge(A, first=True) is None and (rule.sha256, rule.name) == (A, "?")
    assert rule.judge(A, "coco") is None and rule.name == "coco"  # a later answer may tell the name
    assert rule.judge(B, "fall", first=True) is not None and rule.sha256 == A  # never voted again


def test_backups_serve_only_while_no_primary_is_in_rotation():
    members = [("p1", False, False), ("p2", False, True), ("b1", True, True)]  # (name, backup, in rotation)
    names = lambda ms: [m[0] for m in ms]  # noqa: E731
    kw = dict(in_rotation=lambda m: m[2], backup=lambda m: m[1])
    assert names(serving(members, **kw)) == ["p2"]
    assert names(serving([members[0], members[2]], **kw)) == ["b1"]
    assert serving([members[0]], **kw) == []


def test_max_fails_within_fail_timeout_takes_out_once_and_a_failed_probe_keeps_out():
    cfg = HealthConfig(max_fails=2, fail_timeout_s=1.0)
    h, out = failed(Health(), now=0.0, cfg=cfg)
    assert not out and not h.out(0.0)
    h, out = failed(h, now=1.5, cfg=cfg)  # the first is older than fail_timeout_s: forgotten
    assert not out
    h, out = failed(h, now=2.0, cfg=cfg)
    assert out and h.out_until == 3.0
    h, out = failed(h, now=2.5, cfg=cfg)  # sent before it went out, failing late: nothing new
    assert not out and h.out_until == 3.0
    assert probe_failed(now=3.0, cfg=cfg).out_until == 4.0
    assert probe_failed(now=3.0, cfg=cfg, retry_after_s=7.0).out_until == 10.0
    h, out = failed(Health(), now=0.0, cfg=cfg, retry_after_s=5.0)  # the server said when: at once
    assert out and h.out_until == pytest.approx(5.0)
    assert on_success(h).out_until == -math.inf and on_success(h).fails == ()


# -- the device's driver: deadline-aware choice, wakes and probes at event times ----------------
from yolo_edge.remote.balancer import Balancer, Change, Member, MemberState  # noqa: E402


def device(*members: Member, **health) -> Balancer:
    """A balancer as the agent's CloudPool drives it: members up (woken), health timed by event times."""
    bal = Balancer(members, model=ModelRule(), health=HealthConfig(**health), join_on_use=False)
    for m in members:
        m.state = MemberState.READY
    return bal


def test_pick_takes_the_fewest_frames_per_weight_among_those_that_answer_by_the_deadline():
    a, b = Member(0, "a", max_inflight=4), Member(1, "b", weight=3.0, max_inflight=4)
    bal = device(a, b)
    eta = {"a": 0.1, "b": 0.3}
    pick = lambda deadline=math.inf: bal.pick(0.0, eta=lambda m: eta[m.name], deadline=deadline)  # noqa: E731
    assert pick() is b  # (0 + 1) / 3 < (0 + 1) / 1: the new request counted in
    bal.sent(b, frames=2)
    assert pick() is a  # (2 + 1) / 3 == (0 + 1) / 1: tie to the first...
    assert bal.pick(0.0, typical=lambda m: eta[m.name] if m is a else 0.0) is b  # ...unless the other answers sooner
    assert pick(deadline=0.2) is a  # only a answers in time
    bal.sent(a, frames=5)
    assert pick(deadline=0.05) is a  # none fits: the one that answers soonest, whatever its load


def test_pick_passes_over_full_members_and_ones_that_failed_lately():
    a, b = Member(0, "a", max_inflight=1), Member(1, "b", max_inflight=1)
    bal = device(a, b, max_fails=3, fail_timeout_s=1.0)
    bal.failed(a, "timeout", now=0.0)
    assert a.health.recent(0.5, bal.health) == 1 and bal.pick(0.5) is b
    assert bal.pick(1.5) is a  # the failure is older than fail_timeout_s: forgotten
    bal.sent(a), bal.sent(b)
    assert bal.pick(1.5) is None  # every serving member is full
    bal.done(b)
    assert bal.pick(1.5) is b and (b.outstanding, b.outstanding_frames) == (0, 0)


def test_backups_are_picked_only_while_no_primary_is_in_rotation():
    p, backup = Member(0, "p"), Member(1, "backup", backup=True)
    bal = device(p, backup, max_fails=1, fail_timeout_s=1.0)
    assert bal.pick(0.0) is p
    bal.failed(p, "unavailable", now=0.0)
    assert p.state is MemberState.OUT and bal.pick(0.5) is backup


def test_health_runs_on_event_times_out_then_probed_then_back():
    a = Member(0, "a")
    bal = device(a, max_fails=2, fail_timeout_s=0.8)
    bal.failed(a, "timeout", now=10.0)
    bal.failed(a, "timeout", now=10.3)
    assert a.state is MemberState.OUT and bal.next_probe() == pytest.approx(11.1)
    assert [n.change for n in bal.take_notes()] == [Change.FAILED, Change.OUT]
    assert bal.probes_due(11.05) == [] and bal.probes_due(11.15) == [a] and a.state is MemberState.PROBING
    assert bal.probes_due(11.2) == [] and bal.next_probe() is None  # one probe at a time
    bal.not_ready(a, now=11.2)
    assert a.state is MemberState.OUT and a.health.out_until == pytest.approx(12.0)
    assert bal.probes_due(12.0) == [a] and bal.ready(a) and a.state is MemberState.READY
    assert a.health == Health() and [n.change for n in bal.take_notes()] == [Change.STILL_OUT, Change.BACK]


def test_a_failure_while_probed_makes_the_probe_stale_and_disabled_is_for_good():
    a = Member(0, "a")
    bal = device(a, max_fails=1, fail_timeout_s=1.0)
    bal.failed(a, "timeout", now=0.0)
    assert bal.probes_due(1.0) == [a]
    bal.failed(a, "timeout", now=1.1)  # a request sent before it went out, failing while it is probed
    assert a.state is MemberState.OUT and not bal.ready(a) and a.state is MemberState.OUT and not a.busy
    bal.disable(a, "serves another model", failure=True)
    bal.failed(a, "timeout", now=5.0)
    assert a.state is MemberState.DISABLED and a.reason == "serves another model" and a.failures == 4
    assert bal.probes_due(10.0) == [] and bal.pick(10.0) is None


def test_woken_members_serve_and_backups_are_woken_only_while_no_primary_can():
    p, backup = Member(0, "p"), Member(1, "backup", backup=True)
    bal = Balancer([p, backup], model=ModelRule(), join_on_use=False)
    assert bal.serving(0.0) == [] and bal.wake() == [p] and bal.wake() == []  # claimed: woken once
    bal.unclaim(p)  # did not come up: cold again, woken again when needed
    assert p.state is MemberState.NEW and bal.wake() == [p]
    bal.disable(p, "another model")
    assert bal.wake() == [backup] and bal.ready(backup) and bal.serving(0.0) == [backup]
