"""Prometheus metrics of one agent (its own registry) and a tiny /metrics + /healthz server.

Released results are counted as they leave (:meth:`AgentMetrics.observe`); the device's
state (queues, cloud state, estimates) and the core's counters (decisions, requests,
failures) are read from the agent when Prometheus scrapes, so they are never stale.

>>> m = AgentMetrics()
>>> from edge_agent.core.frames import FrameResult, Outcome, Route
>>> m.observe(FrameResult(seq=0, outcome=Outcome.CLOUD, route=Route.CLOUD, released_at=0.2))
>>> b"edge_agent_frames_total" in m.exposition()
True
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter as _Tally
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .core.frames import FrameResult, Outcome, Reason, Route
from .core.policy import CloudState

if TYPE_CHECKING:
    from .protocols import Sink

__all__ = ["AgentMetrics", "MetricsServer"]

logger = logging.getLogger(__name__)

_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("edge_agent_frames", "Frames by final outcome and route", ["outcome", "route"], registry=r)
        self.dropped = Counter("edge_agent_dropped_frames", "Dropped frames by reason", ["reason"], registry=r)
        self.late = Counter("edge_agent_late_frames", "Frames not answered by the time they had to leave, by reason",
                            ["route", "reason"], registry=r)
        self.latency = Histogram("edge_agent_latency_seconds", "Capture to release, by route, of answers within budget",
                                 ["route"], buckets=_BUCKETS, registry=r)
        self.late_answers = Counter("edge_agent_late_answers", "Answers that arrived after their frame had left",
                                    ["route"], registry=r)
        self.within_budget = Gauge("edge_agent_within_budget_ratio", "Share of released frames answered within budget",
                                   registry=r)
        self.offload_ratio = Gauge("edge_agent_offload_ratio",
                                   "Share of the frames run somewhere that ran in the cloud", registry=r)
        self.uploads = Counter("edge_agent_uploaded_frames", "Frames uploaded to the cloud, by encoding "
                               "(png: lossless, the answer exact; jpegQ: JPEG of quality Q)", ["encoding"], registry=r)
        self.upload_bytes = Counter("edge_agent_uploaded_bytes", "Encoded bytes of uploaded frames, by encoding",
                                    ["encoding"], registry=r)
        self.local_service = Gauge("edge_agent_local_service_seconds", "Last local inference time", registry=r)
        self.backend = Gauge("edge_agent_local_backend_info", "The local inference backend (value 1)",
                             ["name", "providers", "selected"], registry=r)
        self._released = 0
        self._within = 0
        self._ran = _Tally()
        self._snapshot: Callable | None = None
        self._counters: _Tally | None = None
        r.register(_StateCollector(self))
        self._sinks = _SinkCollector()
        r.register(self._sinks)

    def watch_sinks(self, sinks: Iterable["Sink"]) -> None:
        """Export each sink's delivery counts (read from ``Sink.report()`` at every scrape)."""
        self._sinks.sinks.extend(sinks)

    def watch(self, snapshot: Callable, counters: _Tally) -> None:
        """Read the device's state (``snapshot()``) and the core's ``counters`` at each scrape."""
        self._snapshot, self._counters = snapshot, counters

    def observe(self, r: FrameResult) -> None:
        route = r.route.value if r.route is not None else "none"
        self.frames.labels(r.outcome.value, route).inc()
        self._released += 1
        if r.upload:
            self.uploads.labels(r.upload["encoding"]).inc()
            self.upload_bytes.labels(r.upload["encoding"]).inc(r.upload["bytes"] or 0)
        if r.outcome is Outcome.DROPPED:
            self.dropped.labels(r.reason or Reason.UNKNOWN).inc()
        else:
            self._ran[r.route] += 1
            if r.outcome is Outcome.LATE:
                self.late.labels(route, r.reason or Reason.UNKNOWN).inc()
            else:
                self._within += 1
                self.latency.labels(route).observe(max(0.0, r.latency_s))
        self.within_budget.set(self._within / self._released)
        ran = self._ran[Route.LOCAL] + self._ran[Route.CLOUD]
        if ran:
            self.offload_ratio.set(self._ran[Route.CLOUD] / ran)

    def late_answer(self, route: Route) -> None:
        self.late_answers.labels(route.value).inc()

    def set_backend(self, info: dict) -> None:
        """Record which local backend runs (``yolo_edge.backends.select.describe_backend``)."""
        self.backend.clear()
        self.backend.labels(str(info.get("name", "")), ",".join(info.get("providers", [])),
                            str(info.get("selected") or "")).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """The device's gauges and the core's counters, read at scrape time."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        snap = self.m._snapshot() if self.m._snapshot is not None else None
        state = snap.cloud_state if snap is not None else CloudState.NONE
        g = GaugeMetricFamily("edge_agent_cloud_state", "1 for the cloud's current state", labels=["state"])
        for s in CloudState:
            g.add_metric([s.value], 1.0 if s is state else 0.0)
        yield g
        gauges = [
            ("edge_agent_local_ready", "1 once the local backend is ready", snap and float(snap.local_ready)),
            ("edge_agent_local_queue_depth", "Frames waiting for a local worker", snap and snap.local_queued),
            ("edge_agent_local_busy", "Frames in local inference now", snap and snap.local_busy),
            ("edge_agent_cloud_pending", "Frames queued for or in flight to the cloud", snap and snap.cloud_pending),
            ("edge_agent_pending_frames", "Frames seen and not yet released", snap and snap.pending),
            ("edge_agent_local_service_estimate_seconds", "Local service time the device plans with",
             snap and snap.local_service_s),
            ("edge_agent_cloud_rtt_seconds", "Median cloud answer time with nothing ahead", snap and snap.cloud_rtt_s),
            ("edge_agent_uplink_goodput_bits_per_second", "The uplink's goodput as measured over the recent uploads",
             snap and snap.uplink_bps),
            ("edge_agent_uplink_busy_seconds", "Time the uplink carried at least one upload, since the start",
             snap and snap.uplink_busy_s),
            ("edge_agent_uplink_sent_bytes", "Bytes put on the uplink, since the start", snap and snap.uplink_sent_bytes),
        ]
        for name, doc, value in gauges:
            fam = GaugeMetricFamily(name, doc)
            fam.add_metric([], float(value or 0.0))
            yield fam
        yield from _endpoint_families(snap.endpoints if snap is not None else ())
        counters = self.m._counters or {}
        decisions = CounterMetricFamily("edge_agent_decisions", "Routing decisions by route and reason",
                                        labels=["route", "reason"])
        events = CounterMetricFamily("edge_agent_core_events", "Cloud requests, failures, timeouts and wakes; frames "
                                     "the uplink could not carry in time, requests stalled on it", labels=["event"])
        endpoint_events = CounterMetricFamily(
            "edge_agent_endpoint_events", "Per cloud endpoint: requests, frames answered or expired, failures by kind, "
            "times taken out of rotation, probes, wakes, model mismatches", labels=["endpoint", "event"])
        hedges = CounterMetricFamily(
            "edge_agent_hedges", "Hedged frames: started (a late cloud frame also run locally), which answer came "
            "first, second answers counted and never released, frames moved or rescued to the local lane",
            labels=["event"])
        for key, n in sorted(counters.items(), key=lambda kv: str(kv[0])):
            if isinstance(key, tuple) and key[0] == "hedge":
                hedges.add_metric(["_".join(key[1:])], n)
            elif isinstance(key, tuple) and key[0] in ("cloud_queue_left", "uplink"):
                events.add_metric(["_".join(key)], n)  # frames the uplink could not carry, stalled requests
            elif isinstance(key, tuple) and key[0] == "decision":
                decisions.add_metric([key[1], key[2]], n)
            elif isinstance(key, tuple) and key[0] == "endpoint":
                endpoint_events.add_metric([key[1], key[2]], n)
            elif isinstance(key, str):
                events.add_metric([key], n)
        yield decisions
        yield hedges
        yield events
        yield endpoint_events


def _endpoint_families(endpoints) -> list:
    """Per cloud endpoint: its state, its load and its answer time."""
    from .core.pool import Phase

    state = GaugeMetricFamily("edge_agent_endpoint_state", "1 for each cloud endpoint's current state",
                              labels=["endpoint", "state"])
    requests = GaugeMetricFamily("edge_agent_endpoint_inflight_requests", "Requests in flight to the endpoint",
                                 labels=["endpoint"])
    frames = GaugeMetricFamily("edge_agent_endpoint_inflight_frames", "Frames in flight to the endpoint",
                               labels=["endpoint"])
    rtt = GaugeMetricFamily("edge_agent_endpoint_rtt_seconds", "The endpoint's median answer time with nothing "
                            "else in flight", labels=["endpoint"])
    weight = GaugeMetricFamily("edge_agent_endpoint_weight", "The endpoint's weight (0 for a backup)",
                               labels=["endpoint"])
    for e in endpoints:
        for phase in Phase:
            state.add_metric([e.name, phase.value], 1.0 if e.state == phase.value else 0.0)
        requests.add_metric([e.name], e.requests)
        frames.add_metric([e.name], e.frames)
        rtt.add_metric([e.name], e.rtt_s or 0.0)
        weight.add_metric([e.name], 0.0 if e.backup else e.weight)
    return [state, requests, frames, rtt, weight]


class _SinkCollector:
    """edge_agent_sink_*{sink}: what became of the results each sink was given."""

    _COUNTERS = (("received", "Results handed to the sink"),
                 ("delivered", "Results that reached the sink's destination (replayed ones included)"),
                 ("replayed", "Results delivered from an earlier run's spool"),
                 ("rejected", "Results the destination refused as invalid (kept in the rejected file)"),
                 ("lost", "Results neither delivered nor kept: I/O errors"),
                 ("retries", "Delivery attempts that failed and were retried"))

    def __init__(self) -> None:
        self.sinks: list = []

    def describe(self):
        return []

    def collect(self):
        reports = [s.report() for s in self.sinks]
        for name, doc in self._COUNTERS:
            fam = CounterMetricFamily(f"edge_agent_sink_{name}", doc, labels=["sink"])
            for r in reports:
                fam.add_metric([r.name], getattr(r, name))
            yield fam
        fam = GaugeMetricFamily("edge_agent_sink_spooled", "Results waiting in the sink's spool file, not yet "
                                "delivered", labels=["sink"])
        for r in reports:
            fam.add_metric([r.name], r.spooled)
        yield fam


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on a background thread. ``port=0`` picks a free one."""

    def __init__(self, metrics: AgentMetrics, health: Callable[[], dict], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                try:
                    if self.path.split("?")[0] == "/metrics":
                        self._send(200, outer.metrics.exposition(), CONTENT_TYPE_LATEST)
                    elif self.path.split("?")[0] == "/healthz":
                        body = outer.health()
                        code = 200 if body.get("status") == "ok" else 503
                        self._send(code, json.dumps(body).encode(), "application/json")
                    else:
                        self._send(404, b'{"error": "not found; try /metrics or /healthz"}', "application/json")
                except Exception:  # the agent's server must never die on a request
                    logger.exception("metrics request %s failed", self.path)
                    self._send(500, b'{"error": "internal error"}', "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                logger.debug("metrics server: " + fmt, *args)

        self.metrics = metrics
        self.health = health
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="edge-agent-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "MetricsServer":
        self._thread.start()
        logger.info("metrics on %s/metrics, health on %s/healthz", self.url, self.url)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
