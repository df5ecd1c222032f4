"""Circuit breaker on cloud failures, as pure values (the caller passes ``now``).

After ``threshold`` consecutive failures the breaker opens for a cool-down (doubling on
each re-trip, capped at ``max_cooldown_s``, and at least what the server asked for with
``Retry-After``). When the cool-down ends it is half-open: one probe may go at once; a
success closes it, a failure opens it again. The cap is short (0.5 s by default) because a
probe costs one frame that had nowhere better to go, while a long cool-down keeps
dropping overflow frames long after the cloud is back.

>>> cfg = BreakerConfig(threshold=2, cooldown_s=0.25, max_cooldown_s=0.5)
>>> b = on_failure(on_failure(Breaker(), now=0.0, cfg=cfg), now=1.0, cfg=cfg)
>>> b.state(now=1.1).value, b.state(now=1.3).value
('open', 'half_open')
>>> on_success(b).state(now=1.3).value
'closed'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

from yolo_edge.errors import ConfigError

__all__ = ["BreakerConfig", "Breaker", "BreakerState", "on_failure", "on_success"]


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    threshold: int = 3
    cooldown_s: float = 0.25
    max_cooldown_s: float = 0.5

    def __post_init__(self) -> None:
        if (not isinstance(self.threshold, int) or self.threshold < 1 or not math.isfinite(self.max_cooldown_s)
                or not 0 < self.cooldown_s <= self.max_cooldown_s):
            raise ConfigError(
                f"breaker needs threshold >= 1 and 0 < cooldown_s <= max_cooldown_s, got {self.threshold!r}, "
                f"{self.cooldown_s!r}, {self.max_cooldown_s!r}"
            )


@dataclass(frozen=True)
class Breaker:
    failures: int = 0  # consecutive
    trips: int = 0  # times opened since the last success
    open_until: float = float("-inf")

    def state(self, now: float) -> BreakerState:
        if self.trips == 0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.open_until else BreakerState.HALF_OPEN


def on_failure(b: Breaker, *, now: float, cfg: BreakerConfig, retry_after_s: float | None = None) -> Breaker:
    failures = b.failures + 1
    if failures < cfg.threshold and b.trips == 0 and retry_after_s is None:
        return replace(b, failures=failures)
    if now < b.open_until:
        # requests sent before the breaker opened fail late: they do not extend the cool-down
        return replace(b, failures=failures)
    cooldown = min(cfg.max_cooldown_s, cfg.cooldown_s * 2 ** b.trips)
    if retry_after_s is not None:
        # the server said when to come back: that is the one wait longer than our cap
        cooldown = max(cooldown, float(retry_after_s))
    return Breaker(failures=failures, trips=b.trips + 1, open_until=now + cooldown)


def on_success(b: Breaker) -> Breaker:
    return Breaker()
