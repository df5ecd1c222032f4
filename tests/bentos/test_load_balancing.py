"""The service behind a real nginx: two `bentoml serve` replicas, deploy/nginx's config.

The config under test is the one users get: deploy/nginx/yolo-edge.conf.template rendered
by deploy/nginx/render.py, run by the system nginx with every path in a tmp prefix. Each
request goes through :class:`yolo_edge.remote.cloud.CloudClient`, as a user's would. The last
tests stop the replicas one after the other, so they run last and in this order.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.wire import LIMITS
from yolo_edge.errors import CloudAuthError, CloudUnavailableError, ImageTooLargeError

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                        if os.access(p, os.X_OK)), None)
if NGINX is None:
    pytest.skip("nginx not installed: apt-get install nginx (make test does this)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOKEN = "lb-token-456"
MAX_IN_FLIGHT = 6  # per replica: low enough to see a replica's 429 through nginx
UPLOAD_LIMIT = LIMITS.max_request_bytes  # the service's default YOLO_EDGE_MAX_UPLOAD_BYTES, left as deployed


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# the serve helpers of this folder's conftest, and the renderer users run; loaded by path,
# since neither folder is a package
serving = _load("_yolo_edge_serving", HERE / "conftest.py")
render = _load("_yolo_edge_nginx_render", REPO / "deploy" / "nginx" / "render.py")


@dataclass
class Balancer:
    url: str
    proc: subprocess.Popen
    prefix: Path

    def log(self, name: str) -> str:
        path = self.prefix / "logs" / name
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Cluster:
    lb: Balancer
    replicas: list  # conftest.Served, in upstream order
    sha256: str


def _start_nginx(prefix: Path, upstreams: list[str]) -> Balancer:
    port = serving._free_port()
    render.make_prefix(prefix)
    conf = prefix / "nginx.conf"
    conf.write_text(render.render(upstreams, listen=f"127.0.0.1:{port}", worker_processes="1",
                                  max_body_bytes=UPLOAD_LIMIT))
    # as root, workers would switch to 'nobody', which cannot enter pytest's 0700 tmp dirs
    main = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")  # the pid file: the template's own
    with (prefix / "logs" / "stderr.log").open("wb") as out:
        proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-e", "logs/error.log", "-g", main],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lb = Balancer(f"http://127.0.0.1:{port}", proc, prefix)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{lb.log('stderr.log')}{lb.log('error.log')}")
        try:
            requests.get(lb.url + "/livez", timeout=2)
            return lb
        except requests.ConnectionError:
            time.sleep(0.05)
    _stop_nginx(lb)
    raise RuntimeError(f"nginx did not listen on {lb.url} within 10 s:\n{lb.log('error.log')}")


def _stop_nginx(lb: Balancer) -> None:
    if lb.proc.poll() is None:
        lb.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests, then exit
        try:
            lb.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(lb.proc.pid, signal.SIGKILL)
            lb.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, default_model_path, bus_jpg, default_detector):
    tmp = tmp_path_factory.mktemp("lb")
    env = {**serving._model_env(default_model_path), "YOLO_EDGE_WARMUP_RUNS": "1",
           "YOLO_EDGE_TOKEN": TOKEN, "YOLO_EDGE_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT)}
    dirs = [tmp / f"replica{i}" for i in range(2)]
    for d in dirs:
        d.mkdir()
    with cf.ThreadPoolExecutor(2) as pool:  # both load and warm up at once
        futures = [pool.submit(serving._start, d, env, bus_jpg.read_bytes()) for d in dirs]
    replicas = [f.result() for f in futures if f.exception() is None]
    failed = [f.exception() for f in futures if f.exception() is not None]
    lb = None
    try:
        if failed:
            raise failed[0]
        lb = _start_nginx(tmp / "nginx", [r.url.removeprefix("http://") for r in replicas])
        yield Cluster(lb, replicas, default_detector.info.sha256)
    finally:
        if lb is not None:
            _stop_nginx(lb)
        for r in replicas:
            serving._stop(r)


def client(cluster: Cluster, **kwargs) -> CloudClient:
    kwargs.setdefault("downscale", False)
    kwargs.setdefault("timeout", 30)
    return CloudClient(cluster.lb.url, token=TOKEN, expected_sha256=cluster.sha256, **kwargs)


def samples(url: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples with these labels, from /metrics parsed by prometheus_client."""
    text = requests.get(url + "/metrics", timeout=10).text
    want = set(labels.items())
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and want <= set(s.labels.items()))


def frames_ok(url: str) -> float:
    return samples(url, "yolo_edge_frames_total", outcome="ok")


# -- both replicas up ------------------------------------------------------------------------

def test_concurrent_requests_are_answered_and_spread_over_both_replicas(cluster, bus_jpg, default_detector):
    before = [frames_ok(r.url) for r in cluster.replicas]
    expected = default_detector(bus_jpg).labels
    n = 24

    def one(_: int) -> list[str]:
        with client(cluster) as c:
            return c.detect(bus_jpg).labels

    with cf.ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(one, range(n), timeout=120))
    assert labels == [expected] * n
    served = [frames_ok(r.url) - b for r, b in zip(cluster.replicas, before)]
    assert sum(served) == n, served
    assert all(s >= 1 for s in served), f"least_conn sent every frame to one replica: {served}"


