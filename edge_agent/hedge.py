"""What hedging keeps apart from the frames: the frames running on both routes, and headroom.

:class:`Hedges` books the frames that run locally while their cloud request is out: the first
answer is the frame's, the second is only counted. :class:`Headroom` says whether the device
has capacity to spare for a hedge ahead of its local queue (few frames dropped for lack of
capacity in the last second) and how much of the cloud's recent work came back expired.
Both are used by :class:`edge_agent.core.DeviceCore`, fed event times.

>>> h = Hedges(); h.start(7)
>>> h.second(7), h.second(7), 7 in h
(False, True, False)
>>> room = Headroom()
>>> for t in (0.1, 0.2, 0.3): room.frame(t)
>>> room.dropped("cloud_unavailable", 0.3); room.spare(0.5)
False
>>> room.spare(1.4)
True
"""

from __future__ import annotations

from collections import deque

__all__ = ["Hedges", "Headroom", "NOT_SHORT"]

#: drop reasons that do not mean the device was short of capacity
NOT_SHORT = frozenset({"expired", "shutdown", "local_warming", "local_error", "expired_at_endpoint",
                       "cloud_frame_error", "cloud_mismatch"})


class Hedges:
    """Hedged frames whose two runs have not both ended, and which of them have one answer."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._answered: set[int] = set()

    def start(self, seq: int) -> None:
        self._open.add(seq)

    def second(self, seq: int) -> bool:
        """An answer came for ``seq``: whether it is the second of a hedged frame's two."""
        if seq not in self._open:
            return False
        if seq in self._answered:
            self.over(seq)
            return True
        self._answered.add(seq)
        return False

    def over(self, seq: int) -> None:
        """One of the two runs ended without an answer: no second answer will come."""
        self._open.discard(seq)
        self._answered.discard(seq)

    def __contains__(self, seq: object) -> bool:
        return seq in self._open

    def __len__(self) -> int:
        return len(self._open)


class Headroom:
    """The last ``window_s`` of frames, of drops for lack of capacity and of frames the policy
    wanted the cloud for; how the cloud's last frames came back.

    ``spare``: at most ``short_share`` of the window's frames were dropped short of capacity.
    ``cloud_rate``: frames a second the policy wanted the cloud for (the flow the uplink carries).
    """

    def __init__(self, *, window_s: float = 1.0, short_share: float = 0.05, answers: int = 20) -> None:
        self.window_s, self.short_share = window_s, short_share
        self._frames: deque[float] = deque()
        self._short: deque[float] = deque()
        self._cloud: deque[float] = deque()
        self._missed: deque[bool] = deque(maxlen=answers)

    def frame(self, at: float) -> None:
        self._add(self._frames, at)

    def dropped(self, reason: str | None, at: float) -> None:
        """A frame was dropped for ``reason``; counted when it means the device was short."""
        if reason not in NOT_SHORT:
            self._add(self._short, at)

    def wanted_cloud(self, at: float) -> None:
        """The policy sent a frame to the cloud, or dropped it because the cloud could not take it."""
        self._add(self._cloud, at)

    def spare(self, now: float) -> bool:
        self._prune(self._frames, now)
        self._prune(self._short, now)
        return len(self._short) <= self.short_share * len(self._frames)

    def cloud_rate(self, now: float) -> float:
        self._prune(self._cloud, now)
        return len(self._cloud) / self.window_s

    def _add(self, q: deque[float], at: float) -> None:
        q.append(at)
        self._prune(q, at)  # (a window nobody asks about for hours still stays a window long)

    def _prune(self, q: deque[float], now: float) -> None:
        while q and q[0] < now - self.window_s:
            q.popleft()

    def cloud_answered(self, missed: bool) -> None:
        """The cloud answered a frame: in time, or ``missed`` (expired, an error, or after its deadline)."""
        self._missed.append(missed)

    @property
    def missing(self) -> float:
        """The share of the cloud's recent frame answers that did not answer the frame in time."""
        return sum(self._missed) / len(self._missed) if self._missed else 0.0
