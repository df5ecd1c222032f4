"""The agent at run time: admission through the policy, a local worker, cloud senders,
in-order release to sinks and metrics.

Everything with side effects comes in as a parameter (``detector=``, ``cloud=``,
``clock=``, ``sinks=``), so tests drive it with honest fakes and the CLI with the real
Detector and CloudClient.

>>> import numpy as np
>>> from yolo_edge import Detections
>>> from edge_agent.config import AgentConfig
>>> fake = lambda img: Detections.empty()
>>> agent = Agent(AgentConfig(latency_budget_ms=500), detector=fake)
>>> with agent:
...     seq = agent.submit(np.zeros((8, 8, 3), np.uint8))
>>> agent.stats.outcomes["local"]
1
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from yolo_edge.backends.select import describe_backend
from yolo_edge.errors import CloudError, CloudModelMismatchError, CloudUnavailableError, YoloEdgeError

from .breaker import Breaker, effective_cloud, on_failure, on_success
from .config import AgentConfig
from .estimators import Ewma
from .metrics import AgentMetrics
from .policy import CloudState, Observation, Route, decide
from .reorder import FrameResult, ReorderBuffer, classify
from .sinks import Sink, close_sinks
from .stats import RunStats

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

#: refresh the cloud round-trip estimate with a would-be-dropped frame after this long
PROBE_AFTER_S = 1.0


@dataclass
class _Frame:
    seq: int
    image: Any
    captured: float
    deadline: float
    reason: str = ""


class Agent:
    """One device's agent. ``submit`` frames (from any one thread), ``close`` to drain.

    ``detector(image) -> Detections`` runs locally; ``cloud`` is a
    :class:`yolo_edge.cloud.CloudClient` (or anything with ``detect_many(images,
    return_meta=True)``, ``wake(wait_s)`` and ``verify_model()``), or None for local only.
    """

    def __init__(self, config: AgentConfig, *, detector: Callable[[Any], Any], cloud: Any = None,
                 sinks: Sequence[Sink] = (), metrics: AgentMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = config
        self.policy_cfg = config.policy()
        self.breaker_cfg = config.breaker()
        self.detector = detector
        self.cloud = cloud
        self.sinks = list(sinks)
        self.keep_images = any(s.wants_images for s in self.sinks)
        self.metrics = metrics or AgentMetrics()
        self.metrics.watch_sinks(self.sinks)
        self.clock = clock
        self.stats = RunStats(budget_s=self.policy_cfg.latency_budget_s)
        self.budget_s = self.policy_cfg.latency_budget_s

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._local_q: deque[_Frame] = deque()
        self._cloud_q: deque[_Frame] = deque()
        self._local_busy = 0
        self._cloud_frames = 0  # queued for, or in flight to, the cloud
        self._requests = 0
        self._service = Ewma(alpha=0.2, prior=None)
        self._rtt = Ewma(alpha=0.2, prior=None)
        self._last_rtt_at = clock()
        self._phase = CloudState.COLD if cloud is not None else CloudState.DISABLED
        self._breaker = Breaker()
        self._offloading = False
        self._seq = 0
        self._reorder = ReorderBuffer(window=config.reorder_window, grace_s=config.late_grace_s)
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._started = False
        self.metrics.set_cloud_state(self._phase)
        if getattr(detector, "backend", None) is not None:  # a yolo_edge.Detector, not a bare callable
            self.metrics.set_backend(describe_backend(detector.backend))

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "Agent":
        if self._started:
            return self
        self._started = True
        for i in range(self.cfg.local_workers):
            self._spawn(self._local_loop, f"edge-agent-local-{i}")
        if self.cloud is not None and self._phase is not CloudState.DISABLED:
            for i in range(self.cfg.max_inflight):
                self._spawn(self._cloud_loop, f"edge-agent-cloud-{i}")
        self._emitter = self._spawn(self._emit_loop, "edge-agent-emit")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def close(self, drain_timeout_s: float | None = None) -> RunStats:
        """Stop taking frames, finish or account for every frame in flight, close sinks."""
        limit = drain_timeout_s if drain_timeout_s is not None else self.cfg.timeout_s + self.cfg.late_grace_s + 1.0
        end = time.monotonic() + limit
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            while self._reorder.pending and time.monotonic() < end:
                self._work.wait(0.05)
        for t in self._threads:
            t.join(timeout=max(0.1, end - time.monotonic()))
        with self._lock:
            # anything still unresolved leaves as dropped[no_result]: never silently lost
            leftovers = self._reorder.pop_ready(self.clock(), flush=True)
        self._publish(leftovers)
        self.stats.sinks = close_sinks(self.sinks)  # what each sink delivered, spooled or lost
        return self.stats

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- admission ---------------------------------------------------------------------
    def submit(self, image: Any, captured_at: float | None = None) -> int:
        """Admit one frame; returns its sequence number. Never blocks on inference."""
        now = self.clock()
        captured = now if captured_at is None else captured_at
        with self._lock:
            seq = self._seq
            self._seq += 1
            frame = _Frame(seq, image, captured, captured + self.budget_s)
            self._reorder.expect(seq, frame.deadline, captured)
            if self._stopping:
                self._finish(frame, "dropped", None, now, "shutdown")
            else:
                self._route(frame, now)
        return seq

    def record_drop(self, reason: str, captured_at: float | None = None) -> int:
        """Account for a frame the source had to skip (e.g. a live stream overran)."""
        now = self.clock()
        with self._lock:
            seq = self._seq
            self._seq += 1
            captured = now if captured_at is None else captured_at
            self._reorder.expect(seq, captured + self.budget_s, captured)
            self._finish(_Frame(seq, None, captured, captured + self.budget_s), "dropped", None, now, reason)
        return seq

    def run(self, frames: Iterable[Any], stop: threading.Event | None = None) -> RunStats:
        """Submit every item of ``frames`` (images, or SourceFrame-like objects) then drain."""
        self.start()
        try:
            for item in frames:
                if stop is not None and stop.is_set():
                    break
                if getattr(item, "dropped_reason", None):
                    self.record_drop(item.dropped_reason, getattr(item, "captured_at", None))
                elif hasattr(item, "image") and hasattr(item, "captured_at"):
                    self.submit(item.image, item.captured_at)
                else:
                    self.submit(item)
        finally:
            stats = self.close()
        return stats

    # -- decisions (called with the lock held) ------------------------------------------
    def _observe(self, f: _Frame, now: float) -> Observation:
        state, cap = effective_cloud(self._phase, self._breaker, now, self.cfg.max_inflight * self.cfg.max_batch)
        return Observation(
            frame_age_s=now - f.captured, local_queued=len(self._local_q), local_busy=self._local_busy,
            local_workers=self.cfg.local_workers, local_service_s=self._service.upper(1.0), cloud_state=state,
            cloud_rtt_s=self._rtt.upper(1.0), cloud_pending=self._cloud_frames, cloud_capacity=cap,
            offloading=self._offloading, budget_s=self.budget_s,
            cloud_probe_due=self._cloud_frames == 0 and (not self._rtt.count or now - self._last_rtt_at > PROBE_AFTER_S),
        )

    def _route(self, f: _Frame, now: float, *, fallback: bool = False) -> None:
        d = decide(self._observe(f, now), self.policy_cfg)
        if not fallback:
            self._offloading = d.offloading
        self.metrics.decisions.labels(d.route.value, d.reason).inc()
        if d.wake_cloud and self._phase is CloudState.COLD:
            self._set_phase(CloudState.WAKING)
            # not joined at close: a wake may poll for minutes and holds no frame
            threading.Thread(target=self._wake, name="edge-agent-wake", daemon=True).start()
        f.reason = d.reason
        if d.route is Route.LOCAL:
            self._local_q.append(f)
        elif d.route is Route.CLOUD:
            self._cloud_q.append(f)
            self._cloud_frames += 1
        else:
            self._finish(f, "dropped", None, now, d.reason)
        self._gauges()
        self._work.notify_all()

    def _finish(self, f: _Frame, outcome: str, route: str | None, now: float, reason: str | None = None,
                detections: Any = None, meta: dict | None = None) -> None:
        if outcome != "dropped":
            outcome = classify(outcome, now, f.deadline)
        res = FrameResult(seq=f.seq, outcome=outcome, route=route, reason=reason, captured_at=f.captured,
                          deadline=f.deadline, finished_at=now, detections=detections, meta=meta or {},
                          image=f.image if self.keep_images else None)
        f.image = None
        if not self._reorder.put(res):
            self.metrics.discarded.inc()
        self._work.notify_all()

    def _set_phase(self, phase: CloudState) -> None:
        self._phase = phase
        self.metrics.set_cloud_state(phase)

    def _gauges(self) -> None:
        self.metrics.local_queue.set(len(self._local_q))
        self.metrics.cloud_pending.set(self._cloud_frames)

    # -- local worker ------------------------------------------------------------------
    def _local_loop(self) -> None:
        while True:
            with self._lock:
                while not self._local_q and not self._stopping:
                    self._work.wait()
                if not self._local_q:
                    return
                f = self._local_q.popleft()
                now = self.clock()
                if now >= f.deadline:  # stale: running it could only produce a late answer
                    self._finish(f, "dropped", None, now, "expired_in_queue")
                    continue
                self._local_busy += 1
                self._gauges()
            start = time.perf_counter()
            try:
                dets, err = self.detector(f.image), None
            except Exception as exc:  # a bad frame must not kill the worker
                dets, err = None, exc
            took = time.perf_counter() - start
            with self._lock:
                self._local_busy -= 1
                now = self.clock()
                if err is not None:
                    logger.warning("local inference failed on frame %d: %s", f.seq, err)
                    self._finish(f, "dropped", None, now, "local_error")
                else:
                    self._service.update(took)
                    self.metrics.local_service.set(self._service.mean)
                    self._finish(f, "local", "local", now, f.reason, dets)
                self._gauges()

    # -- cloud -----------------------------------------------------------------------
    def _cloud_loop(self) -> None:
        while True:
            with self._lock:
                batch = self._take_cloud_batch()
                if batch is None:
                    return
                self._requests += 1
            self._send(batch)

    def _take_cloud_batch(self) -> list[_Frame] | None:
        """Wait (lock held) until a batch may go; None when shutting down with nothing left."""
        while True:
            now = self.clock()
            state, cap = effective_cloud(self._phase, self._breaker, now, self.cfg.max_inflight)
            if self._cloud_q and state is not CloudState.READY:
                # the cloud went away under queued frames: they go back through the policy
                while self._cloud_q:
                    f = self._cloud_q.popleft()
                    self._cloud_frames -= 1
                    self._route(f, now, fallback=True)
                continue
            if self._cloud_q and self._requests < cap:
                n = min(self.cfg.max_batch, len(self._cloud_q))
                return [self._cloud_q.popleft() for _ in range(n)]
            if self._stopping and not self._cloud_q:
                return None
            self._work.wait(0.05)

    def _send(self, batch: list[_Frame]) -> None:
        sent = self.clock()
        try:
            dets, metas = self.cloud.detect_many([f.image for f in batch], return_meta=True)
            err = None
        except CloudModelMismatchError as exc:
            dets, metas, err = None, None, exc
            logger.error("OFFLOAD REFUSED: %s -- the cloud runs a different model than this device; "
                         "every frame stays local. Deploy the same model or pass --allow-model-mismatch.", exc)
        except YoloEdgeError as exc:
            dets, metas, err = None, None, exc
        except Exception as exc:  # anything else from the transport counts as a cloud failure
            dets, metas, err = None, None, CloudError(f"cloud request failed: {exc!r}")
        with self._lock:
            now = self.clock()
            self._requests -= 1
            self._cloud_frames -= len(batch)
            if err is None:
                self._rtt.update(now - sent)
                self._last_rtt_at = now
                self.metrics.cloud_rtt.set(self._rtt.mean)
                self._breaker = on_success(self._breaker)
                for f, d, m in zip(batch, dets, metas):
                    self._finish(f, "cloud", "cloud", now, f.reason, d, m)
            else:
                if isinstance(err, CloudModelMismatchError):
                    self._set_phase(CloudState.DISABLED)
                else:
                    retry = getattr(err, "retry_after_s", None) if isinstance(err, CloudUnavailableError) else None
                    self._breaker = on_failure(self._breaker, now=now, cfg=self.breaker_cfg, retry_after_s=retry)
                    logger.warning("cloud request of %d frame(s) failed (%s); breaker %s", len(batch), err,
                                   self._breaker.state(now))
                    state, _ = effective_cloud(self._phase, self._breaker, now, 1)
                    self.metrics.set_cloud_state(state)
                for f in batch:
                    self._route(f, now, fallback=True)
            self._gauges()

    def _wake(self) -> None:
        """Wake a scaled-to-zero service and check it runs our model before using it."""
        ok = False
        try:
            ok = bool(self.cloud.wake(wait_s=self.cfg.wake_timeout_s))
            if ok and hasattr(self.cloud, "verify_model") and getattr(self.cloud, "expected_sha256", None):
                self.cloud.verify_model()
        except CloudModelMismatchError as exc:
            logger.error("OFFLOAD REFUSED: %s -- the cloud runs a different model than this device.", exc)
            with self._lock:
                self._set_phase(CloudState.DISABLED)
            return
        except YoloEdgeError as exc:
            logger.warning("cloud wake failed: %s", exc)
            ok = False
        with self._lock:
            if self._phase is CloudState.WAKING:
                self._set_phase(CloudState.READY if ok else CloudState.COLD)
                if ok:
                    self._last_rtt_at = self.clock()
                logger.info("cloud %s", "ready" if ok else "not ready yet; will wake again when needed")
            self._work.notify_all()

    # -- output ------------------------------------------------------------------------
    def _emit_loop(self) -> None:
        while True:
            with self._lock:
                self._work.wait(0.02)
                out = self._reorder.pop_ready(self.clock())
                done = self._stopping and not self._reorder.pending
            self._publish(out)
            if done:
                return

    def _publish(self, results: list[FrameResult]) -> None:
        for r in results:
            # sinks first: a result /metrics counts is already in every sink (or its spool)
            for s in self.sinks:
                try:
                    s.emit(r)
                except Exception:
                    logger.exception("sink %s failed on frame %d", s.name, r.seq)
            self.stats.add(r)
            self.metrics.observe(r)

    # -- introspection -----------------------------------------------------------------
    def health(self) -> dict:
        with self._lock:
            state, _ = effective_cloud(self._phase, self._breaker, self.clock(), 1)
            return {
                "status": "ok" if self._started and not self._stopping else "stopping",
                "cloud": state.value, "local_queue": len(self._local_q), "cloud_pending": self._cloud_frames,
                "frames": self._seq, "local_service_ms": round(1000 * (self._service.value or 0), 2),
                "cloud_rtt_ms": round(1000 * (self._rtt.value or 0), 2),
            }
