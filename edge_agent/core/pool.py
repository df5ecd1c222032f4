"""The device's cloud side: a pool of endpoints, driven through the SDK's balancer, with answer-time estimates.

Part of the sans-I/O device core (no clock, thread or socket). Who is in rotation (cold,
waking, ready, out, probing, disabled), the health transitions (``max_fails`` within
``fail_timeout_s``, probes), the model rule's verdicts, the requests and frames each
endpoint has in flight and the weighted least-outstanding choice are the SDK pool's own
:class:`yolo_edge.remote.balancer.Balancer`, driven here with the core's event times. What is
the device's: each endpoint's :class:`~edge_agent.core.estimators.SojournModel` of its answer
times and its network time, the pool's model of how long a frame takes from joining the
device's cloud queue to its answer (which the policy plans with), the translation of the
core's events (wakes, probes, answers, failures) into the balancer's outcomes, and its
counters and log lines.

Choosing an endpoint for the next batch is the balancer's deadline-aware choice
(:meth:`~yolo_edge.remote.balancer.Balancer.pick`), fed the device's answer-time estimates:
among the endpoints in rotation with a free request slot whose answer time (its planning
quantile at its load) fits the batch's tightest deadline, those without a recent failure
first, then the fewest frames outstanding per unit of weight, ties to the one that
answers soonest; when none fits, the one that answers soonest. Backup endpoints serve only
while no primary is in rotation. A batch goes to one endpoint, up to its batch size. The
requests themselves are booked once, by the dispatcher (:mod:`edge_agent.core.dispatch`), which
feeds the balancer's in-flight counts (:meth:`CloudPool.sent`, :meth:`CloudPool.finished`).

>>> pool = CloudPool((EndpointSpec(name="a"), EndpointSpec(name="b", weight=2.0)), max_inflight=2, max_batch=1,
...                  health=HealthConfig(), cold=False)
>>> first = pool.pick(0.0); pool.sent(first, 1)
>>> second = pool.pick(0.0)
>>> first.name, second.name
('b', 'a')
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence

from yolo_edge.remote.balancer import Balancer, Change, HealthConfig, Member, MemberState, ModelRule, Note, check_share
from yolo_edge.errors import ConfigError

from .estimators import SojournModel, WindowedQuantile
from .events import Failure, Wake
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
    """An endpoint's state as the device shows it (the balancer's, with NEW told apart as cold or waking)."""

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


class Endpoint:
    """One endpoint: its member of the balancer (state, health, load, counts) and the device's estimates of it."""

    def __init__(self, member: Member, spec: EndpointSpec, *, model: SojournModel) -> None:
        self.member, self.spec = member, spec
        self.model = model  # send-to-answer time, by frames it already had in flight
        self.network = WindowedQuantile(32, horizon_s=30.0)  # the round trip less the endpoint's own time
        member.client = self

    index = property(lambda self: self.member.index)
    name = property(lambda self: self.member.name)
    max_inflight = property(lambda self: self.member.max_inflight)
    max_batch = property(lambda self: self.member.max_batch)
    requests = property(lambda self: self.member.outstanding, doc="requests in flight, not timed out")
    frames = property(lambda self: self.member.outstanding_frames, doc="frames in those requests")
    answered = property(lambda self: self.member.frames, doc="frames answered")
    failures = property(lambda self: self.member.failures)
    health = property(lambda self: self.member.health)

    @property
    def phase(self) -> Phase:
        state = self.member.state
        if state is MemberState.NEW:
            return Phase.WAKING if self.member.busy else Phase.COLD
        return Phase(state.value)

    def state(self, now: float) -> CloudState:
        phase = self.phase
        if phase is Phase.READY and self.health.out(now):
            return CloudState.FAILING
        return _POLICY_STATE[phase]


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
        self.counters = counters if counters is not None else Counter()
        members = [Member(i, s.name, weight=s.weight, backup=s.backup, max_inflight=s.max_inflight or max_inflight,
                          max_batch=s.max_batch or max_batch) for i, s in enumerate(specs)]
        # the model rule is applied where the answers are read (edge_agent.cloudcall): a refusal
        # comes back as a MISMATCH failure, and the balancer takes that endpoint out for good
        self.balancer = Balancer(members, model=ModelRule(), health=health, join_on_use=False)
        if not cold:  # known to be up (woken before the run)
            for m in members:
                m.state = MemberState.READY
        self.endpoints = [
            Endpoint(m, s, model=SojournModel(size=estimator_window, horizon_s=estimator_horizon_s,
                                              parallel=m.max_inflight * m.max_batch,
                                              forget_s=None if estimator_horizon_s is None else 10 * estimator_horizon_s))
            for m, s in zip(members, specs)
        ]
        # from joining the device's cloud queue to the answer, by cloud frames ahead: the policy's estimate
        capacity = sum(e.max_inflight * e.max_batch for e in self.endpoints) or 1
        self.model = SojournModel(size=estimator_window, horizon_s=estimator_horizon_s, parallel=capacity)

    def __len__(self) -> int:
        return len(self.endpoints)

    # -- what the policy sees ----------------------------------------------------------
    def view(self, now: float) -> tuple[CloudState, int]:
        """The pool as one cloud: its state, and how many frames it takes in flight at once."""
        serving = self.balancer.serving(now)
        if serving:
            return CloudState.READY, sum(m.max_inflight * m.max_batch for m in serving)
        if not self.endpoints:
            return CloudState.NONE, 1
        states = {e.state(now) for e in self.endpoints}
        return next(s for s in _HOPE if s in states), 1

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.endpoints)

    # -- choosing -----------------------------------------------------------------------
    def pick(self, now: float, deadline: float = float("inf"), quantile: float = 0.9, upload_s: float = 0.0,
             held_since: Callable[[Endpoint], float | None] = lambda e: None) -> Endpoint | None:
        """Where the next batch (due by ``deadline``) goes, or None while every serving endpoint is full.

        ``upload_s`` is the batch's time to leave the device: every endpoint sits behind the
        same uplink, so it moves every endpoint's answer time alike. ``held_since(e)``: since
        when ``e`` has had its oldest request in flight (the dispatcher's books).
        """
        def eta(q: float) -> Callable[[Member], float]:
            return lambda m: upload_s + self.post_upload(m.client, q, now, held_since=held_since(m.client))

        member = self.balancer.pick(now, eta=eta(quantile), deadline=deadline, typical=eta(0.5))
        return None if member is None else member.client

    def post_upload(self, e: Endpoint, q: float, now: float, *, held_since: float | None = None) -> float:
        """How long ``e`` takes from having a request (its upload done) to the answer, at its load.

        With ``held_since`` (since when ``e`` has had its oldest request in flight), a request
        already out longer than the samples say counts too: an endpoint that just slowed down
        holds its requests before any answer can tell.
        """
        value = e.model.quantile(e.frames, q, now)
        held = now - held_since if held_since is not None else 0.0
        return max(0.0 if value is None else value, held)  # never measured: worth finding out

    def sent(self, e: Endpoint, n: int) -> None:
        """A request of ``n`` frames goes to ``e`` (the dispatcher books it)."""
        self.balancer.sent(e.member, frames=n)
        self.counters[("endpoint", e.name, "requests")] += 1

    def finished(self, e: Endpoint, n: int) -> None:
        """A request of ``n`` frames is over (answered, failed or timed out): its slot is free."""
        self.balancer.done(e.member, frames=n)

    # -- outcomes -----------------------------------------------------------------------
    def answered(self, e: Endpoint, *, n: int, since: float, depth: int, now: float,
                 network_s: float | None = None, sample: bool = True) -> None:
        """A request answered ``now``; the endpoint had it from ``since`` with ``depth`` frames ahead."""
        if sample:
            e.model.update(depth, now - since, at=now)
        if network_s is not None and network_s >= 0:
            e.network.update(network_s, at=now)
        self.counters[("endpoint", e.name, "frames_answered")] += n
        self.balancer.answered(e.member, (), alive=True, frames=n)

    def failed(self, e: Endpoint, now: float, failure: Failure, *, retry_after_s: float | None = None,
               message: str = "") -> None:
        self.counters[("endpoint", e.name, f"failure_{failure.value}")] += 1
        if failure is Failure.MISMATCH:
            self.balancer.disable(e.member, message or "model mismatch", failure=True)
        else:
            self.balancer.failed(e.member, failure.value + (f": {message}" if message else ""), now=now,
                                 retry_after_s=retry_after_s)
        self._notes()

    def timed_out_sample(self, e: Endpoint, *, since: float, depth: int, now: float) -> None:
        e.model.update(depth, max(0.0, now - since), at=now)  # censored: the answer takes at least this long

    def _notes(self) -> None:
        """What the balancer says happened to the endpoints: counted and logged."""
        for note in self.balancer.take_notes():
            _log(note, self.counters)

    # -- waking and probing -------------------------------------------------------------
    def wake(self, wait_s: float) -> list[Wake]:
        """Wake the cold primaries (and the cold backups while no primary can serve)."""
        out = []
        for m in self.balancer.wake():
            self.counters[("endpoint", m.name, "wakes")] += 1
            out.append(Wake(m.index, wait_s))
        return out

    def probes_due(self, now: float) -> list[Wake]:
        """Endpoints whose time out is up get one GET /readyz."""
        out = []
        for m in self.balancer.probes_due(now):
            self.counters[("endpoint", m.name, "probes")] += 1
            out.append(Wake(m.index, 0.0))
        return out

    def next_timer(self) -> float | None:
        return self.balancer.next_probe()

    def woken(self, index: int, now: float, *, ok: bool, failure: Failure | None, message: str) -> None:
        e = self.endpoints[index]
        phase = e.phase
        if failure is Failure.MISMATCH:
            self.balancer.disable(e.member, message or "model mismatch")
        elif phase is Phase.PROBING and not ok:
            self.balancer.not_ready(e.member, now=now)
        elif phase in (Phase.PROBING, Phase.WAKING) and ok:
            self.balancer.ready(e.member)
            if phase is Phase.WAKING:
                logger.info("cloud endpoint %s is ready", e.name)
        elif phase is Phase.WAKING:
            self.balancer.unclaim(e.member)  # cold again
            self.counters[("endpoint", e.name, "wake_failures")] += 1
            self.counters["wake_failures"] += 1
            logger.warning("cloud endpoint %s did not become ready (%s); will wake it again when needed",
                           e.name, message or "timed out")
        else:
            self.balancer.unclaim(e.member)  # taken out while probed: its probe's verdict is stale
        self._notes()

    # -- introspection --------------------------------------------------------------------
    def snapshot(self, now: float) -> list[EndpointSnapshot]:
        return [EndpointSnapshot(
            name=e.name, state=Phase.OUT.value if e.phase is Phase.READY and e.health.out(now) else e.phase.value,
            backup=e.spec.backup, weight=e.spec.weight, requests=e.requests, frames=e.frames, answered=e.answered,
            failures=e.failures, rtt_s=e.model.quantile(0, 0.5, now),
            reason=e.member.reason if e.phase is Phase.DISABLED else None) for e in self.endpoints]


def _log(note: Note, counters: Counter) -> None:
    """A change the balancer noted, in the device's counters and log."""
    name = note.member.name
    if note.change is Change.OUT:
        counters[("endpoint", name, "taken_out")] += 1
        logger.warning("cloud endpoint %s out of rotation for %.2f s (%s)", name, note.out_for_s, note.why)
    elif note.change is Change.FAILED:
        logger.debug("cloud endpoint %s: request failed (%s)", name, note.why)
    elif note.change is Change.BACK:
        logger.warning("cloud endpoint %s answers again: back in rotation", name)
    elif note.change is Change.DISABLED:
        counters[("endpoint", name, "model_mismatch")] += 1
        logger.error("OFFLOAD REFUSED by endpoint %s: %s -- it runs a different model than this device; it is "
                     "out of rotation for good. Deploy the same model or pass --allow-model-mismatch.", name, note.why)