def test_detections_through_nginx_equal_local(cluster, sample_photos, default_detector):
    with client(cluster) as c:
        for photo in sample_photos:
            cloud, local = c.detect(photo), default_detector(photo)
            assert cloud.image_shape == local.image_shape
            np.testing.assert_array_equal(cloud.class_id, local.class_id)
            np.testing.assert_allclose(cloud.xyxy, local.xyxy, atol=1e-3)  # JSON keeps 3 decimals
            np.testing.assert_allclose(cloud.confidence, local.confidence, atol=1e-6)


def test_authorization_reaches_the_replicas(cluster, bus_jpg):
    with CloudClient(cluster.lb.url, downscale=False) as anonymous, pytest.raises(CloudAuthError) as info:
        anonymous.detect(bus_jpg)
    assert info.value.status_code == 401  # the replica's answer: nginx checks no token itself


def test_upload_above_the_limit_is_a_clear_413_from_nginx(cluster, bus_jpg):
    rejected = [samples(r.url, "yolo_edge_rejected_requests_total", reason="too_large") for r in cluster.replicas]
    big = bus_jpg.read_bytes() + bytes(UPLOAD_LIMIT)  # a JPEG with 32 MiB of trailing zeros
    resp = requests.post(cluster.lb.url + "/detect", files=[("images", ("big.jpg", big, "image/jpeg"))],
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert resp.status_code == 413 and resp.headers["Content-Type"].startswith("application/json")
    assert f"limit of {UPLOAD_LIMIT} bytes" in resp.json()["error"]
    # the client reads the limit (the replicas', through nginx) and does not even send it
    with client(cluster, downscale=False) as c, pytest.raises(ImageTooLargeError, match=str(UPLOAD_LIMIT)):
        c.detect(big)
    # refused by nginx before any replica read it
    assert [samples(r.url, "yolo_edge_rejected_requests_total", reason="too_large")
            for r in cluster.replicas] == rejected


def test_a_replicas_429_reaches_the_client_with_retry_after(cluster, bus_jpg):
    body = bus_jpg.read_bytes()
    files = [("images", (f"{i}.jpg", body, "image/jpeg")) for i in range(4)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    n = 4 * MAX_IN_FLIGHT  # twice what the two replicas admit at once
    with cf.ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(lambda _: requests.post(cluster.lb.url + "/detect", files=files, headers=headers,
                                                          timeout=60), range(n)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    assert all(r.headers.get("Retry-After") == "1" and "in flight" in r.json()["error"]
               for r in responses if r.status_code == 429)


def test_readyz_and_metrics_through_nginx(cluster):
    with client(cluster) as c:
        assert c.ready()
    assert samples(cluster.lb.url, "yolo_edge_model_info", sha256=cluster.sha256) == 1
    # the per-replica concurrency gauge deploy/k8s suggests scaling on
    assert "bentoml_service_request_in_progress" in requests.get(cluster.lb.url + "/metrics", timeout=10).text


# -- replicas going away (these run last, in this order) ------------------------------------

def test_killing_a_replica_under_load_fails_no_request(cluster, bus_jpg, default_detector):
    expected = default_detector(bus_jpg).labels
    dead, alive = cluster.replicas
    results: list[object] = []
    started = threading.Event()

    def load(worker: int) -> None:
        # no client retries: nginx alone must hide the death (without non_idempotent in the
        # config, requests sent as the replica goes away come back as 502 here)
        with client(cluster, max_retries=0) as c:
            for i in range(8):
                t0 = time.monotonic()
                try:
                    results.append((c.detect(bus_jpg).labels, time.monotonic() - t0))
                except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                    results.append(exc)
                started.set()

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load, w) for w in range(4)]
        assert started.wait(30), "no request through nginx finished within 30 s"
        serving._stop(dead)  # mid-load: requests in flight on it, more on their way
        cf.wait(futures, timeout=120)
    assert all(f.done() for f in futures), "a request hung after a replica died"
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures[:3]
    assert [labels for labels, _ in results] == [expected] * 32

    # afterwards every request is answered promptly by the replica left
    before = frames_ok(alive.url)
    with client(cluster, max_retries=0) as c:
        for _ in range(6):
            t0 = time.monotonic()
            assert c.detect(bus_jpg).labels == expected
            assert time.monotonic() - t0 < 10
        assert c.ready(), "/readyz through nginx must be 200 while one replica is up"
    assert frames_ok(alive.url) - before == 6
    # the access log names each replica tried: some request went to the dead one and on to the other
    dead_addr, alive_addr = (r.url.removeprefix("http://") for r in (dead, alive))
    failover = re.compile(rf"upstream={re.escape(dead_addr)}, {re.escape(alive_addr)} status=5\d\d, 200 ")
    assert failover.search(cluster.lb.log("access.log")), "nginx never failed over from the dead replica"


def test_with_every_replica_down_the_client_gets_a_typed_502_at_once(cluster, bus_jpg):
    serving._stop(cluster.replicas[1])
    with client(cluster, max_retries=0) as c:
        assert not c.ready()
        t0 = time.monotonic()
        with pytest.raises(CloudUnavailableError) as info:
            c.detect(bus_jpg)
    assert time.monotonic() - t0 < 5
    assert info.value.status_code == 502 and info.value.retry_after_s == 1.0
    assert "no yolo-edge replica" in str(info.value)
