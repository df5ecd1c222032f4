"""The core's events on their own: a bad one is refused before the core changes anything.

:func:`edge_agent.core.events.check` is what :class:`edge_agent.core.DeviceCore` asks first of every
event; a skipped frame's reason and a result's reason are members of
:class:`edge_agent.core.frames.Reason`.
"""

from __future__ import annotations

import math

import pytest

from edge_agent.core.events import FrameCaptured, FrameSkipped, LocalDone, Tick, WakeDone, check
from edge_agent.core.frames import FrameResult, Outcome, Reason
from yolo_edge.errors import ConfigError


def test_only_core_events_are_taken():
    with pytest.raises(ConfigError, match="takes a core event .*got str"):
        check("frame", next_seq=0, endpoints=0)
    check(Tick(at=1.0), next_seq=0, endpoints=0)


@pytest.mark.parametrize("event", [FrameCaptured(at=0.0, seq=3),
                                   FrameSkipped(at=0.0, seq=1, reason=Reason.STALE_SOURCE)])
def test_frames_come_in_their_turn(event):
    with pytest.raises(ConfigError, match=f"expected 2, got {event.seq}"):
        check(event, next_seq=2, endpoints=0)


@pytest.mark.parametrize("budget", [0, -1.0, math.nan, math.inf, "0.5"])
def test_a_frames_budget_is_a_positive_number_of_seconds(budget):
    with pytest.raises(ConfigError, match="positive number of seconds"):
        check(FrameCaptured(at=0.0, seq=0, budget_s=budget), next_seq=0, endpoints=0)


def test_a_good_frame_passes():
    check(FrameCaptured(at=0.0, seq=2, budget_s=0.25), next_seq=2, endpoints=0)
    check(LocalDone(at=0.0, seq=7, service_s=0.1), next_seq=0, endpoints=0)  # (its frame is the core's to know)


def test_a_wake_answers_an_endpoint_the_core_has():
    check(WakeDone(at=0.0, endpoint=1), next_seq=0, endpoints=2)
    for endpoint in (2, -1):
        with pytest.raises(ConfigError, match=f"endpoint {endpoint}; this core has 2"):
            check(WakeDone(at=0.0, endpoint=endpoint), next_seq=0, endpoints=2)


def test_a_skipped_frames_reason_is_a_reason():
    assert FrameSkipped(at=0.0, seq=0, reason="stale_source").reason is Reason.STALE_SOURCE
    with pytest.raises(ConfigError, match="a skipped frame's reason is a Reason"):
        FrameSkipped(at=0.0, seq=0, reason="stream_overrun")


def test_reasons_print_as_their_labels():
    r = FrameResult(seq=0, outcome=Outcome.DROPPED, reason="cloud_waking")
    assert r.reason is Reason.CLOUD_WAKING and r.to_dict()["reason"] == "cloud_waking"
    assert (str(r.reason), f"{r.outcome.value}[{r.reason}]", f"{r.reason:>14}") == (
        "cloud_waking", "dropped[cloud_waking]", "  cloud_waking")
