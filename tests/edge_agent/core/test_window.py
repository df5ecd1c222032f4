"""The release window on its own: order, deadlines, forced leaves, the stage table."""

from __future__ import annotations

import pytest

from edge_agent.core.frames import Outcome, Route
from edge_agent.core.window import TRANSITIONS, FrameState, ReleaseWindow, Stage, StageError


def frame(seq: int, deadline: float, stage: Stage = Stage.LOCAL_QUEUE) -> FrameState:
    return FrameState(seq, captured=deadline - 0.5, deadline=deadline, budget=0.5, stage=stage)


def answer(f: FrameState) -> None:
    if f.stage is Stage.LOCAL_QUEUE:
        f.move(Stage.LOCAL_RUN)
    f.move(Stage.DONE)
    f.outcome, f.route = Outcome.LOCAL, Route.LOCAL


def leave_late(f: FrameState, why: str) -> None:
    f.move(Stage.DONE)
    f.outcome, f.reason = Outcome.LATE, why


def test_an_answered_frame_waits_for_the_one_before_it():
    w = ReleaseWindow(size=8)
    first, second = w.add(frame(0, 0.5)), w.add(frame(1, 0.6))
    answer(second)
    assert w.release(0.1, leave_late) == ()
    answer(first)
    assert [r.seq for r in w.release(0.2, leave_late)] == [0, 1]
    assert len(w) == 0 and w.next_deadline() is None


def test_a_later_frames_deadline_takes_the_ones_before_it_out():
    w = ReleaseWindow(size=8)
    w.add(frame(0, 2.0))  # a long budget, still running
    answer(w.add(frame(1, 0.5)))  # a short one, answered, due first
    assert [f.seq for f in w.due(0.5)] == [1]
    out = w.release(0.5, leave_late)
    assert [(r.seq, r.outcome, r.reason) for r in out] == [(0, Outcome.LATE, "held_order"), (1, Outcome.LOCAL, None)]


def test_a_full_window_forces_the_oldest_out():
    w = ReleaseWindow(size=2)
    for seq in range(3):
        w.add(frame(seq, 10.0))
    out = w.release(0.1, leave_late)
    assert [(r.seq, r.reason) for r in out] == [(0, "window_full")] and len(w) == 2


def test_an_answer_released_after_its_deadline_is_late():
    w = ReleaseWindow(size=8)
    answer(w.add(frame(0, 0.5)))
    (r,) = w.release(0.7, leave_late)
    assert r.outcome is Outcome.LATE and r.reason == "released_late"


def test_deadlines_come_once_each_and_only_for_frames_still_there():
    w = ReleaseWindow(size=8)
    answer(w.add(frame(0, 0.5)))
    w.add(frame(1, 0.6))
    w.release(0.1, leave_late)  # frame 0 leaves
    assert w.next_deadline() == 0.6
    assert [f.seq for f in w.due(1.0)] == [1] and list(w.due(1.0)) == []


def test_a_frame_that_must_leave_with_no_one_to_resolve_it_is_a_bug_not_a_silent_loss():
    w = ReleaseWindow(size=1)
    w.add(frame(0, 1.0))
    w.add(frame(1, 1.0))
    with pytest.raises(StageError, match="window_full"):
        w.release(0.1, leave=None)


@pytest.mark.parametrize("start", list(Stage))
def test_every_move_outside_the_table_is_refused_before_it_changes_anything(start):
    for to in Stage:
        f = frame(0, 1.0, stage=start)
        if to in TRANSITIONS[start]:
            f.move(to)
            assert f.stage is to
        else:
            with pytest.raises(StageError, match=f"from {start.name} to {to.name}"):
                f.move(to)
            assert f.stage is start


def test_done_is_final_and_a_local_run_only_ends():
    assert TRANSITIONS[Stage.DONE] == frozenset()
    assert TRANSITIONS[Stage.LOCAL_RUN] == {Stage.DONE}
