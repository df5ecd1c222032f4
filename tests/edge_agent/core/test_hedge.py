"""Hedging's own books: the frames running on both routes, and the device's headroom."""

from __future__ import annotations

import pytest

from edge_agent.core.frames import Reason
from edge_agent.core.hedge import NOT_SHORT, Headroom, Hedges


def test_the_first_answer_is_the_frames_the_second_only_counted():
    h = Hedges()
    h.start(3)
    assert not h.second(3) and 3 in h  # the first answer: the frame's
    assert h.second(3) and 3 not in h  # the second: counted, and the books close
    assert not h.second(3)  # nothing more comes for it


def test_a_run_that_ends_without_an_answer_closes_the_books():
    h = Hedges()
    h.start(4)
    h.over(4)  # e.g. the local run failed: only the cloud's answer may come now
    assert not h.second(4) and len(h) == 0


def test_unhedged_answers_are_never_second():
    assert not Hedges().second(9)


def test_headroom_is_gone_while_more_than_the_share_is_dropped_short_and_back_a_window_later():
    room = Headroom(window_s=1.0, short_share=0.05)
    for i in range(40):
        room.frame(i / 40)
    room.dropped(Reason.CLOUD_FAILING, 0.5)
    assert room.spare(0.9)  # 1 of 40: within 5%
    room.dropped(Reason.UPLINK_TOO_SLOW, 0.6)
    room.dropped(Reason.LOCAL_BUSY, 0.7)
    assert not room.spare(0.95)  # 3 of 40
    assert room.spare(1.8)  # the drops left the window


@pytest.mark.parametrize("reason", sorted(NOT_SHORT))
def test_drops_that_say_nothing_about_capacity_do_not_count(reason):
    room = Headroom()
    room.frame(0.0)
    room.dropped(reason, 0.0)
    assert room.spare(0.1)


def test_missing_is_the_share_of_the_last_answers_that_did_not_answer_in_time():
    room = Headroom(answers=4)
    assert room.missing == 0.0
    for missed in (True, True, False, True, False, False):
        room.cloud_answered(missed)
    assert room.missing == pytest.approx(1 / 4)  # the last four: False, True, False, False


def test_the_headrooms_windows_stay_a_window_long_when_nobody_asks():
    """An agent running for hours with hedging off never asks whether it has room to spare: its
    windows still hold only the last second."""
    room = Headroom(window_s=1.0)
    for i in range(10_000):
        t = i * 0.01
        room.frame(t)
        room.dropped("cloud_busy", t)
        room.wanted_cloud(t)
    assert max(len(room._frames), len(room._short), len(room._cloud)) <= 101
    assert room.cloud_rate(99.99) == 101.0 and not room.spare(99.99)
