"""Moving estimates of service and round-trip times (pure: no clocks, no threads).

>>> e = Ewma(alpha=0.5)
>>> e.update(0.1); e.update(0.3)
>>> round(e.mean, 3)
0.2
>>> e.upper(0.0) == e.mean
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yolo_edge.errors import ConfigError

__all__ = ["Ewma"]


@dataclass
class Ewma:
    """Exponentially weighted mean and variance of a positive quantity.

    The first sample sets the mean (no bias toward zero); ``prior`` answers while there
    is no sample yet. ``upper(k)`` is ``mean + k * std``: a policy that plans against a
    jittery network uses it rather than the mean, so a wide spread makes it cautious.
    """

    alpha: float = 0.2
    prior: float | None = None
    mean: float = 0.0
    var: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"Ewma alpha must be in (0, 1], got {self.alpha!r}")

    def update(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"Ewma sample must be a finite non-negative number, got {value!r}")
        if self.count == 0:
            self.mean, self.var = value, 0.0
        else:
            delta = value - self.mean
            self.mean += self.alpha * delta
            # West's incremental form of the exponentially weighted variance
            self.var = (1.0 - self.alpha) * (self.var + self.alpha * delta * delta)
        self.count += 1

    @property
    def value(self) -> float | None:
        """The estimate, or the prior when nothing has been observed (None without prior)."""
        return self.mean if self.count else self.prior

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.count > 1 else 0.0

    def upper(self, k: float = 1.0) -> float | None:
        """``mean + k * std``; the prior before any sample."""
        if not self.count:
            return self.prior
        return self.mean + k * self.std
