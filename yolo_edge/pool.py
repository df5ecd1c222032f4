"""Several detection endpoints used as one: :class:`EndpointPool`.

A pool takes yolo-edge services (``http(s)://``) and Open Inference Protocol models
(``oip+http(s)://.../v2/models/NAME``), as URLs, as ``{"url", "weight", "backup"}`` tables
(:class:`PoolMember`) or as clients already built, and is itself an
:class:`~yolo_edge.endpoint.Endpoint`: ``pool.detect(image)`` answers like one client.
It is safe to share between threads; it starts no thread of its own.

- **Choice**: each request goes to the member in rotation with the fewest requests in
  flight per unit of ``weight``, ties taken in weighted turns (nginx's ``least_conn``).
  Backup members serve only a request that no primary in rotation is left for.
- **Health** (:mod:`yolo_edge.balancer`, the edge agent's very rules): after ``max_fails``
  failures within ``fail_timeout_s`` a member is out for ``fail_timeout_s`` (or its
  ``Retry-After``, if longer); the first call that finds its time up probes it with
  ``ready()`` (``/readyz``) and checks its model before it rejoins.
- **Failover**: a request that fails because of the member (unreachable, 5xx, timed out)
  goes to another member in rotation, each member at most once per call, so a dead member
  costs a caller latency, not an error. Errors of the request itself (4xx) are raised at once.
- **One model, fixed, never voted**: the pool's model is ``expected_sha256=``; else, when
  ``model=`` names one, that model's sha256 (a registry name's pin, a registered export's,
  an ``.onnx`` file's own); else the model of the first member listed, whatever the
  weights: until that member's answer names it, no other member is sent anything. Every
  member's model sha256 is checked when it joins (``verify_model``) and on every answer;
  a member that serves another model is out of the pool for good (state ``disabled``,
  its reason in :meth:`EndpointPool.members`), with an ERROR naming it, and its answers
  are never returned, however heavy its weight and however fast it answers.

Constructing a pool does no network I/O:

>>> pool = EndpointPool(["http://127.0.0.1:3000",
...                      {"url": "http://127.0.0.1:3001", "weight": 2},
...                      {"url": "http://127.0.0.1:3002", "backup": True}])
>>> for m in pool.members():
...     print(m.name, m.state.value, m.weight, "backup" if m.backup else "primary")
http://127.0.0.1:3000 new 1.0 primary
http://127.0.0.1:3001 new 2.0 primary
http://127.0.0.1:3002 new 1.0 backup
>>> dets = pool.detect("bus.jpg", conf=0.3)                  # doctest: +SKIP
>>> pool.close()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from enum import Enum
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .endpoint import Endpoint, client_options, frame_deadlines, image_list, open_endpoint, poll_ready
from .errors import CloudError, CloudModelMismatchError, CloudUnavailableError, ConfigError
from .balancer import HealthConfig, ModelRule, failed, on_success, probe_failed
from .pool_members import Kind, Member, MemberState, MemberStatus, PoolMember, choose, member_fault
from .wire import LIMITS, FrameResult, FrameStatus, ModelRef, short_repr

__all__ = ["EndpointPool", "PoolMember", "MemberState", "MemberStatus"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Joined(Enum):
    """How a member's check (``verify_model``) ended."""

    READY = "ready"  # it serves the pool's model: in rotation
    UNKNOWN = "unknown"  # it cannot name its model, and the pool has none yet: its first answer will
    FAILED = "failed"  # unreachable or failing: counted against its health
    DISABLED = "disabled"  # another model: out for good


