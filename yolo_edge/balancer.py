"""The rules every endpoint pool follows, as pure functions of its state and ``now``: no clock, thread or socket.

Two drivers hold the state and call these rules: :class:`yolo_edge.pool.EndpointPool` (with
its clock, under its lock) and the edge agent's device core (``edge_agent.pool.CloudPool``,
with event times), so an SDK pool and an agent choose, take out, bring back and hold to a
model by the same rules:

- **Who serves**: the endpoints in rotation, the primaries; the backups only while no
  primary is (:func:`serving`). Among them each driver takes the least loaded per unit of
  weight, with its own tie-break (the SDK's weighted turns; the agent's deadline fit and
  answer-time estimates, which only it has).
- **Health** (nginx's ``max_fails`` within ``fail_timeout``, :mod:`yolo_edge.health`): a
  failure (:func:`failed`) says whether it is the one that took the endpoint out; an
  endpoint whose time out is up is probed, and one whose probe fails is out again
  (:func:`probe_failed`); a success clears it (:func:`on_success`).
- **One model, fixed, never voted** (:class:`ModelRule`): the model given, else the first
  endpoint listed names it with its answer; every other model is refused.

>>> rule = ModelRule()
>>> rule.judge("b" * 64, "fall", first=False)  # a second endpoint cannot name the pool's model
"the pool's model is the first endpoint's, which has not named it yet"
>>> rule.judge("a" * 64, "coco", first=True), rule.sha256[:4]
(None, 'aaaa')
>>> rule.judge("b" * 64, "fall")
"it serves model 'fall' with sha256 bbbbbbbbbbbb..., not the pool's aaaaaaaaaaaa..."
>>> cfg = HealthConfig(max_fails=2, fail_timeout_s=1.0)
>>> h, out = failed(Health(), now=0.0, cfg=cfg)
>>> h, out = failed(h, now=0.5, cfg=cfg)
>>> out, h.out_until, probe_failed(now=1.5, cfg=cfg).out_until
(True, 1.5, 2.5)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

from .errors import ConfigError
from .health import Health, HealthConfig, on_failure, on_success
from .wire import short_repr

__all__ = ["ModelRule", "check_share", "serving", "failed", "probe_failed", "Health", "HealthConfig", "on_failure",
           "on_success"]

T = TypeVar("T")


class ModelRule:
    """The pool's model: ``sha256`` as given, else (None) the first endpoint's once its answer names it."""

    def __init__(self, sha256: str | None = None, name: str = "?") -> None:
        self.sha256 = sha256.lower() if sha256 else None
        self.name = name

    def judge(self, sha256: str, name: str = "?", *, first: bool = False) -> str | None:
        """None when ``sha256`` is the pool's model, else what is wrong (for the log and the status).

        ``first``: the answer comes from the first endpoint listed, whose model becomes the
        pool's when none was given. No other endpoint's answer can name it.
        """
        sha = sha256.lower()
        if self.sha256 is None and not first:
            return "the pool's model is the first endpoint's, which has not named it yet"
        if not sha:
            return "it does not say which model it serves"
        if self.sha256 is None:
            self.sha256, self.name = sha, name
        if sha == self.sha256:
            if self.name == "?":
                self.name = name
            return None
        return f"it serves model {name!r} with sha256 {sha[:12]}..., not the pool's {self.sha256[:12]}..."


def check_share(label: str, weight: object, backup: object) -> float:
    """A member's share as configured: ``weight`` a positive number (returned as a float), ``backup`` True or False."""
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{label}: weight must be a positive number (its share relative to the others), "
                          f"got {short_repr(weight)}")
    if not isinstance(backup, bool):
        raise ConfigError(f"{label}: backup must be True or False, got {short_repr(backup)}")
    return float(weight)


def serving(members: Sequence[T], *, in_rotation: Callable[[T], bool], backup: Callable[[T], bool]) -> list[T]:
    """The members that take requests now: the primaries in rotation, else the backups in rotation."""
    rotation = [m for m in members if in_rotation(m)]
    return [m for m in rotation if not backup(m)] or rotation


def failed(health: Health, *, now: float, cfg: HealthConfig, retry_after_s: float | None = None
           ) -> tuple[Health, bool]:
    """The health after a failure at ``now``, and whether this failure is the one that took the member out."""
    was_out = health.out(now)
    after = on_failure(health, now=now, cfg=cfg, retry_after_s=retry_after_s)
    return after, after.out(now) and not was_out


def probe_failed(*, now: float, cfg: HealthConfig, retry_after_s: float | None = None) -> Health:
    """A member whose probe (or the model check after it) failed: out for another ``fail_timeout_s``.

    Or for as long as the server asked with ``Retry-After``, if longer.
    """
    return Health((), now + max(cfg.fail_timeout_s, float(retry_after_s or 0.0)))
