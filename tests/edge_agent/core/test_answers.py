"""What comes back, on its own: each answer to the frame it answers, once.

:class:`edge_agent.core.answers.Answers` is tested here without the core, over the core's real parts
(``core_parts.Parts``), fed event times.
"""

from __future__ import annotations

import pytest

from edge_agent.core.events import CloudDone, LateAnswer, LocalDone
from edge_agent.core.frames import Outcome, Reason, Route
from edge_agent.core.window import Stage
from yolo_edge.remote.wire import FrameStatus

from core_parts import Parts


def cloud_done(p: Parts, ev: CloudDone):
    return p.answers.cloud_done(p.dispatch.done(ev), ev)


def test_a_local_answer_answers_its_frame_and_teaches_the_lane():
    p = Parts()
    f = p.frame(0, Stage.LOCAL_RUN)
    assert p.answers.local_done(LocalDone(at=0.1, seq=0, service_s=0.1, answer="dets")) == []
    assert p.ended == [(0, Outcome.LOCAL, None)] and (f.route, f.answer, f.answered_at) == (Route.LOCAL, "dets", 0.1)
    assert p.lane.busy == 0 and p.lane.estimate(0.5, 0.1) == pytest.approx(0.1)


def test_a_failed_local_run_drops_its_frame_and_teaches_nothing():
    p = Parts()
    p.frame(0, Stage.LOCAL_RUN)
    assert p.answers.local_done(LocalDone(at=0.1, seq=0, service_s=0.1, error="boom")) == []
    assert p.ended == [(0, Outcome.DROPPED, Reason.LOCAL_ERROR)] and p.counters["local_errors"] == 1
    assert p.lane.busy == 0 and p.lane.estimate(0.5, 0.1) == 0.05  # still the prior


def test_an_answer_for_a_frame_that_left_is_a_late_answer():
    p = Parts()
    p.frame(0, Stage.LOCAL_RUN)
    p.resolve(p.frames[0], Outcome.LATE, Reason.DEADLINE)
    assert p.answers.local_done(LocalDone(at=0.6, seq=0, service_s=0.6)) == [LateAnswer(0, Route.LOCAL, 0.6)]
    assert p.counters[("late_answer", "local")] == 1


def test_a_cloud_answer_answers_its_frames_and_names_the_endpoint():
    p = Parts(batch=2)
    send = p.send(0, 1)
    assert cloud_done(p, CloudDone(at=0.2, request=send.request, answers=["a", "b"], metas=[{}, {"k": 1}])) == []
    assert p.ended == [(0, Outcome.CLOUD, None), (1, Outcome.CLOUD, None)]
    assert (p.frames[1].answer, p.frames[1].meta, p.frames[1].endpoint) == ("b", {"k": 1}, "cloud")


def test_a_cloud_answer_for_a_frame_that_left_is_a_late_answer():
    p = Parts()
    send = p.send(0)
    p.resolve(p.frames[0], Outcome.LATE, Reason.DEADLINE)
    late = cloud_done(p, CloudDone(at=0.6, request=send.request, answers=["a"]))
    assert late == [LateAnswer(0, Route.CLOUD, 0.6)] and p.counters[("late_answer", "cloud")] == 1


@pytest.mark.parametrize("status, reason", [(FrameStatus.EXPIRED, Reason.EXPIRED_AT_ENDPOINT),
                                            (FrameStatus.ERROR, Reason.CLOUD_FRAME_ERROR)])
def test_a_frame_the_endpoint_did_not_answer_is_dropped_for_its_status(status, reason):
    p = Parts(batch=2)  # (no hedging: nothing is rescued locally)
    send = p.send(0, 1)
    cloud_done(p, CloudDone(at=0.2, request=send.request, answers=[None, "b"], frame_errors={0: status}))
    assert p.ended == [(0, Outcome.DROPPED, reason), (1, Outcome.CLOUD, None)]
    assert p.counters[("endpoint", "cloud", f"frames_{status.value}")] == 1
    assert p.headroom.missing == 0.5  # one of the two uploads brought no answer


def test_a_hedged_frames_first_answer_is_its_own_and_the_second_only_counted():
    p = Parts(hedge=True)
    send = p.send(0)
    p.hedger.start(p.frames[0], 0.1)  # also running locally
    assert p.answers.local_done(LocalDone(at=0.2, seq=0, service_s=0.1, answer="local")) == []
    assert p.ended == [(0, Outcome.LOCAL, None)] and p.counters[("hedge", "local_first")] == 1
    assert cloud_done(p, CloudDone(at=0.3, request=send.request, answers=["cloud"])) == []  # no LateAnswer
    assert p.counters[("hedge", "second_answer", "cloud")] == 1 and p.frames[0].answer == "local"


def test_a_hedges_failed_local_run_leaves_the_frame_to_the_cloud():
    p = Parts(hedge=True)
    send = p.send(0)
    p.hedger.start(p.frames[0], 0.1)
    p.answers.local_done(LocalDone(at=0.2, seq=0, service_s=0.1, error="boom"))
    assert not p.ended and not p.frames[0].hedged and p.frames[0].stage is Stage.CLOUD_FLIGHT
    cloud_done(p, CloudDone(at=0.3, request=send.request, answers=["cloud"]))
    assert p.ended == [(0, Outcome.CLOUD, None)] and not p.counters[("hedge", "cloud_first")]


def test_a_hedged_frame_the_endpoint_answered_expired_waits_for_its_local_run():
    p = Parts(hedge=True)
    send = p.send(0)
    p.hedger.start(p.frames[0], 0.1)
    cloud_done(p, CloudDone(at=0.2, request=send.request, answers=[None], frame_errors={0: FrameStatus.EXPIRED}))
    assert not p.ended and p.frames[0].stage is Stage.LOCAL_RUN and not p.frames[0].hedged
    p.answers.local_done(LocalDone(at=0.3, seq=0, service_s=0.2, answer="local"))
    assert p.ended == [(0, Outcome.LOCAL, None)]