class EndpointPool:
    """Detection over several endpoints with failover; an :class:`~yolo_edge.endpoint.Endpoint` itself.

    ``members``: URLs, :class:`PoolMember` tables or clients (see the module docstring).
    Members given as URLs are opened with :func:`~yolo_edge.endpoint.open_endpoint` with
    ``token``, ``model`` (the local model an OIP member serves), ``expected_sha256`` and
    ``client_options`` (the clients' keyword options; ``max_retries`` defaults to 0 there,
    since the pool's failover is the retry), and closed by :meth:`close`; clients given
    built are the caller's to close.

    The model every member must serve is ``expected_sha256``; else ``model``'s sha256
    when ``model`` is given; else the first member's (see the module docstring).
    ``health`` sets ``max_fails`` and ``fail_timeout_s``; ``clock`` (seconds, monotonic)
    times them and per-frame budgets; ``sleep`` waits between :meth:`wake`'s probes.
    """

    def __init__(
        self,
        members: Sequence[str | PoolMember | Mapping[str, Any] | Endpoint],
        *,
        expected_sha256: str | None = None,
        model: Any = None,
        token: str | None = None,
        health: HealthConfig = HealthConfig(),
        client_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from .detector import check_sha256

        if isinstance(members, (str, bytes, Mapping)) or not isinstance(members, Sequence) or not members:
            raise ConfigError(f"EndpointPool takes a non-empty list of endpoints (URLs, tables or clients), "
                              f"got {short_repr(members)}")
        if not isinstance(health, HealthConfig):
            raise ConfigError(f"health must be a HealthConfig(max_fails=..., fail_timeout_s=...), "
                              f"got {short_repr(health)}")
        if not callable(clock) or not callable(sleep):
            raise ConfigError("clock and sleep must be functions (like time.monotonic and time.sleep)")
        specs = [PoolMember.parse(m) for m in members]
        self._model = ModelRule(check_sha256(expected_sha256))  # the pool's model: fixed, never voted
        if self._model.sha256 is None and model is not None:
            name, sha = _model_identity(model)
            self._model = ModelRule(sha, name)
        self._health = health
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._members: list[Member] = []
        try:
            for i, spec in enumerate(specs):
                if isinstance(spec.url, str):
                    client = open_endpoint(spec.url, **_client_kwargs(spec.url, model, token, self._sha256,
                                                                      client_options))
                    self._members.append(Member(i, spec, client, owned=True))
                else:
                    self._members.append(Member(i, spec, spec.url, owned=False))
        except BaseException:
            self.close()
            raise
        names = [m.name for m in self._members]
        if len(set(names)) != len(names):
            self.close()
            raise ConfigError(f"pool members must differ (give one a weight instead of listing it twice), got {names}")
        self.endpoint = "pool(" + ", ".join(names) + ")"
        if self._sha256 is None:
            logger.info("pool model: the one %s serves (the first endpoint listed), once it answers", names[0])
        else:
            logger.info("pool model: sha256 %s... (%s)", self._sha256[:12],
                        "expected_sha256=" if expected_sha256 else f"model={self._model_name!r}")

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the clients the pool opened (not those given to it built). Idempotent."""
        for m in self._members:
            if m.owned:
                m.client.close()

    def __enter__(self) -> "EndpointPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EndpointPool({[m.name for m in self._members]!r})"

    # -- status ------------------------------------------------------------------------
    @property
    def _sha256(self) -> str | None:
        return self._model.sha256

    @property
    def _model_name(self) -> str:
        return self._model.name

    @property
    def expected_sha256(self) -> str | None:
        """The model every member must serve: the one given (or ``model``'s), or the first member's once known."""
        return self._sha256

    def members(self) -> list[MemberStatus]:
        """Each member's state, load and counts, in the order given."""
        with self._cond:
            now = self._clock()
            return [m.status(now) for m in self._members]

    # -- health ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether a member (primaries first) answers its readiness probe; never raises."""
        return any(m.client.ready() for m in self._usable())

    def wake(self, wait_s: float = 0) -> bool:
        """Probe every primary (waking scaled-to-zero ones), the backups if none is ready; poll up to ``wait_s``."""
        def ping() -> bool:
            usable = self._usable()
            if any([m.client.ready() for m in usable if not m.spec.backup]):  # a list: every primary gets its probe
                return True
            return any([m.client.ready() for m in usable if m.spec.backup])

        return poll_ready(ping, wait_s, self._sleep)

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check every member in rotation now; return ``{"name", "sha256", "members": {name: state}}``.

        Members serving another model are taken out for good (ERROR). Without a model
        given, the first member is checked first: its model is the pool's. Raises
        :class:`CloudModelMismatchError` when the pool already holds to another model or no
        member serves this one, :class:`CloudUnavailableError` when none could be checked
        (or, with no model given yet, the first member could not be).
        """
        from .detector import check_sha256

        expected = check_sha256(expected_sha256)
        with self._cond:
            if expected and self._sha256 and expected != self._sha256:
                raise CloudModelMismatchError(f"the pool serves model {self._sha256[:12]}..., not {expected[:12]}...")
            if expected:
                self._model = ModelRule(expected, self._model_name)
        if self._sha256 is None:
            first = self._members[0]
            if self._claim_first() and self._join(first) is _Joined.UNKNOWN:
                self._unclaim(first)
                raise ConfigError(f"verify_model needs the expected sha256: the pool's model is the first endpoint's, "
                                  f"and {first.name} does not say which model it serves; pass it, or create the "
                                  "pool with expected_sha256=Detector().info.sha256")
            if self._sha256 is None:
                raise self._exhausted([], None)
        for m in self._usable():
            if m.state in (MemberState.NEW, MemberState.READY) and self._claim(m):
                self._join(m)
        states = {s.name: s.state.value for s in self.members()}
        if MemberState.READY.value not in states.values():
            raise self._exhausted([], None)
        return {"name": self._model_name, "sha256": self._sha256, "members": states}

    # -- detection ---------------------------------------------------------------------
    def detect(self, image: Any, *, conf: float | None = None, iou: float | None = None,
               classes: Sequence[int] | None = None, max_det: int | None = None, channels: str = "bgr") -> Any:
        """Detect in one image on a member; see :meth:`detect_many`."""
        return self.detect_many([image], conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)[0]

    def detect_many(
        self,
        images: Sequence[Any],
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
        return_meta: bool = False,
    ) -> Any:
        """Detections for ``images``, one member per request of up to ``LIMITS.max_images``.

        With ``return_meta=True``: ``(detections, metas)``, each meta the member's
        (``{"model", "timing"}``) plus ``"endpoint"``, the member that answered.
        """
        images = image_list(images, "detect_many")
        if not isinstance(return_meta, bool):
            raise ConfigError(f"return_meta must be True or False, got {short_repr(return_meta)}")
        opts = dict(conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)
        dets: list[Any] = []
        metas: list[dict[str, Any]] = []
        for chunk in _chunks(list(range(len(images)))):
            (got, got_metas), member = self._call(
                lambda client: client.detect_many([images[i] for i in chunk], return_meta=True, **opts),
                models=lambda answer: [str(meta["model"]["sha256"]) for meta in answer[1]],
                alive=lambda answer: True)
            dets.extend(got)
            metas.extend({**meta, "endpoint": member.name} for meta in got_metas)
        return (dets, metas) if return_meta else dets

    def detect_frames(
        self,
        images: Sequence[Any],
        *,
        budgets_s: Sequence[float | None] | float | None = None,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        max_det: int | None = None,
        channels: str = "bgr",
    ) -> list[FrameResult]:
        """One :class:`~yolo_edge.wire.FrameResult` per image, in order (see :meth:`Endpoint.detect_frames`).

        Budgets are counted from this call: a request that fails over carries what is left
        of them, and a frame whose budget is spent before a member takes it is answered
        EXPIRED here, unsent.
        """
        images = image_list(images, "detect_frames")
        deadlines = frame_deadlines(budgets_s, len(images), self._clock())
        opts = dict(conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)
        results: list[FrameResult | None] = [None] * len(images)

        def unexpired(chunk: list[int]) -> list[int]:
            """The frames of ``chunk`` with budget left; the others are answered EXPIRED here."""
            now = self._clock()
            for i in chunk:
                late = None if deadlines is None else deadlines[i]
                if results[i] is None and late is not None and late <= now:
                    results[i] = self._expired_here(now - late)
            return [i for i in chunk if results[i] is None]

        def send(client: Endpoint, chunk: list[int]) -> tuple[list[int], list[FrameResult]]:
            left = unexpired(chunk)  # again at each try: failing over takes time
            if not left:
                return left, []
            now = self._clock()
            budgets_left = None if deadlines is None else [
                None if deadlines[i] is None else deadlines[i] - now for i in left]  # type: ignore[operator]
            return left, client.detect_frames([images[i] for i in left], budgets_s=budgets_left, **opts)

        for chunk in _chunks(list(range(len(images)))):
            if not unexpired(chunk):
                continue
            (left, answers), _ = self._call(
                lambda client: send(client, chunk),
                models=lambda answer: [r.model.sha256 for r in answer[1] if r.ok],
                alive=lambda answer: any(r.status is not FrameStatus.EXPIRED for r in answer[1]))
            for i, result in zip(left, answers):  # only now: an answer from another model is never kept
                results[i] = result
        return [r for r in results if r is not None]

    # -- one request, with failover ----------------------------------------------------
    def _call(self, work: Callable[[Endpoint], T], *, models: Callable[[T], list[str]],
              alive: Callable[[T], bool]) -> tuple[T, Member]:
        """``work(client)`` on members in turn until one answers with the pool's model."""
        tried: set[int] = set()
        failures: list[str] = []
        last: CloudError | None = None
        while True:
            member = self._acquire(tried, failures)
            if member is None:
                raise self._exhausted(failures, last)
            tried.add(member.index)
            try:
                answer = work(member.client)
            except CloudModelMismatchError as exc:
                self._release(member)
                self._disable(member, str(exc))
                failures.append(f"{member.name}: another model")
                last = exc
                continue
            except CloudError as exc:
                self._release(member)
                if not member_fault(exc):
                    raise
                self._failed(member, exc)
                failures.append(f"{member.name}: {exc}")
                last = exc
                continue
            except BaseException:
                self._release(member)
                raise
            accepted = self._answered(member, models(answer), alive(answer))
            self._release(member)
            if accepted:
                return answer, member
            failures.append(f"{member.name}: answered from another model")
            last = CloudModelMismatchError(f"{member.name} answered from another model")

    def _acquire(self, tried: set[int], failures: list[str]) -> Member | None:
        """The member for the next try (its request counted), checking members on the way; None: no one left.

        Members whose check fails on the way are ``tried`` and their failure noted in ``failures``.
        """
        while True:
            with self._cond:
                kind, member = choose(self._members, tried, self._clock(), one_at_a_time=self._sha256 is None)
                while kind is Kind.WAIT:
                    self._cond.wait(0.5)
                    kind, member = choose(self._members, tried, self._clock(), one_at_a_time=self._sha256 is None)
                if member is None:
                    return None
                if kind is Kind.SEND:
                    member.outstanding += 1
                    member.requests += 1
                    return member
                member.busy = True
                if kind is Kind.PROBE:
                    member.state = MemberState.PROBING
            if kind is Kind.PROBE:
                self._probe(member)
                continue
            joined = self._join(member)
            if joined is _Joined.UNKNOWN:  # its first answer names the pool's model: it stays claimed till then
                with self._cond:
                    member.founding = True
                    member.outstanding += 1
                    member.requests += 1
                return member
            if joined is _Joined.READY:
                with self._cond:
                    if member.state is MemberState.READY:
                        member.outstanding += 1
                        member.requests += 1
                        return member
            tried.add(member.index)
            failures.append(f"{member.name}: {member.reason}")

    def _release(self, member: Member) -> None:
        with self._cond:
            member.outstanding -= 1
            if member.founding:
                member.busy = member.founding = False
            self._cond.notify_all()

    # -- members joining, failing, coming back -------------------------------------------
    def _claim_first(self) -> bool:
        """Claim the first member to learn the pool's model, once no call is checking one; False: not usable."""
        first = self._members[0]
        with self._cond:
            while self._sha256 is None and self._checking():
                self._cond.wait(0.5)
            if self._sha256 is not None or first.state not in (MemberState.NEW, MemberState.READY):
                return False
            first.busy = True
            return True

    def _claim(self, member: Member) -> bool:
        with self._cond:
            if member.busy or (self._sha256 is None and self._checking()):
                return False
            member.busy = True
            return True

    def _join(self, member: Member) -> "_Joined":
        """Check a claimed member's model (``verify_model``); it is in rotation only if it serves the pool's.

        The claim ends here, except when the member cannot name its model and the pool has
        none yet (UNKNOWN): then the caller holds it.
        """
        expected = self._sha256
        try:
            info = member.client.verify_model(expected)
        except ConfigError:
            if expected is None:
                return _Joined.UNKNOWN  # a client with no model to hold it to: its first answer will say
            self._abandon(member)
            raise
        except CloudModelMismatchError as exc:
            self._disable(member, str(exc))
            return _Joined.DISABLED
        except CloudError as exc:
            self._failed(member, exc, checking=True)
            return _Joined.FAILED
        except BaseException:
            self._abandon(member)
            raise
        sha = str(info.get("sha256") or "").lower()
        problem = self._holds(member, sha, str(info.get("name") or "?"))
        if problem:
            self._disable(member, problem)
            return _Joined.DISABLED
        with self._cond:
            back = member.state is MemberState.PROBING
            member.state, member.health, member.sha256 = MemberState.READY, on_success(member.health), sha
            self._unclaim(member)
        if back:
            logger.warning("endpoint %s answers again: back in rotation", member.name)
        return _Joined.READY

    def _probe(self, member: Member) -> None:
        """A member whose time out is up: ``ready()``, then its model, before it rejoins."""
        try:
            ready = member.client.ready()
        except BaseException:  # a client breaking its promise never to raise
            self._abandon(member)
            raise
        if ready:
            if self._join(member) is _Joined.UNKNOWN:  # the pool has no model yet: back to its first use
                with self._cond:
                    member.state, member.health = MemberState.NEW, on_success(member.health)
                    self._unclaim(member)
            return
        with self._cond:
            member.state = MemberState.OUT
            member.health = probe_failed(now=self._clock(), cfg=self._health)
            self._unclaim(member)
        logger.debug("endpoint %s is still not ready", member.name)

    def _abandon(self, member: Member) -> None:
        """End a claim that an unexpected error cut short; a member being probed is out again."""
        with self._cond:
            if member.state is MemberState.PROBING:
                member.state = MemberState.OUT
                member.health = probe_failed(now=self._clock(), cfg=self._health)
            self._unclaim(member)

    def _checking(self) -> bool:
        return any(m.busy for m in self._members if m.state is not MemberState.DISABLED)

    def _unclaim(self, member: Member) -> None:
        with self._cond:  # reentrant: callers may hold it
            member.busy = member.founding = False
            self._cond.notify_all()

    def _holds(self, member: Member, sha: str, name: str) -> str | None:
        """None when ``sha`` is the pool's model (the first member's names it, if none was given), else what is wrong."""
        with self._cond:
            founding = self._model.sha256 is None
            problem = self._model.judge(sha, name, first=member is self._members[0])
        if founding and problem is None:
            logger.info("pool model: %s (sha256 %s...), as served by %s", name, sha[:12], member.name)
        return problem

    def _answered(self, member: Member, shas: list[str], alive: bool) -> bool:
        """Account an answer; False (and the member disabled) when it came from another model."""
        for sha in shas:
            problem = self._holds(member, sha.lower(), "?")
            if problem:
                self._disable(member, "it answered from another model: " + problem)
                return False
        with self._cond:
            if shas:
                member.frames += len(shas)
                member.sha256 = shas[0].lower()
                if member.state is MemberState.NEW:
                    member.state = MemberState.READY
            if alive and (member.health.fails or member.health.out_until > -math.inf):
                member.health = on_success(member.health)
        return True

    def _failed(self, member: Member, exc: CloudError, *, checking: bool = False) -> None:
        """A request to ``member`` (or, ``checking``, its check: the claim ends here) failed through its fault."""
        retry_after = exc.retry_after_s if isinstance(exc, CloudUnavailableError) else None
        with self._cond:
            now = self._clock()
            member.failures += 1
            member.reason = str(exc)
            if checking and member.state is MemberState.PROBING:  # probed ready, but its check failed: out again
                member.health = probe_failed(now=now, cfg=self._health, retry_after_s=retry_after)
                member.state = MemberState.OUT
                taken_out = True
            else:
                member.health, took_out = failed(member.health, now=now, cfg=self._health, retry_after_s=retry_after)
                taken_out = took_out and member.state in (MemberState.NEW, MemberState.READY)
                if taken_out:
                    member.state = MemberState.OUT
            if checking:
                self._unclaim(member)
            out_for = member.health.out_until - now
        if taken_out:
            logger.warning("endpoint %s out of rotation for %.2f s: %s", member.name, out_for, exc)
        else:
            logger.debug("endpoint %s failed%s: %s", member.name, " its check" if checking else "", exc)

    def _disable(self, member: Member, why: str) -> None:
        with self._cond:
            member.busy = False
            self._cond.notify_all()
            if member.state is MemberState.DISABLED:
                return
            member.state, member.reason = MemberState.DISABLED, why
        logger.error("endpoint %s is out of the pool for good: %s. Results of different models are never mixed: "
                     "deploy the same model there, or leave it out of the pool.", member.name, why)

    # -- helpers -----------------------------------------------------------------------
    def _usable(self) -> list[Member]:
        with self._cond:
            usable = [m for m in self._members if m.state is not MemberState.DISABLED]
        return [m for m in usable if not m.spec.backup] + [m for m in usable if m.spec.backup]

    def _expired_here(self, late_s: float) -> FrameResult:
        return FrameResult(status=FrameStatus.EXPIRED, model=ModelRef(self._model_name, self._sha256 or ""),
                           error=f"its budget ran out {late_s * 1e3:.1f} ms before a pool member took it: not sent")

    def _exhausted(self, failures: list[str], last: CloudError | None) -> CloudError:
        """The error of a call no member could answer."""
        with self._cond:
            now = self._clock()
            states = [m.status(now) for m in self._members]
        if all(s.state is MemberState.DISABLED for s in states):
            error: CloudError = CloudModelMismatchError(
                f"no endpoint of the pool serves model {(self._sha256 or '?')[:12]}...: "
                + "; ".join(f"{s.name} {s.reason}" for s in states))
        else:
            out = [s for s in states if s.state is MemberState.OUT]
            retry = min((s.out_for_s for s in out), default=None)
            described = failures or [_describe(s) for s in states]
            first_only = "" if self._sha256 else (
                f". The pool's model is the one its first endpoint ({states[0].name}) serves, and that endpoint has "
                "not answered yet, so no other endpoint is used (it could serve another model): pass "
                "expected_sha256= (e.g. Detector().info.sha256) or model= to let the others serve")
            error = CloudUnavailableError("no endpoint of the pool could answer: " + "; ".join(described) + first_only,
                                          retry_after_s=retry or None)
        # each member's failure is in the message: the last one's traceback would add nothing
        error.original = last
        error.__suppress_context__ = True
        return error


def _model_identity(model: Any) -> tuple[str, str]:
    """``(name, sha256)`` of the model named by ``model``: a registry name's pin (no file needed), else the file's."""
    from .models.registry import MODELS
    from .models.resolve import ResolvedModel, resolve_model

    if isinstance(model, ResolvedModel):
        return model.name, model.sha256
    if isinstance(model, str) and model in MODELS:
        return model, MODELS[model].onnx_sha256
    try:
        resolved = resolve_model(model)
    except TypeError:
        raise ConfigError(f"model must be a model name like 'yolov3-tiny-coco' or a path to an .onnx file, "
                          f"got {short_repr(model)}") from None
    return resolved.name, resolved.sha256


def _client_kwargs(url: str, model: Any, token: str | None, sha256: str | None,
                   options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    allowed = client_options(url) - {"token", "expected_sha256"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"client option(s) {unknown} do not apply to {url}: expected some of {sorted(allowed)}"
                          + ("; token and expected_sha256 are the pool's own arguments"
                             if {"token", "expected_sha256"} & set(unknown) else ""))
    return {"max_retries": 0, **options, "model": model, "token": token, "expected_sha256": sha256}


def _describe(status: MemberStatus) -> str:
    text = f"{status.name} {status.state.value}"
    if status.out_for_s:
        text += f" for {status.out_for_s:.2f} s more"
    return text + (f" ({status.reason})" if status.reason else "")


def _chunks(indices: list[int]) -> list[list[int]]:
    size = LIMITS.max_images
    return [indices[i:i + size] for i in range(0, len(indices), size)]
