"""The device's cloud side: a pool of endpoints, each with its own health, load and estimates.

Part of the sans-I/O device core (no clock, thread or socket): :class:`CloudPool` keeps,
per endpoint, its phase (cold, waking, ready, out, probing, disabled), its
:class:`~yolo_edge.health.Health`, the requests and frames it has in flight and a
:class:`~edge_agent.estimators.SojournModel` of its answer times; and, for the whole pool,
the model of how long a frame takes from joining the device's cloud queue to its answer,
which the policy plans with.

Choosing an endpoint for the next batch is a load balancer's choice with the batch's
deadline in mind: among the endpoints in rotation with a free request slot whose answer
time (its planning quantile at its load) fits the batch's tightest deadline, those without
a recent failure first, then the fewest frames outstanding per unit of weight, ties to the
one that answers soonest; when none fits, the one that answers soonest. Backup endpoints
serve only while no primary is in rotation. A batch goes to one endpoint, up to that endpoint's batch size.
Who serves, the health transitions and the model rule are the SDK pool's own
(:mod:`yolo_edge.balancer`); the deadline fit and the answer-time estimates are the device's.

>>> pool = CloudPool((EndpointSpec(name="a"), EndpointSpec(name="b", weight=2.0)), max_inflight=2, max_batch=1,
...                  health=HealthConfig(), cold=False)
>>> first = pool.pick(0.0); pool.sent(first, 1, request=1, now=0.0)
>>> second = pool.pick(0.0)
>>> first.name, second.name
('b', 'a')
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

from yolo_edge.errors import ConfigError

from .estimators import SojournModel, WindowedQuantile
from .events import Failure, Wake
from yolo_edge.balancer import Health, HealthConfig, check_share, failed, on_success, probe_failed, serving
from .policy import CloudState

__all__ = ["EndpointSpec", "Endpoint", "EndpointSnapshot", "CloudPool", "Phase"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EndpointSpec:
    """One cloud endpoint as configured. ``None`` limits take the device's."""

    name: str = "cloud"  # a label (the URL without credentials): logs, metrics, results
    weight: float = 1.0  # share of traffic relative to the others (least outstanding per weight)
    backup: bool = False  # used only while no primary endpoint is in rotation
    max_inflight: int | None = None  # requests in flight to this endpoint at once
    max_batch: int | None = None  # frames per request to this endpoint

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"an endpoint needs a name (its URL), got {self.name!r}")
        object.__setattr__(self, "weight", check_share(f"endpoint {self.name}", self.weight, self.backup))
        for key in ("max_inflight", "max_batch"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"endpoint {self.name}: {key} must be a whole number >= 1, got {value!r}")


class Phase(str, Enum):
    COLD = "cold"  # not known to be up: scaled to zero or never asked
    WAKING = "waking"  # a wake (GET /readyz until ready) is under way
    READY = "ready"
    OUT = "out"  # too many failures: out of rotation until its time is up
    PROBING = "probing"  # its time out is up: one GET /readyz decides
    DISABLED = "disabled"  # serves another model: never used again


_POLICY_STATE = {Phase.COLD: CloudState.COLD, Phase.WAKING: CloudState.WAKING, Phase.READY: CloudState.READY,
                 Phase.OUT: CloudState.FAILING, Phase.PROBING: CloudState.FAILING,
                 Phase.DISABLED: CloudState.DISABLED}
#: when no endpoint is ready, the state the policy is shown: the most hopeful one
_HOPE = (CloudState.READY, CloudState.WAKING, CloudState.COLD, CloudState.FAILING, CloudState.DISABLED)


@dataclass
class Endpoint:
    index: int
    spec: EndpointSpec
    max_inflight: int
    max_batch: int
    phase: Phase
    model: SojournModel  # send-to-answer time, by frames it already had in flight
    health: Health = field(default_factory=Health)
    requests: int = 0  # in flight, not timed out
    frames: int = 0  # frames in those requests
    #: request id -> since when the endpoint has it (sent; then its upload's end), for those in flight
    sent_at: dict = field(default_factory=dict)
    network: WindowedQuantile = field(default_factory=lambda: WindowedQuantile(32, horizon_s=30.0))
    answered: int = 0
    failures: int = 0
    reason: str | None = None  # why it is disabled (another model)

    @property
    def name(self) -> str:
        return self.spec.name

    def in_rotation(self, now: float) -> bool:
        return self.phase is Phase.READY and not self.health.out(now)

    def state(self, now: float) -> CloudState:
        if self.phase is Phase.READY and self.health.out(now):
            return CloudState.FAILING
        return _POLICY_STATE[self.phase]


