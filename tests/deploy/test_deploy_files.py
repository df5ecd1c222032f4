"""deploy/: the Kubernetes manifests hang together, and the nginx renderer fills its template.

The nginx config is run for real in tests/bentos/test_load_balancing.py; here it is only
rendered, checked for the settings the service relies on, and `nginx -t`-ed when nginx is
installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.cloudserve import free_port
from yolo_edge.remote.wire import LIMITS

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "k8s" / "yolo-edge.yaml"


def _load_render():
    spec = importlib.util.spec_from_file_location("_yolo_edge_nginx_render", REPO / "deploy" / "nginx" / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = _load_render()


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    loaded = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {d["kind"]: d for d in loaded}
    assert len(by_kind) == len(loaded), "one object of each kind expected"
    return by_kind


# -- Kubernetes (schemas and the rest: test_manifests.py) ------------------------------------------

def test_manifest_objects(docs):
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"}


def test_deployment_probes_gpu_and_token(docs):
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port == {"http": 3000}  # where a containerized Bento listens
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["YOLO_EDGE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "yolo-edge-auth", "key": "token"}
    assert "value" not in env["YOLO_EDGE_TOKEN"]  # never a literal token in the manifest
    assert int(env["YOLO_EDGE_MAX_UPLOAD_BYTES"]["value"]) == LIMITS.max_request_bytes
    # long enough for BentoML to finish a request under its 60 s timeout after preStop
    assert pod["spec"]["terminationGracePeriodSeconds"] > 60


def test_every_body_limit_is_the_wire_modules():
    """One request-size limit: the SDK's, the service's, its guard's, the nginx template's, the docs'."""
    from bentos.guard import Guard

    limit = LIMITS.max_request_bytes
    assert render.DEFAULT_MAX_BODY_BYTES == limit  # the renderer runs without the SDK: it writes the number out
    assert f"client_max_body_size {limit};" in render.render(["a:1"])
    assert Guard(None).max_body_bytes == limit
    mib = f"{limit >> 20}"
    assert limit == int(mib) << 20, "the docs give the limit in MiB"
    deploy_readme = (REPO / "deploy" / "README.md").read_text()
    assert f"proxy-body-size: {mib}m" in deploy_readme and f"`YOLO_EDGE_MAX_UPLOAD_BYTES` ({mib} MiB" in deploy_readme
    template = (REPO / "deploy" / "nginx" / "yolo-edge.conf.template").read_text()
    assert f"YOLO_EDGE_MAX_UPLOAD_BYTES (default {mib} MiB)" in template
    readme = (REPO / "README.md").read_text()
    assert f"`YOLO_EDGE_MAX_UPLOAD_BYTES`\n({mib} MiB per request" in readme
    assert f"`YOLO_EDGE_MAX_PIXELS` ({LIMITS.max_pixels // 10**6} MP per image)" in readme
    assert f"Images above {LIMITS.max_pixels // 10**6} megapixels\n(or {LIMITS.max_image_bytes >> 20} MiB encoded)" in readme


def test_service_and_hpa_point_at_the_deployment(docs):
    dep, svc, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# -- nginx renderer --------------------------------------------------------------------------------

def test_render_fills_every_placeholder_with_the_service_settings():
    conf = render.render(["10.0.0.11:3000", "10.0.0.12:3000"], listen="8080")
    assert "{{" not in conf and "}}" not in conf
    assert re.search(r"^\s*least_conn;", conf, re.M)
    assert conf.count("max_fails=2 fail_timeout=5s;") == 2
    assert f"client_max_body_size {LIMITS.max_request_bytes};" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    assert re.search(r"^\s*proxy_next_upstream_tries 2;", conf, re.M)
    assert "proxy_set_header Authorization $http_authorization;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert not re.search(r"^\s*proxy_hide_header", conf, re.M)  # Retry-After must pass through
    assert "listen 8080;" in conf


@pytest.mark.parametrize("upstreams,kwargs,needle", [
    ([], {}, "non-empty list"),
    ("10.0.0.1:3000", {}, "non-empty list"),
    (["10.0.0.1"], {}, "host:port"),
    (["10.0.0.1:99999"], {}, "host:port"),
    (["a:1"], {"listen": "0.0.0.0"}, "listen"),
    (["a:1"], {"max_body_bytes": 0}, "max_body_bytes"),
    (["a:1"], {"next_upstream_tries": True}, "next_upstream_tries"),
    (["a:1"], {"fail_timeout": "5"}, "duration"),
])
def test_render_refuses_bad_values(upstreams, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        render.render(upstreams, **kwargs)


def test_render_refuses_a_template_placeholder_it_does_not_know(tmp_path):
    bad = tmp_path / "t.conf"
    bad.write_text("listen {{listen}}; {{typo}}")
    with pytest.raises(ValueError, match="typo"):
        render.render(["a:1"], template=bad)


def test_cli_writes_the_config_and_the_prefix(tmp_path):
    out = tmp_path / "lb.conf"
    subprocess.run([sys.executable, str(REPO / "deploy" / "nginx" / "render.py"), "--upstream", "127.0.0.1:3001",
                    "--listen", "127.0.0.1:8080", "--max-body-bytes", "1000", "--prefix", str(tmp_path),
                    "-o", str(out)], check=True, timeout=30)
    assert "client_max_body_size 1000;" in out.read_text()
    assert (tmp_path / "logs").is_dir() and (tmp_path / "tmp").is_dir()
    bad = subprocess.run([sys.executable, str(REPO / "deploy" / "nginx" / "render.py"), "--upstream", "nohost"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "host:port" in bad.stderr


def _nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        pytest.skip("nginx not installed: apt-get install nginx (make test does this)")
    return nginx


def test_rendered_config_passes_nginx_t(tmp_path):
    nginx = _nginx()
    render.make_prefix(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render.render(["127.0.0.1:3001", "127.0.0.1:3002"], listen="127.0.0.1:18080"))
    cmd = [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "logs/error.log"]
    check = subprocess.run(cmd + (["-g", "user root;"] if os.geteuid() == 0 else []),
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_nginx_writes_its_own_pid_file_and_stops_by_it(tmp_path):
    """The README's commands: start with -p PREFIX, stop with -s quit; the pid file is the prefix's."""
    nginx = _nginx()
    render.make_prefix(tmp_path)
    conf = tmp_path / "yolo-edge.conf"
    conf.write_text(render.render([f"127.0.0.1:{free_port()}"], listen=f"127.0.0.1:{free_port()}", worker_processes="1"))
    base = [nginx, "-p", str(tmp_path), "-c", conf.name, "-e", "logs/error.log"]
    user = ["-g", "user root;"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(base + ["-g", "daemon off;" + (" user root;" if user else "")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    pid_file = tmp_path / "logs" / "nginx.pid"
    try:
        deadline = time.monotonic() + 10
        while not (pid_file.is_file() and pid_file.read_text().strip()) and proc.poll() is None:
            assert time.monotonic() < deadline, "nginx wrote no pid file under its prefix within 10 s"
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        assert int(pid_file.read_text()) == proc.pid
        quit_ = subprocess.run(base + user + ["-s", "quit"], capture_output=True, text=True, timeout=30)
        assert quit_.returncode == 0, quit_.stderr
        assert proc.wait(timeout=10) == 0  # stopped through its own pid file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def test_render_docstring_example():
    import doctest

    assert doctest.testmod(render).failed == 0
