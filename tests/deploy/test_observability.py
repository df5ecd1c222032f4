"""deploy/grafana and deploy/prometheus against what a running service and agent really export.

The metric names live in the deploy files only (the dashboard, the recording rules and
alerts, the prometheus-adapter rule); this test reads them from there and checks each one
against a real scrape: a real service (`python -m bentos.serve` on 127.0.0.1, after
/detect requests that answer 200, 400, 401 and 413) and a real agent (the runner's Agent
offloading to that service, its /metrics served by MetricsServer). A metric renamed in the
code, or misspelt in a panel, fails here. promtool (Debian's prometheus package) checks
the config and the rules, runs the alert unit tests, and parses every dashboard query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.cloudserve import LocalService, free_port
from edge_agent.config import AgentConfig
from edge_agent.metrics import MetricsServer
from edge_agent.runner import Agent
from edge_agent.sources import replay
from promql_names import grafana_to_promql, metric_names, scraped_names
from service_standins import StandIn, fixed_detections
from yolo_edge import Detector
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.image import load_image

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]  # a real service and agent scraped, promtool

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = REPO / "deploy" / "grafana" / "yolo-edge.json"
ADAPTER = REPO / "deploy" / "k8s" / "prometheus-adapter-values.yaml"
TOKEN = "observability-token"
UPLOAD_LIMIT = 400_000
#: series Prometheus makes itself for every target
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMTOOL = shutil.which("promtool")


# -- the expressions the deploy files hold ---------------------------------------------------------

def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query and variable."""
    dash = json.loads(DASHBOARD.read_text())
    found = [(f"panel {p['id']} {p.get('title', '')!r} {t['refId']}", t["expr"])
             for p in _panels(dash["panels"]) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            # Grafana's label_values(selector, label): the selector is PromQL
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", var["definition"])
            assert m, f"variable {var['name']}: expected label_values(selector, label)"
            found.append((f"variable {var['name']}", m.group(1)))
    return found


def rule_exprs() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((f"{path.name} {rule.get('record') or rule.get('alert')}", rule["expr"]))
    return found


def recorded_names() -> set[str]:
    return {rule["record"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def adapter_exprs() -> list[tuple[str, str]]:
    found = []
    for i, rule in enumerate(yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]):
        series = rule["seriesQuery"]
        (name,) = metric_names(series)
        query = (rule["metricsQuery"].replace("<<.Series>>", name)
                 .replace("<<.LabelMatchers>>", 'namespace="default"').replace("<<.GroupBy>>", "pod"))
        found += [(f"adapter rule {i} seriesQuery", series), (f"adapter rule {i} metricsQuery", query)]
    return found


# -- a real service and a real agent ------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory, default_model_path):
    tmp = tmp_path_factory.mktemp("observability")
    env = {"BENTOML_HOME": str(tmp / "bentoml"), "YOLO_EDGE_HOME": str(default_model_path.parents[2]),
           "YOLO_EDGE_MODEL": "yolov3-tiny-coco", "YOLO_EDGE_WARMUP_RUNS": "1", "YOLO_EDGE_TOKEN": TOKEN,
           "YOLO_EDGE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}
    svc = LocalService(threads=1, env=env, log_dir=tmp)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def service_scrape(service, bus_jpg, zidane_jpg) -> str:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def post(files, headers=auth):
        return requests.post(service.url + "/detect", files=files, headers=headers, timeout=60).status_code

    jpeg = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in (bus_jpg, zidane_jpg)]
    assert post(jpeg) == 200  # two frames in one request: one model batch
    assert post(jpeg[:1]) == 200
    assert post([("images", ("x.jpg", b"not an image", "image/jpeg"))]) == 400  # frames{outcome="invalid"}
    assert post(jpeg[:1], headers={}) == 401  # rejected{reason="unauthorized"}
    assert post([("images", ("big.jpg", b"\xff" * (UPLOAD_LIMIT + 1), "image/jpeg"))]) == 413  # too_large
    return requests.get(service.url + "/metrics", timeout=10).text


@pytest.fixture(scope="module")
def pool_agent_run(service, sample_photos, default_model_path):
    """A real agent with an endpoint pool, offloading to the service: (its scrape, its core's counters).

    The pool has what the per-endpoint panels and alerts watch: the service (a primary, weight
    2); a primary of weight 3 on a free port where nothing listens, taken out after its first refused
    request and probed through /readyz; a primary serving another model (a stand-in of the
    service over real HTTP that serves yolov8s-fall; weight 3 too), disabled for good; and a backup on
    standby (nothing listens there either: a backup serves only while no primary is in rotation).
    """
    from yolo_edge.models.registry import MODELS

    detector = Detector("yolov3-tiny-coco", threads=1)
    frames = [cv2.resize(load_image(p), (640, 360)) for p in sample_photos]
    down, standby = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    wrong_model = StandIn(name="yolov8s-fall", sha256=MODELS["yolov8s-fall"].onnx_sha256,
                          detections=fixed_detections({0: "Normal"}, [0])).__enter__()
    other = wrong_model.url.replace("127.0.0.1", "localhost")  # named apart from the others in the scrape
    # a small queue budget at 30 fps: the device overflows, so frames go both ways; the down and
    # the other-model primaries weigh more than the service, so the first overflows go to them
    # (the fewest frames per unit of weight) and the pool learns what each is, whatever the pace
    cfg = AgentConfig(latency_budget_ms=2000, queue_budget=2, max_inflight=2, max_fails=1,
                      cloud=({"url": service.url, "weight": 2}, {"url": down, "weight": 3},
                             {"url": other, "weight": 3}, {"url": standby, "backup": True}))
    clients = [CloudClient(url, token=TOKEN, timeout=cfg.timeout_s, max_retries=0, expected_sha256=detector.info.sha256)
               for url in (service.url, down, other, standby)]
    agent = Agent(cfg, detector=detector, cloud=clients, sinks=[], cloud_warm=True)
    server = MetricsServer(agent.metrics, agent.health, port=0).start()
    names = [e.name for e in cfg.endpoints]
    seen = (("endpoint", names[1], "taken_out"), ("endpoint", names[2], "model_mismatch"))

    def until_seen():  # frames until the down and the other-model endpoints have each had a request
        for i in range(600):
            if i >= 60 and all(agent.core.counters[k] for k in seen):
                return
            yield frames[i % len(frames)]

    try:
        stats = agent.run(replay(until_seen(), fps=30))
        assert stats.frames >= 60 and all(agent.core.counters[k] for k in seen), dict(agent.core.counters)
        return requests.get(server.url + "/metrics", timeout=10).text, dict(agent.core.counters)
    finally:
        server.close()
        for c in clients:
            c.close()
        wrong_model.__exit__(None, None, None)


@pytest.fixture(scope="module")
def agent_scrape(pool_agent_run) -> str:
    return pool_agent_run[0]


@pytest.fixture(scope="module")
def exported(service_scrape, agent_scrape) -> set[str]:
    service_names, agent_names = scraped_names(service_scrape), scraped_names(agent_scrape)
    assert any(n.startswith("yolo_edge_") for n in service_names) and any(n.startswith("bentoml_service_") for n in service_names)
    assert any(n.startswith("edge_agent_") for n in agent_names)
    return service_names | agent_names | PROMETHEUS_SERIES


# -- the checks -------------------------------------------------------------------------------------------

def test_every_metric_named_in_dashboard_rules_and_adapter_is_exported(exported):
    known = exported | recorded_names()
    checked = dashboard_exprs() + rule_exprs() + adapter_exprs()
    assert len(checked) > 40
    unknown = {where: sorted(metric_names(expr) - known) for where, expr in checked if metric_names(expr) - known}
    assert unknown == {}, "metrics that no real scrape exports (renamed? misspelt?)"
    # and every expression names at least one metric: an empty set would mean the lexer lost it
    assert all(metric_names(expr) for _, expr in checked)


def test_the_scrapes_have_the_series_the_alerts_need(service_scrape, agent_scrape):
    """Labels the rules filter on are the ones the processes really put on their series."""
    assert re.search(r'^bentoml_service_request_in_progress\{[^}]*endpoint="/detect"', service_scrape, re.M)
    assert re.search(r'^bentoml_service_request_total\{[^}]*endpoint="/detect"[^}]*http_response_code="401"',
                     service_scrape, re.M)
    assert re.search(r'^yolo_edge_rejected_requests_total\{reason="unauthorized"\}', service_scrape, re.M)
    assert re.search(r'^yolo_edge_model_info\{[^}]*sha256="[0-9a-f]{64}"', service_scrape, re.M)
    assert re.search(r'^edge_agent_frames_total\{outcome="\w+",route="\w+"\}', agent_scrape, re.M)
    assert re.search(r'^edge_agent_cloud_state\{state="failing"\}', agent_scrape, re.M)


def _samples(scrape: str, name: str) -> dict[tuple, float]:
    """``{sorted label items: value}`` of one metric's samples in a scrape."""
    return {tuple(sorted(sample.labels.items())): sample.value for family in text_string_to_metric_families(scrape)
            for sample in family.samples if sample.name == name}


def test_the_pool_agent_exports_each_endpoint_and_the_events_the_alerts_filter_on(pool_agent_run):
    scrape, counters = pool_agent_run
    state = _samples(scrape, "edge_agent_endpoint_state")
    endpoints = {dict(k)["endpoint"] for k in state}
    assert len(endpoints) == 4
    # every endpoint has one series per state, exactly one of them 1
    for e in endpoints:
        mine = {dict(k)["state"]: v for k, v in state.items() if dict(k)["endpoint"] == e}
        assert set(mine) == {"cold", "waking", "ready", "out", "probing", "disabled"} and sum(mine.values()) == 1, mine
    now = {dict(k)["endpoint"]: dict(k)["state"] for k, v in state.items() if v == 1}
    weights = {dict(k)["endpoint"]: v for k, v in _samples(scrape, "edge_agent_endpoint_weight").items()}
    (served,) = [e for e, w in weights.items() if w == 2]
    (wrong,) = [e for e in endpoints if e.startswith("http://localhost:")]
    (backup,) = [e for e, w in weights.items() if w == 0]
    (down,) = endpoints - {served, wrong, backup}
    assert now[wrong] == "disabled" and now[down] in ("out", "probing") and now[backup] == "ready"
    events = {(dict(k)["endpoint"], dict(k)["event"]): v for k, v in _samples(scrape, "edge_agent_endpoint_events_total").items()}
    # the label values the rules and panels filter on (frames_expired: tests/edge_agent/core/test_core.py)
    assert events[(wrong, "model_mismatch")] == 1 and events[(wrong, "failure_model_mismatch")] >= 1
    assert events[(down, "taken_out")] >= 1 and events[(down, "failure_unavailable")] >= 1
    assert events[(served, "frames_answered")] >= 1 and events[(served, "requests")] >= 1
    assert (backup, "requests") not in events  # a backup serves only while no primary can
    assert {k: v for k, v in events.items()} == {k[1:]: v for k, v in counters.items()
                                                 if isinstance(k, tuple) and k[0] == "endpoint"}
    for name in ("edge_agent_endpoint_inflight_requests", "edge_agent_endpoint_inflight_frames",
                 "edge_agent_endpoint_rtt_seconds"):
        assert {dict(k)["endpoint"] for k in _samples(scrape, name)} == endpoints, name
    assert dict(_samples(scrape, "edge_agent_endpoint_rtt_seconds"))[(("endpoint", served),)] > 0


def test_the_lexer_tells_metrics_from_labels_functions_and_keywords():
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job="x", route=~"local|cloud"}[$__rate_interval])))'
            ' / on (job) group_left(instance) b offset 1h > bool 0.5 and {__name__="c"} unless count(d) without (x)'
            ' or label_replace(e, "dst", "$1", "src", "(.*)") * max_over_time(f[10m:30s]) # g is a comment')
    assert metric_names(expr) == {"a_bucket", "b", "c", "d", "e", "f"}
    assert metric_names('sum(edge_agent_frames_total{outcome!="dropped"}) by (instance)') == {"edge_agent_frames_total"}


needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed: make promtool (apt-get install prometheus)")


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_checks_config_and_rules():
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", *[str(p) for p in RULE_FILES])
    assert rules.returncode == 0, rules.stdout + rules.stderr


@needs_promtool
def test_alerts_fire_when_they_should():
    result = _promtool("test", "rules", "tests/alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """promtool parses each dashboard query as a rule expression (Grafana's variables filled in)."""
    rules = [{"record": f"dashboard_check_{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in
             enumerate(dashboard_exprs() + adapter_exprs())]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # and promtool really refuses a broken one
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [{"record": "x", "expr": "sum(rate(a[5m])"}]}]}))
    assert _promtool("check", "rules", str(path)).returncode != 0


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p.get("title", "") for p in panels).lower()
    for wanted in ("in-budget", "offload", "outcome and route", "p50 / p99 per route", "queue depth", "cloud state",
                   "batch size", "inference time", "rejected"):
        assert wanted in titles, wanted
    (pool_row,) = [p for p in panels if p["type"] == "row" and p["title"].startswith("Endpoint pool")]
    assert pool_row["collapsed"] is True and "todo" not in json.dumps(pool_row).lower()
    pool = " | ".join(p["title"] for p in pool_row["panels"]).lower()
    for wanted in ("endpoint state", "in flight per endpoint", "answer time per endpoint", "frames answered per endpoint",
                   "failures per endpoint, by kind", "taken out of rotation, probes", "expired at the endpoint",
                   "another model"):
        assert wanted in pool, wanted
    for p in pool_row["panels"]:  # each one follows the endpoint picker
        assert all('endpoint=~"$endpoint"' in t["expr"] for t in p["targets"] if "edge_agent_endpoint_" in t["expr"])
    # no two panels overlap: the rows as Grafana lays them out, a collapsed row's panels as it expands them
    for group in (dash["panels"], pool_row["panels"]):
        cells = [(p["id"], x, y) for p in group for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
                 for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
        assert len({(x, y) for _, x, y in cells}) == len(cells)
        assert all(0 <= x < 24 for _, x, _ in cells)
    for p in panels:
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
