"""EndpointPool against real ``bentoml serve`` processes on 127.0.0.1.

Two services run the default model and a third the fall detector. Callers in two threads
detect through the pool while one service is SIGKILLed (no goodbye) and later started again
on the same port: every call answers, and the restarted service is used again. The one on
the other model is taken out of the pool with an ERROR and never answers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import numpy as np
import pytest

import yolo_edge
from edge_agent.cloudserve import LocalService
from yolo_edge import EndpointPool
from yolo_edge.remote.health import HealthConfig
from yolo_edge.remote.pool import MemberState

pytestmark = pytest.mark.slow  # three services start (~5 s), one is killed and restarted


@pytest.fixture(scope="module")
def services(default_model_path, fall_model_path, tmp_path_factory):
    env = {"YOLO_EDGE_HOME": str(default_model_path.parents[2])}
    svcs = {name: LocalService(model=model, threads=1, env=env, log_dir=tmp_path_factory.mktemp(f"pool-{name}"))
            for name, model in (("steady", "yolov3-tiny-coco"), ("killed", "yolov3-tiny-coco"),
                                ("other_model", "yolov8s-fall"))}
    try:
        for svc in svcs.values():
            svc.start(wait=False)
        for svc in svcs.values():
            svc.wait_ready()
        yield svcs
    finally:
        for svc in svcs.values():
            svc.stop(signal.SIGKILL)


def _same(dets, expected) -> bool:
    return (np.array_equal(dets.class_id, expected.class_id)
            and np.allclose(dets.xyxy, expected.xyxy, atol=1.0) and np.allclose(dets.confidence, expected.confidence,
                                                                                 atol=0.01))


class Callers:
    """Threads detecting through the pool until stopped, recording every answer and every error."""

    def __init__(self, pool: EndpointPool, image: np.ndarray, n: int = 2) -> None:
        self.pool, self.image = pool, image
        self.answers: list[tuple[float, str, str, object]] = []  # (when, endpoint, sha256, detections)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                (dets,), (meta,) = self.pool.detect_many([self.image], return_meta=True)
                self.answers.append((time.monotonic(), meta["endpoint"], meta["model"]["sha256"], dets))
            except BaseException as exc:  # noqa: BLE001 -- every error fails the test
                self.errors.append(exc)

    def wait_for(self, what, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.errors:
            if what():
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> "Callers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_every_call_answers_while_a_service_is_killed_and_the_restarted_one_is_used_again(
        services, default_detector, bus_jpg, caplog):
    image = yolo_edge.load_image(bus_jpg)
    expected = default_detector(image)
    order = ["steady", "killed", "other_model"]
    urls = {name: services[name].url for name in order}
    # no expected_sha256: the first member's model; out after 2 failures within 1 s, for 1 s
    pool = EndpointPool([urls[name] for name in order], health=HealthConfig(max_fails=2, fail_timeout_s=1.0))
    marks: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger="yolo_edge.remote.pool"), pool, Callers(pool, image) as callers:
        assert callers.wait_for(lambda: {urls["steady"], urls["killed"]} <= {a[1] for a in callers.answers}, 30)
        assert callers.wait_for(lambda: pool.members()[2].state is MemberState.DISABLED, 10)
        services["killed"].stop(signal.SIGKILL)
        marks["killed"] = time.monotonic()
        answered = len(callers.answers)
        assert callers.wait_for(lambda: len(callers.answers) > answered + 10, 30)
        assert pool.members()[1].state is not MemberState.READY
        services["killed"].start(wait=True)  # the same port
        marks["restarted"] = time.monotonic()
        assert callers.wait_for(lambda: any(a[0] > marks["restarted"] and a[1] == urls["killed"]
                                            for a in callers.answers), 30), pool.members()
    assert not callers.errors, callers.errors[:3]
    assert all(sha == default_detector.info.sha256 for _, _, sha, _ in callers.answers)
    assert not [a for a in callers.answers if a[1] == urls["other_model"]]
    assert all(_same(dets, expected) for *_, dets in callers.answers)
    during = [a for a in callers.answers if marks["killed"] < a[0] < marks["restarted"]]
    # after the kill only the steady one answers (but for an answer of the killed one still on its way)
    assert len(during) > 10 and sum(a[1] == urls["killed"] for a in during) <= 2
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "yolo_edge.remote.pool"]
    assert len(errors) == 1 and urls["other_model"] in errors[0].getMessage()
    assert "out of the pool for good" in errors[0].getMessage()
    assert any(urls["killed"] in r.getMessage() and "out of rotation" in r.getMessage() for r in caplog.records)
    assert any(urls["killed"] in r.getMessage() and "back in rotation" in r.getMessage() for r in caplog.records)


def test_detect_with_a_list_of_endpoints_shares_one_pool(services, default_detector, bus_jpg, caplog):
    urls = [services[name].url for name in ("steady", "killed")]
    try:
        first = yolo_edge.detect(str(bus_jpg), endpoint=urls, timeout=30)
        second = yolo_edge.detect(str(bus_jpg), endpoint=urls, timeout=30)
        assert _same(first, default_detector(str(bus_jpg))) and _same(second, first)
        pools = [c for c in yolo_edge.api._clients.values() if isinstance(c, EndpointPool)]
        assert len(pools) == 1 and sum(m.requests for m in pools[0].members()) == 2
        with caplog.at_level(logging.ERROR, logger="yolo_edge.remote.pool"):
            with pytest.raises(yolo_edge.errors.CloudModelMismatchError, match="no endpoint of the pool serves"):
                yolo_edge.detect(str(bus_jpg), endpoint=[services["other_model"].url],
                                 expected_sha256=default_detector.info.sha256)
    finally:
        yolo_edge.api.close_clients()
    assert not yolo_edge.api._clients
