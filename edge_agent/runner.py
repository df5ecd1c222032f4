"""The agent at run time: the threaded driver of the device core.

:class:`Agent` owns no decision logic. It feeds :class:`~edge_agent.core.DeviceCore` the
events of the real world, timestamped with ``clock`` (frames from the source, answers
from the local workers and the cloud, wake results, timer ticks), and carries out the
actions the core answers with: a local worker thread runs the detector, a pool of sender
threads calls the cloud endpoint, a wake thread polls a scaled-to-zero service, and
released results go to the sinks, the run statistics and the metrics, in frame order.
The simulator (:mod:`edge_agent.sim`) drives the same core on a virtual clock.

Everything with side effects comes in as a parameter (``detector=``/``load_detector=``,
``cloud=``, ``sinks=``, ``clock=``), so tests drive it with honest fakes and the CLI with the
real Detector and CloudClient.

>>> import numpy as np
>>> from yolo_edge import Detections
>>> from edge_agent.config import AgentConfig
>>> agent = Agent(AgentConfig(latency_budget_ms=500), detector=lambda img: Detections.empty())
>>> with agent:
...     seq = agent.submit(np.zeros((8, 8, 3), np.uint8))
>>> agent.stats.outcomes[Outcome.LOCAL]
1
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from queue import SimpleQueue
from typing import Any, Callable, Iterable, Sequence

from yolo_edge.errors import ConfigError

from .cloudcall import CloudCalls, pool_model
from .config import AgentConfig
from .core import CoreConfig, DeviceCore
from .core.events import (
    Action, Close, CloudDone, Event, Failure, Flush, FrameCaptured, FrameSkipped, LateAnswer, LocalDone, LocalReady,
    Release, RunLocal, SendBatch, Tick, Wake,
)
from .core.frames import FrameResult, Outcome, Reason
from .core.policy import Mode, Policy
from .core.pool import EndpointSpec
from .core.stats import RunStats
from .metrics import AgentMetrics
from .protocols import CloudEndpoint, LocalDetector, Sink
from .sinks import close_sinks
from .sources import SourceFrame
from .stagetime import StageTimes

__all__ = ["Agent", "Outcome"]

logger = logging.getLogger(__name__)


def _other_cpus(local_cpus: Sequence[int] | None) -> set[int] | None:
    """The cores the agent's other threads may use: all this process may, less the local worker's."""
    if not local_cpus or not hasattr(os, "sched_getaffinity"):
        return None
    return (os.sched_getaffinity(0) - set(local_cpus)) or None  # one core only: nowhere else to go


def _keep_to(cpus: set[int] | None) -> None:
    """Keep this thread (a cloud sender: encoding and HTTP; a wake) to ``cpus``, the cores other
    than the local worker's (None: anywhere).

    The timer thread is left where the OS puts it: it does little, and late (it decides
    releases and expiries), so it must not queue behind a busy core's work.
    """
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)  # this thread only (Linux)
        except OSError as exc:
            logger.warning("cannot keep agent threads off the local worker's cores: %s", exc)


def _single_core(local_cpus) -> bool:
    """Whether every thread of this agent shares the local worker's core (one core available, or
    the local worker pinned to all the cores there are)."""
    if not hasattr(os, "sched_getaffinity"):
        return (os.cpu_count() or 1) == 1
    cpus = os.sched_getaffinity(0)
    return len(cpus) == 1 or (local_cpus is not None and cpus <= set(local_cpus))


def _with_endpoints(cfg: CoreConfig, clients: int) -> CoreConfig:
    """The core's endpoints: the configured ones, or as many unnamed ones as there are clients."""

    if len(cfg.endpoints) == clients:
        return cfg
    if cfg.endpoints:
        raise ConfigError(f"the config names {len(cfg.endpoints)} cloud endpoint(s) but {clients} client(s) were "
                          "given: pass one client per endpoint, in the same order")
    names = ["cloud"] if clients == 1 else [f"cloud{i}" for i in range(clients)]
    return replace(cfg, endpoints=tuple(EndpointSpec(name=n) for n in names))


