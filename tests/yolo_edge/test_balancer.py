"""The pools' shared rules (yolo_edge.balancer): the model rule, who serves, health transitions.

Both drivers (EndpointPool, tests/yolo_edge/test_pool*.py; the agent's CloudPool,
tests/edge_agent/test_core.py and test_agent_pool_model.py) are tested through them; these
pin the rules themselves.
"""

from __future__ import annotations

import math

import pytest

from yolo_edge.balancer import Health, HealthConfig, ModelRule, failed, on_success, probe_failed, serving

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
