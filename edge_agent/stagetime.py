"""The agent's own cost per frame, by stage: CPU time of the thread doing each stage.

Each stage is a clearly scoped section timed with ``time.thread_time()`` (the calling
thread's CPU time, not the wall clock, so that time spent waiting on the network, a lock
or another thread is not counted) and ``time.perf_counter()``. Stages of the threaded
agent (``edge_agent.runner``):

- ``core``: the device core handling an event (admission, routing, release);
- ``sinks``: released results through the sinks, the run statistics and the metrics;
- ``upload``: one cloud request in a sender thread (encoding, HTTP, reading the answer);
- ``inference``: the local worker's detector call (the reference the others are compared with).

A benchmark adds its own (``capture``: reading and resizing a frame; ``encode``). Two clock
reads and one locked add per section: about a microsecond.

>>> st = StageTimes()
>>> with st.stage("core"):
...     _ = sum(range(1000))
>>> st.totals()["core"].count
1
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

__all__ = ["StageTimes", "StageTotal"]


@dataclass
class StageTotal:
    """One stage's sums: CPU seconds of the threads that ran it, wall seconds, sections."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    count: int = 0

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        n = max(1, frames)
        return {"cpu_ms": round(1e3 * self.cpu_s / n, 4), "wall_ms": round(1e3 * self.wall_s / n, 4),
                "sections": self.count}


class StageTimes:
    """CPU and wall time per stage, summed over every thread that runs it; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, StageTotal] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.thread_time() - cpu0, time.perf_counter() - wall0)

    def add(self, name: str, cpu_s: float, wall_s: float, count: int = 1) -> None:
        with self._lock:
            total = self._totals.get(name)
            if total is None:
                total = self._totals[name] = StageTotal()
            total.cpu_s += cpu_s
            total.wall_s += wall_s
            total.count += count

    def totals(self) -> dict[str, StageTotal]:
        """A copy of the sums so far."""
        with self._lock:
            return {k: StageTotal(v.cpu_s, v.wall_s, v.count) for k, v in self._totals.items()}

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()

    def per_frame(self, frames: int) -> dict[str, dict[str, float]]:
        """Each stage's CPU and wall milliseconds per frame over ``frames`` frames."""
        return {k: v.per_frame_ms(frames) for k, v in self.totals().items()}
