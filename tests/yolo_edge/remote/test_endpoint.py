"""Both remote clients, and the SDK's pool of them, satisfy ``yolo_edge.remote.endpoint.Endpoint``, so the agent's pool can take either."""

from __future__ import annotations

import inspect

import pytest

from yolo_edge.remote.cloud import CloudClient
from yolo_edge.remote.endpoint import Endpoint, open_endpoint
from yolo_edge.errors import ConfigError
from yolo_edge.remote.oip import OipClient
from yolo_edge.remote.pool import EndpointPool

_METHODS = [name for name, value in vars(Endpoint).items() if inspect.isfunction(value) and not name.startswith("_")]


def test_the_protocol_is_small_and_named():
    assert sorted(_METHODS) == ["close", "detect_frames", "detect_many", "ready", "verify_model", "wake"]
    assert "endpoint" in Endpoint.__annotations__


@pytest.mark.parametrize("cls", [CloudClient, OipClient, EndpointPool])
@pytest.mark.parametrize("method", _METHODS)
def test_each_client_takes_every_call_the_protocol_allows(cls, method):
    """Every parameter of the Protocol's method exists in the client's, of the same kind and default."""
    want = inspect.signature(getattr(Endpoint, method)).parameters
    have = inspect.signature(getattr(cls, method)).parameters
    for name, param in want.items():
        assert name in have, f"{cls.__name__}.{method} lacks {name}"
        assert have[name].kind == param.kind, f"{cls.__name__}.{method}({name}) is {have[name].kind}"
        assert have[name].default == param.default, f"{cls.__name__}.{method}({name}) defaults to {have[name].default}"
    extra = [p for n, p in have.items() if n not in want and p.default is inspect.Parameter.empty
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not extra, f"{cls.__name__}.{method} requires {extra}, which the Protocol's callers never pass"


def test_open_endpoint_picks_the_client_from_the_url(default_model_path):
    cloud = open_endpoint("http://127.0.0.1:3000", timeout=3)
    oip = open_endpoint("oip+http://127.0.0.1:8000/v2/models/yolo", timeout=3)
    try:
        assert isinstance(cloud, CloudClient) and isinstance(cloud, Endpoint) and cloud.timeout == 3
        assert isinstance(oip, OipClient) and isinstance(oip, Endpoint)
        assert oip.endpoint == "oip+http://127.0.0.1:8000/v2/models/yolo"
    finally:
        cloud.close()
        oip.close()
    with pytest.raises(ConfigError, match="oip\\+http"):
        open_endpoint("grpc://127.0.0.1:8001")


def test_detect_frames_is_the_agents_call_on_either_client(default_model_path, default_detector):
    """Spent budgets: every frame EXPIRED as a result (not an exception), and no network I/O."""
    import numpy as np
    import requests

    from yolo_edge.remote.wire import FrameResult, FrameStatus

    class NoNetwork(requests.Session):
        def request(self, *args, **kwargs):
            raise AssertionError(f"a request was made: {args}")

    frames = [np.zeros((32, 32, 3), np.uint8)] * 3
    sha = default_detector.info.sha256
    clients = [CloudClient("http://127.0.0.1:9", session=NoNetwork(), expected_sha256=sha),
               OipClient("oip+http://127.0.0.1:9/v2/models/yolo", session=NoNetwork())]
    for client in clients:
        endpoint: Endpoint = client
        results = endpoint.detect_frames(frames, budgets_s=[0.0, -1.0, -0.001], conf=0.3)
        assert all(isinstance(r, FrameResult) and r.status is FrameStatus.EXPIRED for r in results), client
        assert all(r.model.sha256 == sha and r.detections is None and r.error for r in results)
        assert endpoint.detect_frames([], budgets_s=0.5) == []
