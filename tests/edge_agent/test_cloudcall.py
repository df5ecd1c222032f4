"""The agent's calls to its endpoints on their own: each outcome of a request or a wake as the core's event."""

from __future__ import annotations

import numpy as np
import pytest
from agent_fakes import FakeCloud

from edge_agent.cloudcall import CloudCalls, pool_model
from edge_agent.core.events import Encoded, Failure, SendBatch, Uploaded, Wake
from edge_agent.stagetime import StageTimes
from yolo_edge.remote.balancer import ModelRule
from yolo_edge.errors import (
    CloudDeadlineExpiredError, CloudModelMismatchError, CloudTimeoutError, CloudUnavailableError, ConfigError,
)
from yolo_edge.remote.wire import FrameResult, FrameStatus, ModelRef

IMAGES = [np.zeros((8, 8, 3), np.uint8)] * 2
SEND = SendBatch(request=7, endpoint=0, seqs=(3, 4), timeout_s=0.5, deadlines=(10.5, 10.6), network_s=0.02)


def calls(client, *, model: str | None = None, reported=None) -> CloudCalls:
    return CloudCalls([client], model=ModelRule(model), allow_mismatch=False, clock=lambda: 10.0,
                      report=(reported.append if reported is not None else lambda ev: None), stages=StageTimes())


class Raising(FakeCloud):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def detect_frames(self, images, budgets_s=None):
        raise self.exc


@pytest.mark.parametrize("exc,failure", [
    (CloudTimeoutError("no answer"), Failure.TIMEOUT),
    (CloudUnavailableError("503", retry_after_s=2.0), Failure.UNAVAILABLE),
    (CloudModelMismatchError("another model"), Failure.MISMATCH),
    (RuntimeError("socket closed"), Failure.ERROR),  # anything from the transport is a cloud failure
])
def test_each_failure_of_a_request_is_the_cores_failure(exc, failure):
    done = calls(Raising(exc)).send(SEND, IMAGES)
    assert (done.request, done.failure, done.answers) == (7, failure, None)
    assert done.retry_after_s == (2.0 if failure is Failure.UNAVAILABLE else None)


def test_a_request_refused_as_too_late_is_every_frame_expired_not_a_failure():
    done = calls(Raising(CloudDeadlineExpiredError("too late"))).send(SEND, IMAGES)
    assert done.failure is None and done.frame_errors == {0: FrameStatus.EXPIRED, 1: FrameStatus.EXPIRED}


def test_each_frame_is_sent_with_the_seconds_left_net_of_the_network():
    cloud = FakeCloud(rtt_s=0.0)
    done = calls(cloud).send(SEND, IMAGES)
    assert cloud.budgets == [pytest.approx([0.48, 0.58])]  # deadline - now - network
    assert done.failure is None and len(done.answers) == 2 and done.frame_errors == {}


class OtherModel(FakeCloud):
    def detect_frames(self, images, budgets_s=None):
        return [FrameResult(status=FrameStatus.OK, model=ModelRef("fall", "b" * 64), detections=d)
                for d in self.detect_many(images)]


def test_an_answer_from_another_model_than_the_pools_is_a_mismatch_even_if_the_client_checks_nothing():
    done = calls(OtherModel(), model="a" * 64).send(SEND, IMAGES)
    assert done.failure is Failure.MISMATCH and "another model" in done.message


class Encoding(FakeCloud):
    upload_encodings = True

    def detect_frames(self, images, budgets_s=None, *, jpeg_qualities=None, on_uploaded=None, on_not_sent=None,
                      on_encoded=None):
        self.qualities = jpeg_qualities
        on_encoded([100, 200])
        on_uploaded([100, 200], 0.01)
        return super().detect_frames(images, budgets_s)


def test_the_encodings_go_to_the_client_and_what_it_learns_on_the_way_is_reported_at_once():
    cloud, reported = Encoding(rtt_s=0.0), []
    done = calls(cloud, reported=reported).send(
        SendBatch(request=7, endpoint=0, seqs=(3, 4), timeout_s=0.5, deadlines=(10.5, 10.6), network_s=0.0,
                  encodings=("png", "jpeg90")), IMAGES)
    assert cloud.qualities == [None, 90] and done.failure is None
    assert reported == [Encoded(at=10.0, request=7, frame_bytes=(100, 200)),
                        Uploaded(at=10.0, request=7, frame_bytes=(100, 200), rtt_s=0.01)]


class Sha(FakeCloud):
    def __init__(self, *, up: bool, mismatch: bool = False) -> None:
        super().__init__()
        self.down, self.expected_sha256, self._mismatch = not up, "a" * 64, mismatch

    def verify_model(self):
        if self._mismatch:
            raise CloudModelMismatchError("serves another model")


def test_a_wake_checks_the_model_before_the_endpoint_is_used():
    assert calls(Sha(up=True)).wake(Wake(endpoint=0, wait_s=1.0)).ok
    refused = calls(Sha(up=True, mismatch=True)).wake(Wake(endpoint=0, wait_s=1.0))
    assert not refused.ok and refused.failure is Failure.MISMATCH
    assert not calls(Sha(up=False)).wake(Wake(endpoint=0, wait_s=1.0)).ok


def test_the_pool_serves_one_model_and_clients_pinned_to_two_are_refused():
    a, b = Sha(up=True), Sha(up=True)
    assert pool_model([a, b], ["a", "b"]).sha256 == "a" * 64
    b.expected_sha256 = "b" * 64
    with pytest.raises(ConfigError, match="pinned to different models"):
        pool_model([a, b], ["a", "b"])
