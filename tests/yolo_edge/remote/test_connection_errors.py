"""A remote endpoint that cannot be reached fails in one line a user can act on.

Real sockets on 127.0.0.1, on a port nothing listens on (connection refused); other causes
(DNS, TLS, routes) from the exceptions the libraries raise. The library's chain of
requests/urllib3/socket exceptions is kept on ``error.original``, never printed with it.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import requests

import yolo_edge
from edge_agent.cloudserve import free_port
from yolo_edge import CloudClient, EndpointPool, OipClient
from yolo_edge.remote.endpoint import why_unreachable
from yolo_edge.errors import CloudUnavailableError

REPO = Path(__file__).resolve().parents[3]
FRAME = np.zeros((32, 32, 3), np.uint8)


def _assert_one_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    assert "urllib3" not in text and "During handling" not in text and "direct cause" not in text, text
    assert exc.__cause__ is None
    return text


def test_closed_port_is_one_line_naming_url_and_cause():
    url = f"http://127.0.0.1:{free_port()}"
    with CloudClient(url, max_retries=0) as client:
        with pytest.raises(CloudUnavailableError) as info:
            client.detect(FRAME)
    message = str(info.value)
    assert message.startswith(f"cannot connect to {url}/metadata: connection refused")
    assert "is the service running at that address" in message and "\n" not in message
    _assert_one_line(info.value)
    assert isinstance(info.value.original, requests.ConnectionError)  # the library's error, when asked for


def test_an_oip_endpoint_on_a_closed_port_too(default_model_path):
    url = f"oip+http://127.0.0.1:{free_port()}/v2/models/m"
    with OipClient(url, timeout=5) as client:
        with pytest.raises(CloudUnavailableError, match="connection refused") as info:
            client.verify_model()
    _assert_one_line(info.value)


def test_a_pool_of_dead_endpoints_names_each_in_one_error():
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with EndpointPool(urls, expected_sha256="a" * 64) as pool:  # pinned: every member is tried
        with pytest.raises(CloudUnavailableError) as info:
            pool.detect(FRAME)
    text = _assert_one_line(info.value)
    assert all(f"{u}: cannot connect" in str(info.value) for u in urls) and "connection refused" in text


@pytest.mark.parametrize("cause, says", [
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (socket.gaierror(-2, "Name or service not known"), "host name not found (DNS: Name or service not known)"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS handshake failed"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to the host"),
    (ConnectionResetError(104, "Connection reset by peer"), "reset by the other end"),
    (socket.timeout("timed out"), "timed out"),
])
def test_why_unreachable_reads_the_chain(cause, says):
    wrapped = requests.ConnectionError("HTTPConnectionPool(...): Max retries exceeded")
    wrapped.__context__ = cause
    assert says in why_unreachable(wrapped)
    assert why_unreachable(requests.ConnectionError("something odd")) == "something odd"


def test_detect_with_a_dead_endpoint_prints_one_line_not_a_chained_traceback():
    """What a user sees running ``yolo_edge.detect(..., endpoint=URL)`` with the service down."""
    url = f"http://127.0.0.1:{free_port()}"
    code = f"import numpy as np, yolo_edge\nyolo_edge.detect(np.zeros((32, 32, 3), np.uint8), endpoint={url!r})\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"yolo_edge.errors.CloudUnavailableError: cannot connect to {url}")
    assert "connection refused" in last
    assert "urllib3" not in r.stderr and "requests.exceptions" not in r.stderr, r.stderr
    assert r.stderr.count("Traceback (most recent call last)") == 1
    assert yolo_edge  # the block above imports the same package