@dataclass(frozen=True)
class EndpointSnapshot:
    """One endpoint as /healthz, the metrics and the summary show it."""

    name: str
    state: str  # a Phase value ("out" while its time out runs)
    backup: bool
    weight: float
    requests: int
    frames: int
    answered: int
    failures: int
    rtt_s: float | None  # median answer time with nothing else in flight
    reason: str | None = None  # why it is disabled


class CloudPool:
    """The endpoints of one device. Not thread-safe: the device core calls it."""

    def __init__(self, specs: Sequence[EndpointSpec], *, max_inflight: int, max_batch: int, health: HealthConfig,
                 cold: bool = True, estimator_window: int = 64, estimator_horizon_s: float | None = None,
                 counters: Counter | None = None) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"endpoint names must differ, got {names}")
        self.health_cfg = health
        self.counters = counters if counters is not None else Counter()
        self.endpoints = [
            Endpoint(i, s, s.max_inflight or max_inflight, s.max_batch or max_batch,
                     Phase.COLD if cold else Phase.READY,
                     SojournModel(size=estimator_window, horizon_s=estimator_horizon_s,
                                  parallel=(s.max_inflight or max_inflight) * (s.max_batch or max_batch),
                                  forget_s=None if estimator_horizon_s is None else 10 * estimator_horizon_s))
            for i, s in enumerate(specs)
        ]
        # from joining the device's cloud queue to the answer, by cloud frames ahead: the policy's estimate
        capacity = sum(e.max_inflight * e.max_batch for e in self.endpoints) or 1
        self.model = SojournModel(size=estimator_window, horizon_s=estimator_horizon_s, parallel=capacity)

    def __len__(self) -> int:
        return len(self.endpoints)

    # -- what the policy sees ----------------------------------------------------------
    def _serving(self, now: float) -> list[Endpoint]:
        """The endpoints in rotation: primaries, or the backups while no primary is."""
        return serving(self.endpoints, in_rotation=lambda e: e.in_rotation(now), backup=lambda e: e.spec.backup)

    def view(self, now: float) -> tuple[CloudState, int]:
        """The pool as one cloud: its state, and how many frames it takes in flight at once."""
        serving = self._serving(now)
        if serving:
            return CloudState.READY, sum(e.max_inflight * e.max_batch for e in serving)
        if not self.endpoints:
            return CloudState.NONE, 1
        states = {e.state(now) for e in self.endpoints}
        return next(s for s in _HOPE if s in states), 1

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.endpoints)

    # -- choosing -----------------------------------------------------------------------
    def pick(self, now: float, deadline: float = math.inf, quantile: float = 0.9, upload_s: float = 0.0
             ) -> Endpoint | None:
        """Where the next batch (due by ``deadline``) goes, or None while every serving endpoint is full.

        ``upload_s`` is the batch's time to leave the device: every endpoint sits behind the
        same uplink, so it moves every endpoint's answer time alike.
        """
        free = [e for e in self._serving(now) if e.requests < e.max_inflight]
        if not free:
            return None

        def eta(e: Endpoint, q: float) -> float:
            return upload_s + self.post_upload(e, q, now)

        fits = [e for e in free if now + eta(e, quantile) < deadline]
        if not fits:
            return min(free, key=lambda e: eta(e, quantile))

        def key(e: Endpoint) -> tuple[int, float, float]:
            recent = sum(1 for t in e.health.fails if t > now - self.health_cfg.fail_timeout_s)
            return recent, (e.frames + 1) / e.spec.weight, eta(e, 0.5)

        return min(fits, key=key)

    def post_upload(self, e: Endpoint, q: float, now: float, *, stuck: bool = True) -> float:
        """How long ``e`` takes from having a request (its upload done) to the answer, at its load.

        With ``stuck``, a request already out longer than the samples say counts too: an
        endpoint that just slowed down holds its requests before any answer can tell.
        """
        value = e.model.quantile(e.frames, q, now)
        held = now - min(e.sent_at.values()) if stuck and e.sent_at else 0.0
        return max(0.0 if value is None else value, held)  # never measured: worth finding out

    def sent(self, e: Endpoint, n: int, request: int, now: float) -> None:
        e.requests += 1
        e.frames += n
        e.sent_at[request] = now
        self.counters[("endpoint", e.name, "requests")] += 1

    def uploaded(self, e: Endpoint, request: int, at: float) -> None:
        """The request has left the device: the endpoint has it from now."""
        if request in e.sent_at:
            e.sent_at[request] = at

    def finished(self, e: Endpoint, n: int, request: int) -> None:
        """A request is over (answered, failed or timed out): its slot is free."""
        e.requests -= 1
        e.frames -= n
        e.sent_at.pop(request, None)

    # -- outcomes -----------------------------------------------------------------------
    def answered(self, e: Endpoint, *, n: int, since: float, depth: int, now: float,
                 network_s: float | None = None, sample: bool = True) -> None:
        """A request answered ``now``; the endpoint had it from ``since`` with ``depth`` frames ahead."""
        if sample:
            e.model.update(depth, now - since, at=now)
        if network_s is not None and network_s >= 0:
            e.network.update(network_s, at=now)
        e.answered += n
        self.counters[("endpoint", e.name, "frames_answered")] += n
        if e.health.fails or e.health.out_until > -math.inf:
            e.health = on_success(e.health)

    def failed(self, e: Endpoint, now: float, failure: Failure, *, retry_after_s: float | None = None,
               message: str = "") -> None:
        e.failures += 1
        self.counters[("endpoint", e.name, f"failure_{failure.value}")] += 1
        if failure is Failure.MISMATCH:
            self._disable(e, message)
            return
        e.health, taken_out = failed(e.health, now=now, cfg=self.health_cfg, retry_after_s=retry_after_s)
        if taken_out:
            e.phase = Phase.OUT
            self.counters[("endpoint", e.name, "taken_out")] += 1
            logger.warning("cloud endpoint %s out of rotation for %.2f s (%s%s)", e.name, e.health.out_until - now,
                           failure.value, f": {message}" if message else "")
        else:
            logger.debug("cloud endpoint %s: request failed (%s%s)", e.name, failure.value,
                         f": {message}" if message else "")

    def timed_out_sample(self, e: Endpoint, *, since: float, depth: int, now: float) -> None:
        e.model.update(depth, max(0.0, now - since), at=now)  # censored: the answer takes at least this long

    def _disable(self, e: Endpoint, message: str) -> None:
        if e.phase is not Phase.DISABLED:
            self.counters[("endpoint", e.name, "model_mismatch")] += 1
            logger.error("OFFLOAD REFUSED by endpoint %s: %s -- it runs a different model than this device; it is "
                         "out of rotation for good. Deploy the same model or pass --allow-model-mismatch.",
                         e.name, message or "model mismatch")
        e.phase, e.reason = Phase.DISABLED, message or "model mismatch"

    # -- waking and probing -------------------------------------------------------------
    def wake(self, wait_s: float) -> list[Wake]:
        """Wake the cold primaries (and the cold backups while no primary can serve)."""
        primaries_hopeful = any(e.phase in (Phase.READY, Phase.WAKING, Phase.COLD) for e in self.endpoints
                                if not e.spec.backup)
        out = []
        for e in self.endpoints:
            if e.phase is Phase.COLD and (not e.spec.backup or not primaries_hopeful):
                e.phase = Phase.WAKING
                self.counters[("endpoint", e.name, "wakes")] += 1
                out.append(Wake(e.index, wait_s))
        return out

    def probes_due(self, now: float) -> list[Wake]:
        """Endpoints whose time out is up get one GET /readyz."""
        out = []
        for e in self.endpoints:
            if e.phase is Phase.OUT and not e.health.out(now):
                e.phase = Phase.PROBING
                self.counters[("endpoint", e.name, "probes")] += 1
                out.append(Wake(e.index, 0.0))
        return out

    def next_timer(self) -> float | None:
        times = [e.health.out_until for e in self.endpoints if e.phase is Phase.OUT]
        return min(times) if times else None

    def woken(self, index: int, now: float, *, ok: bool, failure: Failure | None, message: str) -> None:
        e = self.endpoints[index]
        if failure is Failure.MISMATCH:
            self._disable(e, message)
            return
        if e.phase is Phase.PROBING:
            if ok:
                e.phase, e.health = Phase.READY, on_success(e.health)
                logger.warning("cloud endpoint %s answers again: back in rotation", e.name)
            else:
                e.phase = Phase.OUT
                e.health = probe_failed(now=now, cfg=self.health_cfg)
            return
        if e.phase is not Phase.WAKING:
            return
        e.phase = Phase.READY if ok else Phase.COLD
        if ok:
            logger.info("cloud endpoint %s is ready", e.name)
        else:
            self.counters[("endpoint", e.name, "wake_failures")] += 1
            self.counters["wake_failures"] += 1
            logger.warning("cloud endpoint %s did not become ready (%s); will wake it again when needed",
                           e.name, message or "timed out")

    # -- introspection --------------------------------------------------------------------
    def snapshot(self, now: float) -> list[EndpointSnapshot]:
        return [EndpointSnapshot(
            name=e.name, state=Phase.OUT.value if e.phase is Phase.READY and e.health.out(now) else e.phase.value,
            backup=e.spec.backup, weight=e.spec.weight, requests=e.requests, frames=e.frames, answered=e.answered,
            failures=e.failures, rtt_s=e.model.quantile(0, 0.5, now), reason=e.reason) for e in self.endpoints]
