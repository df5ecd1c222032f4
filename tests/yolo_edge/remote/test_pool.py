"""EndpointPool over fake members: choice, health, failover, one model, threads.

The members are fakes of the :class:`~yolo_edge.remote.endpoint.Endpoint` protocol that count
what they are asked and fail as told; the clock is a fake one, so the health rule's times
are exact. The pool against real ``bentoml serve`` processes is in test_pool_services.py.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

import yolo_edge
from yolo_edge import EndpointPool, errors
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.endpoint import Endpoint
from yolo_edge.remote.health import HealthConfig
from yolo_edge.remote.pool import MemberState, PoolMember
from yolo_edge.types import Detections
from yolo_edge.remote.wire import LIMITS, FrameResult, FrameStatus, ModelRef

SHA = "a" * 64
OTHER = "b" * 64
FRAME = np.zeros((8, 8, 3), np.uint8)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Member:
    """A fake endpoint serving model ``sha``; ``fail`` holds what its next requests raise (None: answer)."""

    def __init__(self, name: str, *, sha: str = SHA, names_model: bool = True, checks_answers: bool = False,
                 clock: Clock | None = None, takes_s: float = 0.0) -> None:
        self.endpoint = f"http://{name}:3000"
        self.sha = sha
        self.names_model = names_model  # False: like a CloudClient made without expected_sha256
        self.checks_answers = checks_answers  # raise CloudModelMismatchError on an answer of another model
        self.expected: str | None = None
        self.clock, self.takes_s = clock, takes_s
        self.down = False
        self.fail: list[Exception | None] = []
        self.gate: threading.Event | None = None  # set: requests wait on it
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.frames = self.probes = self.verifies = 0
        self.budgets: list = []
        self.closed = False

    def ready(self) -> bool:
        self.probes += 1
        return not self.down

    def wake(self, wait_s: float = 0) -> bool:
        return self.ready()

    def verify_model(self, expected_sha256: str | None = None) -> dict:
        self.verifies += 1
        if self.down:
            raise errors.CloudUnavailableError(f"cannot connect to {self.endpoint}")
        if expected_sha256 is None and not self.names_model:
            raise errors.ConfigError("verify_model needs the expected sha256")
        if expected_sha256 is not None:
            self.expected = expected_sha256
            if expected_sha256 != self.sha:
                raise errors.CloudModelMismatchError(f"{self.endpoint} runs {self.sha[:12]}...")
        return {"name": "fake", "sha256": self.sha}

    def _serve(self, n: int) -> None:
        with self.lock:
            self.calls += 1
            failure = self.fail.pop(0) if self.fail else None
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.clock is not None:
            self.clock.advance(self.takes_s)
        if self.down:
            raise errors.CloudUnavailableError(f"cannot connect to {self.endpoint}")
        if failure is not None:
            raise failure
        if self.checks_answers and self.expected and self.expected != self.sha:
            raise errors.CloudModelMismatchError(f"{self.endpoint} answered from {self.sha[:12]}...")
        with self.lock:
            self.frames += n

    def detect_many(self, images, *, conf=None, iou=None, classes=None, max_det=None, channels="bgr",
                    return_meta=False):
        self._serve(len(images))
        dets = [Detections.empty() for _ in images]
        metas = [{"model": {"name": "fake", "sha256": self.sha}, "timing": {}} for _ in images]
        return (dets, metas) if return_meta else dets

    def detect_frames(self, images, *, budgets_s=None, conf=None, iou=None, classes=None, max_det=None,
                      channels="bgr"):
        self.budgets.append(budgets_s)
        self._serve(len(images))
        return [FrameResult(status=FrameStatus.OK, model=ModelRef("fake", self.sha), detections=Detections.empty())
                for _ in images]

    def close(self) -> None:
        self.closed = True


def pool_of(*members, clock=None, **kwargs) -> EndpointPool:
    kwargs.setdefault("health", HealthConfig(max_fails=2, fail_timeout_s=1.0))
    return EndpointPool(list(members), clock=clock or Clock(), **kwargs)


def down() -> errors.CloudUnavailableError:
    return errors.CloudUnavailableError("503: warming up", status_code=503)


def state(pool: EndpointPool, index: int) -> MemberState:
    return pool.members()[index].state


# -- the interface --------------------------------------------------------------------------
def test_the_pool_and_its_fake_members_are_endpoints():
    a = Member("a")
    assert isinstance(a, Endpoint)
    pool = pool_of(a)
    assert isinstance(pool, Endpoint) and pool.endpoint == "pool(http://a:3000)"
    assert len(pool.detect_many([FRAME, FRAME])) == 2 and isinstance(pool.detect(FRAME), Detections)
    assert pool.detect_many([]) == [] and pool.detect_frames([], budgets_s=1.0) == []


def test_members_are_urls_tables_or_clients_and_bad_ones_are_refused():
    built = Member("built")
    pool = EndpointPool(["http://127.0.0.1:3000", {"url": "https://user:pw@gpu-2:3000/x", "weight": 2},
                         PoolMember(url=built, backup=True)])
    try:
        assert [(m.name, m.weight, m.backup) for m in pool.members()] == [
            ("http://127.0.0.1:3000", 1.0, False), ("https://gpu-2:3000/x", 2.0, False),  # no credentials shown
            ("http://built:3000", 1.0, True)]
        assert all(m.state is MemberState.NEW for m in pool.members())
    finally:
        pool.close()
    assert not built.closed, "a client given built is the caller's to close"
    for bad, match in [([], "non-empty list"), ("http://a:3000", "non-empty list"), ([42], "a URL, a client"),
                       ([{"url": "http://a:3000", "wieght": 2}], "unknown key"), ([{"weight": 2}], "no url"),
                       ([{"url": "http://a:3000", "weight": 0}], "weight must be a positive"),
                       ([{"url": "http://a:3000", "backup": "yes"}], "backup must be True or False"),
                       (["ftp://a:21"], "oip\\+http"), (["http://a:3000", "http://a:3000"], "must differ")]:
        with pytest.raises(errors.ConfigError, match=match):
            EndpointPool(bad)
    with pytest.raises(errors.ConfigError, match="jpeg_quality"):
        EndpointPool(["oip+http://127.0.0.1:8000/v2/models/yolo"], client_options={"jpeg_quality": 90})
    with pytest.raises(errors.ConfigError, match="the pool's own"):
        EndpointPool(["http://127.0.0.1:3000"], client_options={"token": "t"})
    with pytest.raises(errors.ConfigError, match="HealthConfig"):
        EndpointPool(["http://127.0.0.1:3000"], health={"max_fails": 2})


def test_members_built_from_urls_fail_over_instead_of_retrying():
    pool = EndpointPool(["http://127.0.0.1:3000", "oip+http://127.0.0.1:8000/v2/models/yolo"],
                        client_options={"timeout": 3}, expected_sha256=SHA)
    try:
        cloud, oip = (m.client for m in pool._members)
        assert isinstance(cloud, CloudClient) and cloud.max_retries == 0 and cloud.timeout == 3
        assert cloud.expected_sha256 == SHA and oip.expected_sha256 == SHA
    finally:
        pool.close()


def test_detect_keeps_one_pool_per_endpoint_list_and_close_clients_closes_it():
    from yolo_edge import api

    urls = ["http://127.0.0.1:3000", {"url": "http://127.0.0.1:3001", "backup": True}]
    try:
        pool = api._shared_pool(urls, None, {"timeout": 3})
        assert api._shared_pool(list(urls), None, {"timeout": 3}) is pool
        assert api._shared_pool(urls, None, {"timeout": 4}) is not pool
        assert isinstance(pool, EndpointPool) and [m.backup for m in pool.members()] == [False, True]
        closed = []
        for m in pool._members:
            m.client.close = lambda: closed.append(1)
    finally:
        api.close_clients()
    assert not api._clients and closed == [1, 1]
    with pytest.raises(errors.ConfigError, match="model= and backend="):
        yolo_edge.detect(FRAME, endpoint=urls, backend="onnxruntime")
    with pytest.raises(errors.ConfigError, match="with a list of endpoints, model= names the pool's model"):
        yolo_edge.detect(FRAME, endpoint=urls[0], model="yolov8s-fall")
    with pytest.raises(errors.ConfigError, match="jpeg_qualty.*do not apply"):
        yolo_edge.detect(FRAME, endpoint=urls, jpeg_qualty=90)
    with pytest.raises(errors.ConfigError, match="plain values"):
        yolo_edge.detect(FRAME, endpoint=urls, session=[])
    assert not api._clients


# -- choice -----------------------------------------------------------------------------------
def test_sequential_calls_are_shared_by_weight():
    a, b, c = Member("a"), Member("b"), Member("c")
    pool = pool_of(a, {"url": b, "weight": 3}, c, expected_sha256=SHA)
    for _ in range(50):
        pool.detect(FRAME)
    assert (a.frames, b.frames, c.frames) == (10, 30, 10)
    assert [m.requests for m in pool.members()] == [10, 30, 10]


def test_concurrent_requests_go_to_the_least_outstanding_per_weight():
    a, b = Member("a"), Member("b")
    pool = pool_of(a, {"url": b, "weight": 2})
    pool.verify_model(SHA)  # both joined; no request sent yet
    a.gate = b.gate = threading.Event()
    threads, seen = [], []
    for k in range(1, 6):  # one more request in flight at a time: where does it go?
        threads.append(threading.Thread(target=pool.detect, args=(FRAME,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while sum(m.outstanding for m in pool.members()) < k and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(tuple(m.outstanding for m in pool.members()))
    a.gate.set()
    for t in threads:
        t.join(10)
    # b (weight 2) takes the first; then whichever holds fewer per unit of weight; ties in weighted turns
    assert seen == [(0, 1), (1, 1), (1, 2), (2, 2), (2, 3)]
    assert (a.frames, b.frames) == (2, 3) and [m.outstanding for m in pool.members()] == [0, 0]


def test_backups_serve_only_what_no_primary_is_left_for():
    clock = Clock()
    a, b, backup = Member("a"), Member("b"), Member("backup")
    pool = pool_of(a, b, {"url": backup, "backup": True}, clock=clock, expected_sha256=SHA)
    for _ in range(10):
        pool.detect(FRAME)
    assert backup.calls == backup.verifies == backup.probes == 0 and a.frames + b.frames == 10
    a.down = True
    for _ in range(10):  # a fails twice (each time the call goes on to b), then is out
        pool.detect(FRAME)
    assert state(pool, 0) is MemberState.OUT and a.calls == 7 and backup.calls == 0
    b.down = True
    calls_before = b.calls
    for _ in range(4):  # b fails, and with no primary left for the call the backup answers it
        pool.detect(FRAME)
    assert backup.frames == 4 and state(pool, 1) is MemberState.OUT and b.calls == calls_before + 2
    clock.advance(1.0)
    a.down = False
    pool.detect(FRAME)  # its time out is up: probed, checked, back, and preferred to the backup
    assert state(pool, 0) is MemberState.READY and a.probes == 1 and backup.frames == 4


# -- health -----------------------------------------------------------------------------------
def test_max_fails_within_fail_timeout_takes_a_member_out_until_a_probe_says_ready():
    clock = Clock()
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b, clock=clock, health=HealthConfig(max_fails=2, fail_timeout_s=1.0), expected_sha256=SHA)
    pool.detect(FRAME), pool.detect(FRAME)
    a.fail = [down()]
    pool.detect(FRAME)  # a fails, b answers
    clock.advance(1.5)  # that failure is older than fail_timeout_s: forgotten
    a.fail = [down()]
    pool.detect(FRAME), pool.detect(FRAME)
    assert state(pool, 0) is MemberState.READY
    a.fail = [down()]
    pool.detect(FRAME), pool.detect(FRAME)  # a second failure within 1 s: out for 1 s
    status = pool.members()[0]
    assert status.state is MemberState.OUT and status.out_for_s == pytest.approx(1.0) and status.failures == 3
    assert "503: warming up" in status.reason
    calls = a.calls
    for _ in range(5):
        pool.detect(FRAME)
    assert a.calls == calls and a.probes == 0
    clock.advance(1.0)
    a.down = True  # not ready yet when probed: out for another fail_timeout_s
    pool.detect(FRAME)
    assert a.probes == 1 and state(pool, 0) is MemberState.OUT and pool.members()[0].out_for_s == pytest.approx(1.0)
    pool.detect(FRAME)
    assert a.probes == 1
    clock.advance(1.0)
    a.down = False
    verifies = a.verifies
    pool.detect(FRAME), pool.detect(FRAME)
    assert a.probes == 2 and a.verifies == verifies + 1 and state(pool, 0) is MemberState.READY and a.calls > calls


def test_retry_after_longer_than_fail_timeout_keeps_a_member_out_that_long():
    clock = Clock()
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b, clock=clock)
    pool.detect(FRAME), pool.detect(FRAME)
    a.fail = [errors.CloudUnavailableError("429", status_code=429, retry_after_s=5.0)]
    pool.detect(FRAME), pool.detect(FRAME)
    assert pool.members()[0].out_for_s == pytest.approx(5.0)  # at once: the server said so
    clock.advance(1.0)
    pool.detect(FRAME)
    assert a.probes == 0
    clock.advance(4.0)
    pool.detect(FRAME)
    assert a.probes == 1 and state(pool, 0) is MemberState.READY


def test_an_out_member_that_comes_back_on_another_model_is_disabled(caplog):
    clock = Clock()
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b, clock=clock, health=HealthConfig(max_fails=1, fail_timeout_s=1.0))
    pool.detect(FRAME), pool.detect(FRAME)
    a.fail = [down()]
    pool.detect(FRAME), pool.detect(FRAME)
    assert state(pool, 0) is MemberState.OUT
    a.sha = OTHER  # redeployed while out
    clock.advance(1.0)
    with caplog.at_level(logging.ERROR, logger="yolo_edge.remote.pool"):
        for _ in range(4):
            pool.detect(FRAME)
    assert state(pool, 0) is MemberState.DISABLED and a.probes == 1
    assert "http://a:3000 is out of the pool for good" in caplog.text


# -- failover ---------------------------------------------------------------------------------
def test_a_dead_member_costs_a_caller_nothing_but_a_try_and_no_work_is_done_twice():
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b, health=HealthConfig(max_fails=100, fail_timeout_s=1.0), expected_sha256=SHA)
    a.down = True
    for n in range(1, 11):
        assert len(pool.detect_many([FRAME] * n)) == n
    assert b.frames == sum(range(1, 11)) and a.frames == 0
    assert a.verifies + a.calls == 5 and b.verifies + b.calls == 11  # a: tried once in each call it was chosen for


def test_a_request_error_is_raised_at_once_and_not_held_against_the_member():
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b)
    pool.detect(FRAME), pool.detect(FRAME)
    for error in (errors.CloudRequestError("400: bad image", status_code=400),
                  errors.CloudAuthError("401", status_code=401),
                  errors.CloudFrameError("frame 0: error", index=0, frame_status="error"),
                  errors.CloudDeadlineExpiredError("timeout expired in the queue")):
        a.fail, b.fail = [error], [error]
        calls = a.calls + b.calls
        with pytest.raises(type(error)):
            pool.detect(FRAME)
        assert a.calls + b.calls == calls + 1
    assert [m.failures for m in pool.members()] == [0, 0]
    a.fail = [errors.CloudError("500: internal error", status_code=500)]  # the member's fault: the next one
    b.fail = [errors.CloudError("500: internal error", status_code=500)]
    with pytest.raises(errors.CloudUnavailableError, match="no endpoint of the pool could answer.*500"):
        pool.detect(FRAME)


def test_a_large_call_fails_over_one_request_at_a_time():
    a, b = Member("a"), Member("b")
    pool = pool_of({"url": a, "weight": 10}, b)
    a.fail = [None, errors.CloudTimeoutError("took longer than 10 s")]
    n = LIMITS.max_images + 8
    dets, metas = pool.detect_many([FRAME] * n, return_meta=True)
    assert len(dets) == n and a.frames == LIMITS.max_images and b.frames == 8
    assert [m["endpoint"] for m in metas] == ["http://a:3000"] * LIMITS.max_images + ["http://b:3000"] * 8


def test_budgets_fail_over_with_what_is_left_of_them():
    clock = Clock()
    a, b = Member("a", clock=clock, takes_s=0.3), Member("b")
    pool = pool_of(a, b, clock=clock)
    a.fail = [errors.CloudTimeoutError("took longer than 0.3 s")]
    results = pool.detect_frames([FRAME] * 3, budgets_s=[1.0, 0.2, None])
    assert a.budgets == [[1.0, pytest.approx(0.2), None]] and b.budgets == [[pytest.approx(0.7), None]]
    assert [r.status for r in results] == [FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK]
    assert "not sent" in results[1].error
    results = pool.detect_frames([FRAME] * 2, budgets_s=0.0)  # spent already: no member is asked
    assert [r.status for r in results] == [FrameStatus.EXPIRED] * 2 and b.budgets[-1] == [pytest.approx(0.7), None]
    assert results[0].model.sha256 == SHA


# -- one model --------------------------------------------------------------------------------
def test_a_member_on_another_model_is_disabled_when_it_joins(caplog):
    a, other, b = Member("a"), Member("other", sha=OTHER), Member("b")
    pool = pool_of(a, other, b, expected_sha256=SHA)
    with caplog.at_level(logging.ERROR, logger="yolo_edge.remote.pool"):
        results = [r for _ in range(10) for r in pool.detect_frames([FRAME])]
    assert {r.model.sha256 for r in results} == {SHA} and other.calls == 0 and other.verifies == 1
    assert state(pool, 1) is MemberState.DISABLED and "runs bbbbbbbbbbbb" in pool.members()[1].reason
    assert [r.levelname for r in caplog.records] == ["ERROR"] and "http://other:3000" in caplog.text


@pytest.mark.parametrize("checks_answers", [False, True], ids=["pool-checks", "client-checks"])
def test_an_answer_from_another_model_is_never_returned(checks_answers, caplog):
    """b passed its check, then answers from another model (redeployed): its answer is dropped, a answers."""
    a, b = Member("a"), Member("b", checks_answers=checks_answers)
    pool = pool_of(a, b)
    pool.detect(FRAME), pool.detect(FRAME)
    assert pool.expected_sha256 == SHA  # a's: the first member's model
    b.sha = OTHER
    with caplog.at_level(logging.ERROR, logger="yolo_edge.remote.pool"):
        results = [r for _ in range(6) for r in pool.detect_frames([FRAME, FRAME])]
        dets, metas = pool.detect_many([FRAME] * 3, return_meta=True)
    assert {r.model.sha256 for r in results} == {SHA} and len(results) == 12
    assert {m["model"]["sha256"] for m in metas} == {SHA} and state(pool, 1) is MemberState.DISABLED
    assert b.frames <= 1 + (0 if checks_answers else 2) and "http://b:3000" in caplog.text


def test_without_expected_sha256_the_first_answer_names_the_model():
    """Members that cannot name their model up front (CloudClients made without expected_sha256)."""
    a, other, b = (Member(n, sha=s, names_model=False) for n, s in (("a", SHA), ("other", OTHER), ("b", SHA)))
    pool = pool_of(a, other, b)
    assert pool.expected_sha256 is None
    results = [r for _ in range(9) for r in pool.detect_frames([FRAME])]
    assert pool.expected_sha256 == SHA and {r.model.sha256 for r in results} == {SHA}
    assert [m.state for m in pool.members()] == [MemberState.READY, MemberState.DISABLED, MemberState.READY]
    assert other.calls == 0 and b.frames > 0


def test_when_no_member_is_left_the_error_says_so():
    clock = Clock()
    only = Member("only", sha=OTHER)
    pool = pool_of(only, expected_sha256=SHA, clock=clock)
    with pytest.raises(errors.CloudModelMismatchError, match="no endpoint of the pool serves model aaaaaaaaaaaa"):
        pool.detect(FRAME)
    a, b = Member("a"), Member("b")
    pool = pool_of(a, b, clock=clock, health=HealthConfig(max_fails=1, fail_timeout_s=2.0), expected_sha256=SHA)
    a.down = b.down = True
    with pytest.raises(errors.CloudUnavailableError, match="http://a:3000: cannot connect.*http://b:3000"):
        pool.detect(FRAME)
    clock.advance(0.5)
    with pytest.raises(errors.CloudUnavailableError, match=r"http://a:3000 out for 1.50 s more") as info:
        pool.detect(FRAME)
    assert info.value.retry_after_s == pytest.approx(1.5)


# -- readiness, waking, verifying ------------------------------------------------------------
def test_ready_wake_and_verify_model():
    a, b, backup, other = Member("a"), Member("b"), Member("backup"), Member("other", sha=OTHER)
    pool = pool_of(a, b, {"url": backup, "backup": True}, other, sleep=lambda s: None)
    assert pool.ready() and a.probes == 1 and b.probes == 0
    assert pool.wake(wait_s=0) and (a.probes, b.probes, backup.probes) == (2, 1, 0)
    a.down = b.down = other.down = True
    assert pool.wake() and backup.probes == 1
    a.down = b.down = other.down = False
    info = pool.verify_model()
    assert info["sha256"] == SHA and info["members"] == {"http://a:3000": "ready", "http://b:3000": "ready",
                                                         "http://backup:3000": "ready", "http://other:3000": "disabled"}
    with pytest.raises(errors.CloudModelMismatchError, match="the pool serves model aaaaaaaaaaaa"):
        pool.verify_model(OTHER)
    with pytest.raises(errors.ConfigError, match="non-negative"):
        pool.wake(wait_s=-1)
    nameless = pool_of(Member("x", names_model=False))
    with pytest.raises(errors.ConfigError, match="expected sha256"):
        nameless.verify_model()
    assert nameless.verify_model(SHA)["members"] == {"http://x:3000": "ready"}


# -- threads ----------------------------------------------------------------------------------
def test_many_threads_at_once_every_frame_answered_once():
    members = [Member("a"), Member("b"), Member("c", sha=OTHER), Member("d")]
    flaky = members[1]
    flaky.fail = [down() if i % 5 == 0 else None for i in range(1000)]
    pool = EndpointPool([members[0], {"url": flaky, "weight": 2}, members[2], {"url": members[3], "backup": True}],
                        expected_sha256=SHA)
    answered: list[int] = []
    problems: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                results = pool.detect_frames([FRAME] * (1 + (n + i) % 3))
                assert {r.model.sha256 for r in results} == {SHA}
                answered.append(len(results))
        except BaseException as exc:  # noqa: BLE001 -- reported below
            problems.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not problems, problems[:3]
    assert len(answered) == 12 * 40
    assert sum(m.frames for m in members) == sum(answered) == sum(s.frames for s in pool.members())
    statuses = pool.members()
    assert all(s.outstanding == 0 for s in statuses) and statuses[2].state is MemberState.DISABLED
    assert [s.requests for s in statuses] == [m.calls for m in members]
    assert members[2].calls == 0 and members[0].frames > 0 and flaky.frames > 0
