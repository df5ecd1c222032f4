"""Several detection endpoints used as one: :class:`EndpointPool`.

A pool takes yolo-edge services (``http(s)://``) and Open Inference Protocol models
(``oip+http(s)://.../v2/models/NAME``), as URLs, as ``{"url", "weight", "backup"}`` tables
(:class:`PoolMember`) or as clients already built, and is itself an
:class:`~yolo_edge.remote.endpoint.Endpoint`: ``pool.detect(image)`` answers like one client.
It is safe to share between threads; it starts no thread of its own. Every decision below
is the sans-I/O :class:`~yolo_edge.remote.balancer.Balancer`'s; :class:`~yolo_edge.remote.failover.Failover`
drives it with the pool's clock, under its lock, and does the I/O (checks, probes, requests).

- **Choice**: each request goes to the member in rotation with the fewest requests in
  flight per unit of ``weight``, ties taken in weighted turns (nginx's ``least_conn``).
  Backup members serve only a request that no primary in rotation is left for.
- **Health** (:mod:`yolo_edge.remote.balancer`, the edge agent's very rules): after ``max_fails``
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
import time
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError
from .balancer import Balancer, HealthConfig, Member, MemberState, MemberStatus, ModelRule
from .endpoint import Endpoint, client_options, frame_deadlines, image_list, open_endpoint, poll_ready
from .endpoint_url import safe_name
from .failover import Failover
from .pool_members import PoolMember
from .transport import RemoteClient
from .values import check_flag
from .wire import LIMITS, FrameResult, FrameStatus, ModelRef, short_repr, unexpired

__all__ = ["EndpointPool", "PoolMember", "MemberState", "MemberStatus"]

logger = logging.getLogger(__name__)


class EndpointPool(RemoteClient):
    """Detection over several endpoints with failover; an :class:`~yolo_edge.remote.endpoint.Endpoint` itself.

    ``members``: URLs, :class:`PoolMember` tables or clients (see the module docstring).
    Members given as URLs are opened with :func:`~yolo_edge.remote.endpoint.open_endpoint` with
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
        from ..detector import check_sha256

        if isinstance(members, (str, bytes, Mapping)) or not isinstance(members, Sequence) or not members:
            raise ConfigError(f"EndpointPool takes a non-empty list of endpoints (URLs, tables or clients), "
                              f"got {short_repr(members)}")
        if not isinstance(health, HealthConfig):
            raise ConfigError(f"health must be a HealthConfig(max_fails=..., fail_timeout_s=...), "
                              f"got {short_repr(health)}")
        if not callable(clock) or not callable(sleep):
            raise ConfigError("clock and sleep must be functions (like time.monotonic and time.sleep)")
        specs = [PoolMember.parse(m) for m in members]
        rule = ModelRule(check_sha256(expected_sha256))  # the pool's model: fixed, never voted
        if rule.sha256 is None and model is not None:
            name, sha = _model_identity(model)
            rule = ModelRule(sha, name)
        self._clock = clock
        self._sleep = sleep
        self._owned: list[Endpoint] = []  # the clients the pool opened: closed by close()
        built: list[Member] = []
        try:
            for i, spec in enumerate(specs):
                client = spec.url
                if isinstance(client, str):
                    client = open_endpoint(client, **_client_kwargs(client, model, token, rule.sha256, client_options))
                    self._owned.append(client)
                built.append(Member(i, safe_name(client.endpoint), weight=spec.weight, backup=spec.backup,
                                    client=client))
        except BaseException:
            self.close()
            raise
        names = [m.name for m in built]
        if len(set(names)) != len(names):
            self.close()
            raise ConfigError(f"pool members must differ (give one a weight instead of listing it twice), got {names}")
        self._failover = Failover(Balancer(built, model=rule, health=health), clock=clock, logger=logger)
        self.endpoint = "pool(" + ", ".join(names) + ")"
        if self._sha256 is None:
            logger.info("pool model: the one %s serves (the first endpoint listed), once it answers", names[0])
        else:
            logger.info("pool model: sha256 %s... (%s)", self._sha256[:12],
                        "expected_sha256=" if expected_sha256 else f"model={self._model_name!r}")

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the clients the pool opened (not those given to it built). Idempotent."""
        for client in self._owned:
            client.close()

    def __repr__(self) -> str:
        return f"EndpointPool({[m.name for m in self._members]!r})"

    # -- status ------------------------------------------------------------------------
    @property
    def _members(self) -> list[Member]:
        return self._failover.balancer.members

    @property
    def _sha256(self) -> str | None:
        return self._failover.balancer.model.sha256

    @property
    def _model_name(self) -> str:
        return self._failover.balancer.model.name

    @property
    def expected_sha256(self) -> str | None:
        """The model every member must serve: the one given (or ``model``'s), or the first member's once known."""
        return self._sha256

    def members(self) -> list[MemberStatus]:
        """Each member's state, load and counts, in the order given."""
        return self._failover.status()

    # -- health ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether a member (primaries first) answers its readiness probe; never raises."""
        return any(m.client.ready() for m in self._failover.usable())

    def wake(self, wait_s: float = 0) -> bool:
        """Probe every primary (waking scaled-to-zero ones), the backups if none is ready; poll up to ``wait_s``."""
        def ping() -> bool:
            usable = self._failover.usable()
            if any([m.client.ready() for m in usable if not m.backup]):  # a list: every primary gets its probe
                return True
            return any([m.client.ready() for m in usable if m.backup])

        return poll_ready(ping, wait_s, self._sleep)

    def verify_model(self, expected_sha256: str | None = None) -> dict[str, Any]:
        """Check every member in rotation now; return ``{"name", "sha256", "members": {name: state}}``.

        Members serving another model are taken out for good (ERROR). Without a model
        given, the first member is checked first: its model is the pool's. Raises
        :class:`CloudModelMismatchError` when the pool already holds to another model or no
        member serves this one, :class:`CloudUnavailableError` when none could be checked
        (or, with no model given yet, the first member could not be).
        """
        from ..detector import check_sha256

        expected = check_sha256(expected_sha256)
        if expected:
            with self._failover.lock:
                self._failover.balancer.expect(expected)
        states = self._failover.verify()
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
        check_flag(return_meta, "return_meta")
        opts = dict(conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)
        dets: list[Any] = []
        metas: list[dict[str, Any]] = []
        for chunk in _chunks(list(range(len(images)))):
            (got, got_metas), member = self._failover.call(
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
        """One :class:`~yolo_edge.remote.wire.FrameResult` per image, in order (see :meth:`Endpoint.detect_frames`).

        Budgets are counted from this call: a request that fails over carries what is left
        of them, and a frame whose budget is spent before a member takes it is answered
        EXPIRED here, unsent.
        """
        images = image_list(images, "detect_frames")
        deadlines = frame_deadlines(budgets_s, len(images), self._clock())
        opts = dict(conf=conf, iou=iou, classes=classes, max_det=max_det, channels=channels)
        results: list[FrameResult | None] = [None] * len(images)

        def with_budget(chunk: list[int]) -> list[int]:  # the others are answered EXPIRED here
            return unexpired(chunk, deadlines, results, self._clock(), lambda _, late_s: self._expired_here(late_s))

        def send(client: Endpoint, chunk: list[int]) -> tuple[list[int], list[FrameResult]]:
            left = with_budget(chunk)  # again at each try: failing over takes time
            if not left:
                return left, []
            now = self._clock()
            budgets_left = None if deadlines is None else [
                None if deadlines[i] is None else deadlines[i] - now for i in left]  # type: ignore[operator]
            return left, client.detect_frames([images[i] for i in left], budgets_s=budgets_left, **opts)

        for chunk in _chunks(list(range(len(images)))):
            if not with_budget(chunk):
                continue
            (left, answers), _ = self._failover.call(
                lambda client: send(client, chunk),
                models=lambda answer: [r.model.sha256 for r in answer[1] if r.ok],
                alive=lambda answer: any(r.status is not FrameStatus.EXPIRED for r in answer[1]))
            for i, result in zip(left, answers):  # only now: an answer from another model is never kept
                results[i] = result
        return [r for r in results if r is not None]

    def _expired_here(self, late_s: float) -> FrameResult:
        return FrameResult(status=FrameStatus.EXPIRED, model=ModelRef(self._model_name, self._sha256 or ""),
                           error=f"its budget ran out {late_s * 1e3:.1f} ms before a pool member took it: not sent")


def _model_identity(model: Any) -> tuple[str, str]:
    """``(name, sha256)`` of the model named by ``model``: a registry name's pin (no file needed), else the file's."""
    from ..models.registry import MODELS
    from ..models.resolve import ResolvedModel, resolve_model

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


def _chunks(indices: list[int]) -> list[list[int]]:
    size = LIMITS.max_images
    return [indices[i:i + size] for i in range(0, len(indices), size)]
