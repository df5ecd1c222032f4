"""Prometheus metrics of one agent (its own registry) and a tiny /metrics + /healthz server.

>>> m = AgentMetrics()
>>> from edge_agent.reorder import FrameResult
>>> m.observe(FrameResult(seq=0, outcome="cloud", route="cloud", finished_at=0.2))
>>> b"edge_agent_frames_total" in m.exposition()
True
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .policy import CloudState
from .reorder import FrameResult

if TYPE_CHECKING:
    from .sinks import Sink

__all__ = ["AgentMetrics", "MetricsServer"]

logger = logging.getLogger(__name__)

_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("edge_agent_frames", "Frames by final outcome and route", ["outcome", "route"], registry=r)
        self.dropped = Counter("edge_agent_dropped_frames", "Dropped frames by reason", ["reason"], registry=r)
        self.latency = Histogram("edge_agent_latency_seconds", "End-to-end latency, capture to result, by route",
                                 ["route"], buckets=_BUCKETS, registry=r)
        self.deadline_misses = Counter("edge_agent_deadline_misses", "Answers that came after their deadline",
                                       ["route"], registry=r)
        self.discarded = Counter("edge_agent_discarded_results", "Results that arrived after their frame was "
                                 "released as dropped[no_result]", registry=r)
        self.decisions = Counter("edge_agent_decisions", "Policy decisions by route and reason", ["route", "reason"],
                                 registry=r)
        self.local_queue = Gauge("edge_agent_local_queue_depth", "Frames waiting for the local worker", registry=r)
        self.cloud_pending = Gauge("edge_agent_cloud_pending", "Frames queued for or in flight to the cloud", registry=r)
        self.cloud_state = Gauge("edge_agent_cloud_state", "1 for the cloud's current state", ["state"], registry=r)
        self.offload_ratio = Gauge("edge_agent_offload_ratio", "Share of answered frames answered by the cloud",
                                   registry=r)
        self.local_service = Gauge("edge_agent_local_service_seconds", "Moving estimate of local service time",
                                   registry=r)
        self.cloud_rtt = Gauge("edge_agent_cloud_rtt_seconds", "Moving estimate of the cloud round trip", registry=r)
        self.backend = Gauge("edge_agent_local_backend_info", "The local inference backend (value 1)",
                             ["name", "providers", "selected"], registry=r)
        self._answered = 0
        self._cloud = 0
        self.set_cloud_state(CloudState.DISABLED)
        self._sinks = _SinkCollector()
        r.register(self._sinks)

    def watch_sinks(self, sinks: Iterable["Sink"]) -> None:
        """Export each sink's delivery counts (read from ``Sink.report()`` at every scrape)."""
        self._sinks.sinks.extend(sinks)

    def observe(self, r: FrameResult) -> None:
        route = r.route or "none"
        self.frames.labels(r.outcome, route).inc()
        if r.outcome == "dropped":
            self.dropped.labels(r.reason or "unknown").inc()
            return
        self.latency.labels(route).observe(max(0.0, r.latency_s))
        if r.outcome == "late":
            self.deadline_misses.labels(route).inc()
        self._answered += 1
        self._cloud += route == "cloud"
        self.offload_ratio.set(self._cloud / self._answered)

    def set_backend(self, info: dict) -> None:
        """Record which local backend runs (``yolo_edge.backends.select.describe_backend``)."""
        self.backend.clear()
        self.backend.labels(str(info.get("name", "")), ",".join(info.get("providers", [])),
                            str(info.get("selected") or "")).set(1)

    def set_cloud_state(self, state: CloudState) -> None:
        for s in CloudState:
            self.cloud_state.labels(s.value).set(1.0 if s is state else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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

    def collect(self):
        reports = [s.report() for s in self.sinks]
        for field, doc in self._COUNTERS:
            fam = CounterMetricFamily(f"edge_agent_sink_{field}", doc, labels=["sink"])
            for r in reports:
                fam.add_metric([r.name], getattr(r, field))
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
