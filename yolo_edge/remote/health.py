"""Health of one cloud endpoint, as pure values (the caller passes ``now``).

Shared, through :mod:`yolo_edge.remote.balancer` (the pools' rules), by the SDK's
:class:`yolo_edge.remote.pool.EndpointPool` and the edge agent's device core (``edge_agent.core.pool``),
so both take an endpoint out and back by the same rule.

The rule is a load balancer's (nginx's ``max_fails``/``fail_timeout``): after ``max_fails``
failures within ``fail_timeout_s`` (and no success since), the endpoint is out of rotation
for ``fail_timeout_s`` (or for as long as the server asked with ``Retry-After``, if longer),
then probed through ``/readyz``; a ready answer puts it back. Failures of requests sent
before it went out, arriving late, do not extend the time out. The default time out is
short (0.8 s): a probe is one GET, while every second out costs the overflow frames of
that second.

>>> cfg = HealthConfig(max_fails=2, fail_timeout_s=0.8)
>>> h = on_failure(on_failure(Health(), now=0.0, cfg=cfg), now=0.3, cfg=cfg)
>>> h.out(now=0.5), h.out(now=1.2), h.out_until
(True, False, 1.1)
>>> on_failure(Health(), now=0.0, cfg=cfg, retry_after_s=5.0).out_until
5.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["HealthConfig", "Health", "on_failure", "on_success", "failed", "probe_failed"]


@dataclass(frozen=True, kw_only=True)
class HealthConfig:
    max_fails: int = 3
    fail_timeout_s: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.max_fails, int) or isinstance(self.max_fails, bool) or self.max_fails < 1:
            raise ConfigError(f"max_fails must be a whole number >= 1, got {self.max_fails!r}")
        if not (isinstance(self.fail_timeout_s, (int, float)) and math.isfinite(self.fail_timeout_s)
                and self.fail_timeout_s > 0):
            raise ConfigError(f"fail_timeout_s must be a positive number of seconds, got {self.fail_timeout_s!r}")


@dataclass(frozen=True)
class Health:
    fails: tuple[float, ...] = ()  # times of the failures since the last success, within the window
    out_until: float = -math.inf

    def out(self, now: float) -> bool:
        return now < self.out_until

    def recent(self, now: float, cfg: HealthConfig) -> int:
        """The failures within the last ``fail_timeout_s`` (since the last success)."""
        return sum(1 for t in self.fails if t > now - cfg.fail_timeout_s)


def on_failure(h: Health, *, now: float, cfg: HealthConfig, retry_after_s: float | None = None) -> Health:
    if h.out(now):
        return h  # a request sent before it went out, failing late: nothing new
    recent = tuple(t for t in h.fails if t > now - cfg.fail_timeout_s) + (now,)
    if retry_after_s is not None or len(recent) >= cfg.max_fails:
        # the server said when to come back: that is the one wait longer than ours
        return Health((), now + max(cfg.fail_timeout_s, float(retry_after_s or 0.0)))
    return Health(recent, h.out_until)


def on_success(h: Health) -> Health:
    return Health()


def failed(health: Health, *, now: float, cfg: HealthConfig, retry_after_s: float | None = None
           ) -> tuple[Health, bool]:
    """The health after a failure at ``now``, and whether this failure is the one that took the endpoint out."""
    was_out = health.out(now)
    after = on_failure(health, now=now, cfg=cfg, retry_after_s=retry_after_s)
    return after, after.out(now) and not was_out


def probe_failed(*, now: float, cfg: HealthConfig, retry_after_s: float | None = None) -> Health:
    """An endpoint whose probe (or the model check after it) failed: out for another ``fail_timeout_s``.

    Or for as long as the server asked with ``Retry-After``, if longer.
    """
    return Health((), now + max(cfg.fail_timeout_s, float(retry_after_s or 0.0)))
