"""The pool's model is fixed, never voted: real HTTP services on 127.0.0.1, one on another model.

A serves the default model and answers slowly; D serves the fall detector, is listed second
with the highest weight and answers at once. Whatever way the pool's model is set
(``expected_sha256=``, ``model=``, or the first endpoint listed), every answer is A's, D is
never sent a frame, and D shows as disabled, with an ERROR naming it. The services are
stand-ins (tests/service_standins.py) speaking the real wire to the real CloudClient.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from service_standins import StandIn, fixed_detections

import yolo_edge
from yolo_edge import EndpointPool, errors
from yolo_edge.models.registry import DEFAULT_MODEL, MODELS
from yolo_edge.remote.pool import MemberState

pytestmark = pytest.mark.integration  # several services over real HTTP

A_SHA = MODELS[DEFAULT_MODEL].onnx_sha256
D_SHA = MODELS["yolov8s-fall"].onnx_sha256
FRAME = np.zeros((32, 32, 3), np.uint8)
A_CLASSES = [0, 0, 0, 0, 5]  # 4 person, 1 bus
D_CLASSES = [0, 0, 0]  # 3 Normal


@pytest.fixture
def a_and_d():
    a = StandIn(name=DEFAULT_MODEL, sha256=A_SHA, delay_s=0.2,
                detections=fixed_detections({0: "person", 5: "bus"}, A_CLASSES))
    d = StandIn(name="yolov8s-fall", sha256=D_SHA, delay_s=0.0,
                detections=fixed_detections({0: "Normal", 1: "Fall"}, D_CLASSES))
    with a, d:
        yield a, d
    yolo_edge.api.close_clients()


def _from_threads(call, threads: int = 4, calls: int = 3) -> list:
    """``call()`` from several threads at once: the first answers race."""
    answers: list = []
    problems: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait(10)
            for _ in range(calls):
                answers.append(call())
        except BaseException as exc:  # noqa: BLE001 -- reported below
            problems.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not problems, problems[:3]
    return answers


@pytest.mark.parametrize("pin", [{}, {"expected_sha256": A_SHA}, {"model": DEFAULT_MODEL}],
                         ids=["first-listed", "expected_sha256", "model-name"])
def test_detect_with_another_model_listed_second_heaviest_and_fastest_answers_from_the_first(a_and_d, pin, caplog):
    a, d = a_and_d
    endpoints = [a.url, {"url": d.url, "weight": 3}]
    with caplog.at_level(logging.INFO, logger="yolo_edge.remote.pool"):
        answers = _from_threads(lambda: yolo_edge.detect(FRAME, endpoint=endpoints, timeout=10, **pin))
    assert len(answers) == 12 and all(list(dets.class_id) == A_CLASSES for dets in answers)
    assert answers[0].names == {0: "person", 5: "bus"}
    assert d.detect_requests == 0 and d.metadata_requests >= 1 and a.frames == 12
    (pool,) = [c for c in yolo_edge.api._clients.values() if isinstance(c, EndpointPool)]
    a_status, d_status = pool.members()
    assert a_status.state is MemberState.READY and a_status.frames == 12
    assert d_status.state is MemberState.DISABLED and d_status.frames == 0 and D_SHA[:12] in d_status.reason
    assert pool.expected_sha256 == A_SHA
    errors_logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors_logged) == 1 and d_status.name in errors_logged[0].getMessage()
    assert "out of the pool for good" in errors_logged[0].getMessage()


def test_a_pinned_model_wins_over_the_first_endpoint_listed(a_and_d, caplog):
    a, d = a_and_d
    for pin in ({"model": DEFAULT_MODEL}, {"expected_sha256": A_SHA}):
        with EndpointPool([d.url, a.url], **pin) as pool:
            results = _from_threads(lambda: pool.detect_frames([FRAME, FRAME], budgets_s=10.0))
            assert {r.model.sha256 for batch in results for r in batch} == {A_SHA}
            assert [m.state for m in pool.members()] == [MemberState.DISABLED, MemberState.READY]
    assert d.detect_requests == 0


def test_without_a_pin_the_first_endpoint_listed_sets_the_model_whatever_its_weight(a_and_d):
    a, d = a_and_d
    with EndpointPool([d.url, {"url": a.url, "weight": 5}]) as pool:
        answers = _from_threads(lambda: pool.detect(FRAME))
        assert all(list(dets.class_id) == D_CLASSES for dets in answers)
        assert pool.expected_sha256 == D_SHA
        assert [m.state for m in pool.members()] == [MemberState.READY, MemberState.DISABLED]
    assert a.detect_requests == 0


def test_until_the_first_endpoint_answers_no_other_is_used_and_the_error_says_how_to_pin(a_and_d):
    a, _ = a_and_d
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    with EndpointPool([dead, a.url]) as pool:
        with pytest.raises(errors.CloudUnavailableError, match=r"first endpoint \(http://127.0.0.1:9\).*"
                                                                r"pass expected_sha256="):
            pool.detect(FRAME)
        assert a.detect_requests == a.metadata_requests == 0
    with EndpointPool([dead, a.url], model=DEFAULT_MODEL) as pool:  # pinned: the others serve
        assert list(pool.detect(FRAME).class_id) == A_CLASSES
