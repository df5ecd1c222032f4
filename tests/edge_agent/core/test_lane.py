"""The local lane on its own: room, idleness, when a worker frees up, whether the queue can wait."""

from __future__ import annotations

import pytest

from edge_agent.core.estimators import WindowedQuantile
from edge_agent.core.lane import LaneState, LocalLane


def lane(workers: int = 1, ready: bool = True) -> LocalLane:
    return LocalLane(workers, ready=ready, estimator=WindowedQuantile(32), prior_s=0.2)


def test_a_warming_lane_is_never_idle_and_a_failed_one_never_ready():
    lane_ = lane(ready=False)
    assert lane_.state is LaneState.WARMING and not lane_.idle and lane_.has_room
    lane_.state = LaneState.FAILED
    assert not lane_.ready and not lane_.idle


def test_the_prior_until_a_run_ends_then_what_the_runs_took():
    lane_ = lane()
    assert lane_.estimate(0.5, 0.0) == 0.2
    for i, took in enumerate((0.05, 0.07, 0.06)):
        lane_.start(i, now=float(i))
        lane_.end(i, service_s=took, now=i + took)
    assert lane_.estimate(0.5, 3.0) == 0.06 and lane_.busy == 0


def test_a_failed_run_frees_its_worker_and_teaches_nothing():
    lane_ = lane()
    lane_.start(0, now=0.0)
    lane_.end(0, now=5.0)
    assert lane_.busy == 0 and lane_.estimate(0.5, 5.0) == 0.2


def test_the_next_slot_is_the_oldest_runs_end_among_frames_still_waiting_for_it():
    lane_ = lane(workers=2)
    lane_.start(3, now=1.0)
    assert lane_.slot(1.5, 0.4, running={3}) == 1.5  # a worker is free
    lane_.start(4, now=1.2)
    assert lane_.slot(1.3, 0.4, running={3, 4}) == 1.4
    assert lane_.slot(1.3, 0.4, running={4}) == 1.6  # frame 3 already left (its run is a late answer)
    assert lane_.slot(1.3, 0.4, running=set()) == 1.3 + 0.4


def test_the_queue_can_wait_one_run_only_if_every_queued_frame_still_makes_it():
    lane_ = lane()
    lane_.queue.extend([7, 8])
    deadlines = {7: 1.0, 8: 1.3}
    # frame i of the queue would start one run later: slot + (i + 2) * est
    assert lane_.queue_can_wait(0.5, 0.25, deadlines.__getitem__)
    assert not lane_.queue_can_wait(0.6, 0.25, deadlines.__getitem__)


def test_what_is_left_of_each_run_counts_its_time_so_far_and_a_run_slower_than_any_is_planned_whole():
    lane = LocalLane(workers=2, ready=True, estimator=WindowedQuantile(32), prior_s=0.1)
    for v in (0.18, 0.2, 0.2, 0.22):
        lane.estimator.update(v, at=0.0)
    lane.start(0, now=1.0)
    lane.start(1, now=1.15)
    # at 1.25: run 0 has taken 0.25 (longer than any seen: a whole 0.75 quantile, 0.2), run 1 0.1
    assert lane.left(0.75, 1.25) == pytest.approx((0.2, 0.1))
