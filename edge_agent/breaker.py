"""Circuit breaker on cloud failures, as pure values (the caller passes ``now``).

After ``threshold`` consecutive failures the breaker opens for a cool-down (doubling on
each re-trip, capped, and at least what the server asked for with Retry-After). When the
cool-down ends it is half-open: one probe may go; a success closes it, a failure opens it
again.

>>> cfg = BreakerConfig(threshold=2, cooldown_s=5.0)
>>> b = on_failure(on_failure(Breaker(), now=0.0, cfg=cfg), now=1.0, cfg=cfg)
>>> b.state(now=2.0), b.state(now=6.5)
('open', 'half_open')
>>> on_success(b).state(now=7.0)
'closed'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from yolo_edge.errors import ConfigError

from .policy import CloudState

__all__ = ["BreakerConfig", "Breaker", "on_failure", "on_success", "effective_cloud"]


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    threshold: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ConfigError(
                f"breaker needs threshold >= 1 and 0 < cooldown_s <= max_cooldown_s, got {self.threshold}, "
                f"{self.cooldown_s}, {self.max_cooldown_s}"
            )


@dataclass(frozen=True)
class Breaker:
    failures: int = 0  # consecutive
    trips: int = 0  # times opened since the last success
    open_until: float = float("-inf")

    def state(self, now: float) -> str:
        if self.trips == 0:
            return "closed"
        return "open" if now < self.open_until else "half_open"


def on_failure(b: Breaker, *, now: float, cfg: BreakerConfig, retry_after_s: float | None = None) -> Breaker:
    failures = b.failures + 1
    if failures < cfg.threshold and b.trips == 0:
        return replace(b, failures=failures)
    if now < b.open_until:
        # requests sent before the breaker opened fail late: they do not extend the cool-down
        return replace(b, failures=failures)
    cooldown = min(cfg.max_cooldown_s, cfg.cooldown_s * 2 ** b.trips)
    if retry_after_s is not None:
        cooldown = max(cooldown, float(retry_after_s))
    return Breaker(failures=failures, trips=b.trips + 1, open_until=now + cooldown)


def on_success(b: Breaker) -> Breaker:
    return Breaker()


def effective_cloud(phase: CloudState, b: Breaker, now: float, capacity: int) -> tuple[CloudState, int]:
    """The cloud state and in-flight capacity the policy should see.

    A half-open breaker shows READY with room for a single probe frame.
    """
    if phase is not CloudState.READY:
        return phase, capacity
    state = b.state(now)
    if state == "open":
        return CloudState.FAILING, capacity
    if state == "half_open":
        return CloudState.READY, 1
    return CloudState.READY, capacity
