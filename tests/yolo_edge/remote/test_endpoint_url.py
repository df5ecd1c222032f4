"""Endpoint URLs are checked where a client or a pool is built: one ConfigError naming the entry.

Each bad form is refused by the validator itself, by CloudClient, by OipClient (its
``oip+`` form), by EndpointPool (as a URL and as a ``{"url": ...}`` table) and by
``yolo_edge.detect(endpoint=...)``, before any network I/O; good forms, IPv6 in brackets
included, are accepted and named as written.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import yolo_edge
from yolo_edge import EndpointPool
from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.endpoint_url import HTTP_SCHEMES, check_endpoint_url
from yolo_edge.errors import ConfigError
from yolo_edge.remote.oip import OipClient

BAD = [
    ("http://127.0.0.1:99999", "port 99999 is out of range"),
    ("http://127.0.0.1:65536", "port 65536 is out of range"),
    ("http://127.0.0.1:0", "port 0 is out of range .0 is not 'the default port'"),
    ("http://[::1", r"an IPv6 address opened with '\[' is not closed with '\]'"),
    ("http://::1:3000", "an IPv6 address must be in brackets"),
    ("http://[not-v6]:3000", "'not-v6' in brackets is not an IPv6 address"),
    ("http://[::1]3000", "'3000' after the IPv6 address"),
    ("http://:3000", "no host"),
    ("http://", "no host"),
    ("http://user:pw@:3000/x", "no host"),
    ("http://host:abc", "port 'abc' is not a number"),
    ("http://host:-1", "port '-1' is not a number"),
    ("http://host:", "':' with no port after it"),
    ("ftp://host:21", "the scheme must be one of http://, https://"),
    ("127.0.0.1:3000", "the scheme must be one of"),
    ("HTTP://host:3000", "the scheme must be one of"),
    ("http://ho st:3000", "white space"),
    ("http://ho^st:3000", "'ho\\^st' is not a host name or address"),
]
GOOD = ["http://127.0.0.1:3000", "https://gpu.example.com", "http://[::1]:3000/prefix", "http://host:65535",
        "http://user:secret@host:1", "http://[fe80::1%eth0]:8080"]
FRAME = np.zeros((8, 8, 3), np.uint8)


@pytest.mark.parametrize("url, problem", BAD, ids=[u for u, _ in BAD])
def test_each_bad_form_is_a_config_error_naming_it_and_what_is_expected(url, problem):
    with pytest.raises(ConfigError, match=problem) as info:
        check_endpoint_url(url, what="the thing")
    text = str(info.value)
    assert text.startswith(f"the thing {url!r}: ") and "expected http(s)://HOST[:PORT]" in text
    assert "a port within 1-65535 and an IPv6 address in brackets" in text


@pytest.mark.parametrize("url, problem", BAD, ids=[u for u, _ in BAD])
def test_clients_and_pools_refuse_each_bad_form_when_built(url, problem):
    with pytest.raises(ConfigError, match=f"CloudClient endpoint .*{problem}"):
        CloudClient(url)
    for member in (url, {"url": url, "weight": 2}):
        with pytest.raises(ConfigError, match=f"pool member .*{problem}"):
            EndpointPool(["http://127.0.0.1:3000", member])
    for endpoint in (url, ["http://127.0.0.1:3000", url]):  # no scheme at all: open_endpoint says which ones
        with pytest.raises(ConfigError, match=re.escape(repr(url))):
            yolo_edge.detect(FRAME, endpoint=endpoint)
    assert not yolo_edge.api._clients


@pytest.mark.parametrize("url, problem", [(u, p) for u, p in BAD if u.startswith("http://")],
                         ids=[u for u, _ in BAD if u.startswith("http://")])
def test_oip_clients_refuse_each_bad_form(url, problem, default_model_path):
    oip = "oip+" + url.rstrip("/") + "/v2/models/yolo"
    if url in ("http://", "http://host:"):
        oip = "oip+" + url + "/v2/models/yolo"
    with pytest.raises(ConfigError, match=f"Open Inference Protocol endpoint .*{problem}"):
        OipClient(oip, model="yolov3-tiny-coco")
    with pytest.raises(ConfigError, match=f"pool member .*{problem}"):
        EndpointPool([oip], model="yolov3-tiny-coco")


@pytest.mark.parametrize("url", GOOD)
def test_good_forms_are_accepted_and_named_as_written(url):
    assert check_endpoint_url(url, schemes=HTTP_SCHEMES) == url
    with CloudClient(url) as client:
        assert client.endpoint == url
    with EndpointPool([url]) as pool:
        (status,) = pool.members()
        assert ("[" in status.name) == ("[" in url) and "secret" not in status.name


def test_a_value_that_is_no_url_at_all():
    for value in (None, "", 3000, b"http://h:1"):
        with pytest.raises(ConfigError, match="endpoint must be a URL: expected"):
            check_endpoint_url(value)
