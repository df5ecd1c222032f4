"""Robust estimates of service and round-trip times (pure: no clocks, no threads).

The device plans against the *distribution* of recent samples, not a moving mean: one
slow round trip among sixty moves a 90th percentile by one rank, where it moved a
mean-plus-one-std estimate far enough to switch offloading off for seconds.

>>> q = WindowedQuantile(size=5)
>>> for x in (0.10, 0.11, 0.12, 0.10, 2.0):   # one outlier
...     q.update(x, at=0.0)
>>> q.quantile(0.5)
0.11
>>> q.quantile(0.75) < 0.2
True
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from yolo_edge.errors import ConfigError

__all__ = ["WindowedQuantile", "SojournModel"]


class WindowedQuantile:
    """Quantiles of the recent samples of a non-negative quantity.

    The window holds the last ``size`` samples, and with ``horizon_s`` only those of the
    last ``horizon_s`` seconds (but always the newest ``keep``): where samples are sparse (a
    cloud probed once a second) a count window alone would remember a slow spell for half a
    minute after it ended. With ``forget_s`` even the newest ``keep`` go once they are that old,
    and the estimate falls back to ``prior``: an estimate ages out instead of freezing when
    nothing new is measured (a lane the device stopped using because it looked slow).
    ``prior`` answers while there is no sample. ``last_at`` is the time of the newest sample
    (the caller's clock), so a caller can tell a stale estimate from a fresh one.

    >>> q = WindowedQuantile(8, prior=0.05, horizon_s=3.0, forget_s=10.0)
    >>> q.update(0.6, at=0.0)   # one slow spell, then nothing measured
    >>> q.quantile(0.75, now=5.0), q.quantile(0.75, now=10.5)
    (0.6, 0.05)
    """

    def __init__(self, size: int = 64, prior: float | None = None, *, horizon_s: float | None = None,
                 keep: int = 3, forget_s: float | None = None) -> None:
        if int(size) < 1 or int(keep) < 1:
            raise ConfigError(f"estimator window size and keep must be >= 1 sample, got {size!r}, {keep!r}")
        if horizon_s is not None and not horizon_s > 0:
            raise ConfigError(f"estimator horizon_s must be a positive number of seconds or None, got {horizon_s!r}")
        if forget_s is not None and not forget_s > 0:
            raise ConfigError(f"estimator forget_s must be a positive number of seconds or None, got {forget_s!r}")
        self.size = int(size)
        self.prior = prior
        self.horizon_s = horizon_s
        self.forget_s = forget_s
        self.keep = min(int(keep), self.size)
        self._order: deque[tuple[float, float]] = deque()
        self._sorted: list[float] = []
        self.count = 0
        self.last_at: float | None = None

    def _evict(self) -> None:
        at, value = self._order.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, value)]

    def _age_out(self, now: float) -> None:
        if self.horizon_s is not None:
            while len(self._order) > self.keep and self._order[0][0] < now - self.horizon_s:
                self._evict()
        if self.forget_s is not None:
            while self._order and self._order[0][0] < now - self.forget_s:
                self._evict()

    def update(self, value: float, *, at: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"a timing sample must be a finite non-negative number of seconds, got {value!r}")
        if len(self._order) == self.size:
            self._evict()
        self._order.append((at, value))
        bisect.insort(self._sorted, value)
        self.count += 1
        self.last_at = at
        self._age_out(at)

    def quantile(self, q: float, now: float | None = None) -> float | None:
        """The ``q`` quantile (nearest rank) of the window at ``now``; the prior before any sample."""
        if now is not None:
            self._age_out(now)
        if not self._sorted:
            return self.prior
        return _nearest_rank(self._sorted, q)

    def remaining(self, q: float, elapsed: float, now: float | None = None) -> float | None:
        """The ``q`` quantile of what is left of a run that has taken ``elapsed`` so far: of the
        samples longer than ``elapsed``, less ``elapsed``. None when no sample is that long (the
        run is slower than any seen: nothing says how much of it is left).

        >>> q = WindowedQuantile(8)
        >>> for v in (0.25, 0.5, 0.5, 0.75):
        ...     q.update(v, at=0.0)
        >>> q.remaining(0.5, 0.25), q.remaining(0.5, 0.75)
        (0.25, None)
        """
        if now is not None:
            self._age_out(now)
        longer = self._sorted[bisect.bisect_right(self._sorted, elapsed):]
        if not longer:
            return None
        return _nearest_rank(longer, q) - elapsed

    @property
    def samples(self) -> int:
        """Samples in the window now (at most ``size``)."""
        return len(self._sorted)

    def __repr__(self) -> str:
        return f"WindowedQuantile(n={len(self._sorted)}, p50={self.quantile(0.5)}, p90={self.quantile(0.9)})"


class SojournModel:
    """How long a frame takes from joining a queue to its answer, given the frames ahead of it.

    A cloud endpoint answers a frame that finds three frames ahead of it later than one that
    finds none; a single round-trip estimate multiplied by "waves" counts the service's own
    queueing twice, and an estimate per depth is too sparse to trust at the depths that
    matter. Here every recent sample ``(depth, sojourn)`` serves every depth: the marginal
    cost of one frame ahead, ``per_frame``, is the median of ``(sojourn - base) / depth``
    over the samples that had frames ahead (``base``: the median of those that had none,
    or of the shallowest), and the estimate at depth ``k`` is a quantile of the samples
    moved to that depth, ``sojourn + per_frame * (k - depth)``. A cloud with idle capacity
    shows ``per_frame`` near 0, a saturated one about its service time per frame. Past the
    deepest depth seen in the window the model knows nothing, so it assumes the worst it can
    justify: each further frame costs at least ``base / parallel`` (the endpoint serving
    ``parallel`` frames at once, no more), until samples from that depth say otherwise.

    >>> m = SojournModel(size=32, parallel=4)
    >>> for i in range(10):
    ...     m.update(0, 0.13, at=0.0); m.update(2, 0.29, at=0.0)
    >>> round(m.per_frame(), 3), round(m.quantile(1, 0.5), 3), round(m.quantile(2, 0.5), 3)
    (0.08, 0.21, 0.29)
    """

    def __init__(self, *, size: int = 64, horizon_s: float | None = None, keep: int = 8, parallel: int = 1,
                 forget_s: float | None = None) -> None:
        if int(size) < 1 or int(keep) < 1 or int(parallel) < 1:
            raise ConfigError(f"SojournModel needs size and keep >= 1 sample, got {size!r}, {keep!r}")
        if horizon_s is not None and not horizon_s > 0:
            raise ConfigError(f"SojournModel horizon_s must be a positive number of seconds or None, got {horizon_s!r}")
        self.size, self.horizon_s, self.keep = int(size), horizon_s, min(int(keep), int(size))
        #: even the newest ``keep`` go after this long: an endpoint avoided for being slow gets tried again
        self.forget_s = forget_s
        self.parallel = int(parallel)
        self._samples: deque[tuple[float, int, float]] = deque()
        self._cache: dict = {}
        self.last_at: float | None = None
        self.count = 0

    def update(self, depth: int, value: float, *, at: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"a timing sample must be a finite non-negative number of seconds, got {value!r}")
        if len(self._samples) == self.size:
            self._samples.popleft()
        self._samples.append((at, max(0, int(depth)), value))
        self._cache.clear()
        self.last_at = at
        self.count += 1

    def _age_out(self, now: float | None) -> None:
        if now is None or self.horizon_s is None:
            return
        while len(self._samples) > self.keep and self._samples[0][0] < now - self.horizon_s:
            self._samples.popleft()
            self._cache.clear()
        while self.forget_s is not None and self._samples and self._samples[0][0] < now - self.forget_s:
            self._samples.popleft()
            self._cache.clear()

    @property
    def samples(self) -> int:
        return len(self._samples)

    def per_frame(self, now: float | None = None) -> float:
        """The estimated extra wait per frame ahead (0 without samples at two depths)."""
        self._age_out(now)
        if "b" not in self._cache:
            self._cache["b"], self._cache["deep"], self._cache["base"] = self._slope()
        return self._cache["b"]

    def _slope(self) -> tuple[float, int, float]:
        if not self._samples:
            return 0.0, 0, 0.0
        depths = [d for _, d, _ in self._samples]
        shallow, deep = min(depths), max(depths)
        base = _median([v for _, d, v in self._samples if d == shallow])
        slopes = [(v - base) / (d - shallow) for _, d, v in self._samples if d > shallow]
        return (max(0.0, _median(slopes)) if slopes else 0.0), deep, base

    def quantile(self, depth: int, q: float, now: float | None = None) -> float | None:
        """The ``q`` quantile of the answer time for a frame with ``depth`` frames ahead."""
        b = self.per_frame(now)
        if not self._samples:
            return None
        key = ("adj", depth)
        xs = self._cache.get(key)
        if xs is None:
            xs = self._cache[key] = sorted(v + b * (depth - d) for _, d, v in self._samples)
        unseen = max(0, depth - self._cache["deep"])
        extra = unseen * max(0.0, self._cache["base"] / self.parallel - b)
        return _nearest_rank(xs, q) + extra


def _nearest_rank(xs: list[float], q: float) -> float:
    """The ``q`` quantile of the sorted, non-empty ``xs`` by nearest rank (a value of ``xs``)."""
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