class Agent:
    """One device's agent. ``submit`` frames (from one thread), ``close`` to drain.

    ``detector(image) -> Detections`` runs locally. Pass ``load_detector`` instead to build
    it on a background thread (a TensorRT engine can take minutes on a Jetson): the agent
    serves at once, frames going to the cloud or dropped as ``local_warming`` until it is
    ready. ``cloud`` is a :class:`~edge_agent.protocols.CloudEndpoint` (a
    :class:`yolo_edge.remote.cloud.CloudClient` or :class:`yolo_edge.remote.oip.OipClient`), a list of
    them (the endpoint pool, in the order of ``config.cloud``), or None for local only. ``policy`` replaces the
    configured policy (the benchmarks pass baselines). ``cloud_warm=True`` says the endpoint
    was woken before the run, so it is used at once instead of being woken first.
    """

    def __init__(self, config: AgentConfig, *, detector: LocalDetector | None = None,
                 load_detector: Callable[[], LocalDetector] | None = None,
                 cloud: CloudEndpoint | Sequence[CloudEndpoint] | None = None,
                 sinks: Sequence[Sink] = (), metrics: AgentMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, policy: Policy | None = None,
                 cloud_warm: bool = False) -> None:
        if (detector is None) == (load_detector is None):
            raise ConfigError("pass exactly one of detector= (ready now) or load_detector= (built in the background)")
        self.cfg = config
        self.detector = detector
        self._load_detector = load_detector
        clouds = [] if cloud is None else list(cloud) if isinstance(cloud, (list, tuple)) else [cloud]
        self.clouds: list[CloudEndpoint] = clouds if config.mode != Mode.LOCAL.value else []
        self.sinks = list(sinks)
        self.keep_images = any(s.wants_images for s in self.sinks)
        self.clock = clock
        self._wall_offset_s = time.time() - clock()  # once: results carry wall-clock times too
        core_cfg = _with_endpoints(config.core(), len(self.clouds))
        if self.clouds and _other_cpus(config.local_cpus) is None and _single_core(config.local_cpus):
            core_cfg = replace(core_cfg, uploads_share_local_cpu=True)  # uploads run on the local worker's core
        if not any(getattr(c, "upload_encodings", False) for c in self.clouds):
            # no client here chooses encodings or says when an upload left: the uplink is not modelled
            core_cfg = replace(core_cfg, uplink_prior_bps=None)
        self.core = DeviceCore(core_cfg, cloud=bool(self.clouds), cloud_warm=cloud_warm,
                               local_ready=detector is not None, policy=policy)
        self.stats = RunStats(budget_s=core_cfg.budget_s)
        #: the pool's model: every answer from another is refused (its endpoint disabled), whatever its weight
        self.model = pool_model(self.clouds, [e.name for e in core_cfg.endpoints])
        self.metrics = metrics or AgentMetrics()
        self.metrics.watch(self.snapshot, self.core.counters)
        self.metrics.watch_sinks(self.sinks)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the core's timers or pending set changed
        self._images: dict[int, Any] = {}
        self._local_jobs: SimpleQueue[tuple[int, Any] | None] = SimpleQueue()
        # one sender per request the core may have in flight, over every endpoint: a request never
        # waits for a thread (its budget on the wire would be stale, its answer time overstated)
        senders = sum(e.max_inflight for e in self.core.pool.endpoints) or 1
        #: CPU time per stage (edge_agent.stagetime): what the agent itself costs per frame
        self.stages = StageTimes()
        self._other_cpus = _other_cpus(config.local_cpus)
        #: the calls to the endpoints, on the sender and wake threads
        self.calls = CloudCalls(self.clouds, model=self.model, allow_mismatch=config.allow_model_mismatch,
                                clock=clock, report=self._report, stages=self.stages)
        self._senders = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="edge-agent-cloud",
                                           initializer=_keep_to, initargs=(self._other_cpus,))
        self._threads: list[threading.Thread] = []
        self._timer_due: float | None = None  # when the timer thread means to wake, while it waits
        self._started = False
        self._stopped = False
        self._local_failed = False
        self.local_error: str | None = None  # why the local backend failed to load

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "Agent":
        if self._started:
            return self
        self._started = True
        for i in range(self.cfg.local_workers):
            self._spawn(self._local_loop, f"edge-agent-local-{i}")
        self._spawn(self._timer_loop, "edge-agent-timer")
        if self._load_detector is not None:
            self._spawn(self._load, "edge-agent-load")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def close(self, drain_timeout_s: float | None = None) -> RunStats:
        """Stop taking frames; every frame pending leaves by its deadline (or at the drain timeout)."""
        limit = drain_timeout_s if drain_timeout_s is not None else self.core.cfg.budget_s + 1.0
        end = self.clock() + limit
        with self._lock:
            if self._stopped:
                return self.stats
            self._feed(Close(at=self.clock()))
            while not self.core.idle and self.clock() < end:
                self._changed.wait(min(0.05, max(0.0, end - self.clock())))
            if not self.core.idle:
                logger.warning("drain time ran out with %d frame(s) pending: they leave as dropped/late[shutdown]",
                               self.core.pending)
                self._feed(Flush(at=self.clock()))
            self._stopped = True
            self._changed.notify_all()
        for _ in range(self.cfg.local_workers):
            self._local_jobs.put(None)
        self._senders.shutdown(wait=False, cancel_futures=True)  # answers still in flight are late anyway
        for t in self._threads:
            t.join(timeout=0.5)
        self.stats.sinks = close_sinks(self.sinks)  # what each sink delivered, spooled or lost
        with self._lock:
            self.stats.uplink = self.core.link.stats(self.clock()) if self.core.link.uploads else None
        return self.stats

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- frames in ---------------------------------------------------------------------
    def submit(self, image: Any, captured_at: float | None = None, budget_s: float | None = None) -> int:
        """Admit one frame; returns its sequence number. Never blocks on inference."""
        with self._lock:
            seq = self.core.next_seq
            self._images[seq] = image  # until the frame is released
            self._feed(FrameCaptured(at=self.clock(), seq=seq, captured_at=captured_at, budget_s=budget_s))
            return seq

    def record_drop(self, reason: Reason, captured_at: float | None = None) -> int:
        """Account for a frame the source had to skip (e.g. a live stream overran)."""
        with self._lock:
            seq = self.core.next_seq
            self._feed(FrameSkipped(at=self.clock(), seq=seq, reason=reason, captured_at=captured_at))
            return seq

    def run(self, frames: Iterable[Any], stop: threading.Event | None = None) -> RunStats:
        """Submit every item of ``frames`` (images or :class:`SourceFrame`) then drain."""
        self.start()
        try:
            for item in frames:
                if stop is not None and stop.is_set():
                    break
                if isinstance(item, SourceFrame):
                    if item.dropped_reason:
                        self.record_drop(item.dropped_reason, item.captured_at)
                    else:
                        self.submit(item.image, item.captured_at)
                else:
                    self.submit(item)
        finally:
            stats = self.close()
        return stats

    # -- the core ------------------------------------------------------------------------
    def _feed(self, event: Event) -> None:
        """Hand one event to the core and carry out its actions (lock held)."""
        with self.stages.stage("core"):
            actions = self.core.handle(event)
        for action in actions:
            self._act(action)
        due = self.core.next_timer()
        if (due is not None and (self._timer_due is None or due < self._timer_due)) or self.core.idle:
            self._changed.notify_all()  # the timer thread must wake sooner, or close() may return

    def _act(self, action: Action) -> None:
        if isinstance(action, Release):
            self._deliver(action.results)
        elif isinstance(action, RunLocal):
            self._local_jobs.put((action.seq, self._images.get(action.seq)))
        elif isinstance(action, SendBatch):
            images = [self._images.get(seq) for seq in action.seqs]
            try:
                self._senders.submit(self._send, action, images)
            except RuntimeError:  # closed: the request is never sent, so it fails now
                self._feed(CloudDone(at=self.clock(), request=action.request, failure=Failure.ERROR,
                                     message="agent shutting down"))
        elif isinstance(action, Wake):
            # not joined at close: a wake may poll for minutes and holds no frame
            threading.Thread(target=self._wake, args=(action,), name="edge-agent-wake", daemon=True).start()
        elif isinstance(action, LateAnswer):
            self.stats.add_late_answer(action.route)
            self.metrics.late_answer(action.route)

    def _deliver(self, results: Sequence[FrameResult]) -> None:
        """Released results go to the sinks now, in order, from the releasing thread."""
        with self.stages.stage("sinks"):
            self._emit(results)

    def _emit(self, results: Sequence[FrameResult]) -> None:
        for r in results:
            if r.within_budget and self.clock() > r.deadline:
                # the core released it in time, but this thread was descheduled past its deadline
                # before the sinks got it: what reaches them late is reported late
                r.outcome, r.reason = Outcome.LATE, Reason.RELEASED_LATE
            image = self._images.pop(r.seq, None)
            if self.keep_images:
                r.image = image
            r.wall_offset_s = self._wall_offset_s
            # sinks first: a result /metrics counts is already in every sink (or its spool)
            for s in self.sinks:
                try:
                    s.emit(r)
                except Exception:
                    logger.exception("sink %s failed on frame %d", s.name, r.seq)
            self.stats.add(r)
            self.metrics.observe(r)
            r.image = None

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._stopped:
                due = self.core.next_timer()
                wait = None if due is None else due - self.clock()
                if wait is not None and wait <= 0:
                    self._feed(Tick(at=self.clock()))
                else:
                    self._timer_due = due
                    self._changed.wait(wait)
                    self._timer_due = None

    # -- local ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            detector = self._load_detector()
        except Exception as exc:  # the agent keeps serving through the cloud
            logger.exception("loading the local detector failed")
            with self._lock:
                self._local_failed = True
                self.local_error = f"{type(exc).__name__}: {exc}"
                self._feed(LocalReady(at=self.clock(), ok=False, error=str(exc)))
            return
        with self._lock:
            self.detector = detector
            logger.info("local detector ready")
            self._feed(LocalReady(at=self.clock()))

    def _local_loop(self) -> None:
        if self.cfg.local_cpus:
            try:
                os.sched_setaffinity(0, set(self.cfg.local_cpus))  # this thread only (Linux)
            except (AttributeError, OSError) as exc:
                logger.warning("cannot pin the local worker to cores %s: %s", self.cfg.local_cpus, exc)
        while (job := self._local_jobs.get()) is not None:
            seq, image = job
            start, cpu0 = self.clock(), time.thread_time()
            try:
                answer, error = self.detector(image), None
            except Exception as exc:  # a bad frame must not kill the worker
                answer, error = None, f"{type(exc).__name__}: {exc}"
                logger.warning("local inference failed on frame %d: %s", seq, error)
            took = self.clock() - start
            self.stages.add("inference", time.thread_time() - cpu0, took)
            with self._lock:
                self.metrics.local_service.set(took)
                self._feed(LocalDone(at=self.clock(), seq=seq, service_s=took, answer=answer, error=error))

    # -- cloud ---------------------------------------------------------------------------
    def _send(self, action: SendBatch, images: list[Any]) -> None:
        """One request to one endpoint (a sender thread); its answer goes to the core."""
        self._report(self.calls.send(action, images))

    def _wake(self, action: Wake) -> None:
        """Wake (or probe) an endpoint (a wake thread), off the local worker's cores."""
        _keep_to(self._other_cpus)
        self._report(self.calls.wake(action))

    def _report(self, event: Event) -> None:
        """Feed an event from a cloud call, stamped when the core takes it (under the lock)."""
        with self._lock:
            self._feed(replace(event, at=self.clock()))

    @property
    def model_sha256(self) -> str | None:
        """The model every cloud answer must come from (the clients' pin), or None: not checked."""
        return self.model.sha256

    def wait_local_ready(self, stop: threading.Event | None = None, timeout_s: float | None = None) -> bool:
        """Block until the local backend is ready (or failed to load, or ``stop`` is set)."""
        end = None if timeout_s is None else self.clock() + timeout_s
        with self._lock:
            while not self.core.snapshot(self.clock()).local_ready and not self._local_failed:
                if (stop is not None and stop.is_set()) or (end is not None and self.clock() >= end):
                    return False
                self._changed.wait(0.1)
            return not self._local_failed

    # -- introspection -----------------------------------------------------------------
    def snapshot(self):
        """The core's state now (for /healthz and the metrics)."""
        with self._lock:
            return self.core.snapshot(self.clock())

    def health(self) -> dict:
        """What ``/healthz`` shows of the agent."""
        return self.snapshot().health(status="ok" if self._started and not self.core.closing else "stopping",
                                      frames=self.core.next_seq)
