"""OipClient over a fake transport: what goes on the wire, identity checks, errors.

The fake is a requests transport adapter mounted on a real ``requests.Session``; its
inference handler runs the local model on the tensor it receives, so encoding and
decoding are checked end to end. A real Triton server is exercised in ``tests/triton``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter

from yolo_edge.errors import (
    CloudAuthError,
    CloudDeadlineExpiredError,
    CloudError,
    CloudModelMismatchError,
    CloudRequestError,
    CloudUnavailableError,
    ConfigError,
)
from yolo_edge.remote.oip import OipClient
from yolo_edge.remote.oip_wire import HEADER_LENGTH, decode_infer_response, encode_infer_request, parse_oip_url

URL = "oip+http://gpu:8000/v2/models/yolo"


class FakeOip(BaseAdapter):
    """A KServe v2 server for one model whose inference is the local model's backend."""

    def __init__(self, detector, *, datatype: str = "FP16", versions=("1",), max_batch: int = 8,
                 sha256: str | None = "local", config: bool = True, binary: bool = True,
                 infer: Callable[[dict, np.ndarray], Any] | None = None) -> None:
        super().__init__()
        self.detector = detector
        self.datatype, self.versions, self.binary = datatype, list(versions), binary
        self.sha256 = detector.info.sha256 if sha256 == "local" else sha256
        self.max_batch, self.config = max_batch, config
        self.infer = infer
        self.inputs = [{"name": "images", "datatype": datatype, "shape": [-1, 3, 416, 416]}]
        self.outputs = [{"name": "output0", "datatype": "FP32", "shape": [-1, 2535, 85]}]
        self.requests: list[requests.PreparedRequest] = []
        self.infers: list[tuple[dict, np.ndarray]] = []

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' adapter signature
        self.requests.append(request)
        path = request.path_url
        if path.endswith("/ready"):
            return self._answer(request, 200, {})
        if path.endswith("/config"):
            if not self.config:
                return self._answer(request, 404, {"error": "not found"})
            params = {"sha256": {"string_value": self.sha256}} if self.sha256 else {}
            return self._answer(request, 200, {"max_batch_size": self.max_batch, "parameters": params})
        if path.endswith("/infer"):
            return self._infer(request)
        return self._answer(request, 200, {"name": "yolo", "versions": self.versions, "platform": "python",
                                           "inputs": self.inputs, "outputs": self.outputs})

    def _infer(self, request):
        n = int(request.headers[HEADER_LENGTH])
        header = json.loads(request.body[:n])
        (inp,) = header["inputs"]
        dtype = {"FP16": "<f2", "FP32": "<f4"}[inp["datatype"]]
        batch = np.frombuffer(request.body[n:], dtype).reshape(inp["shape"])
        self.infers.append((header, batch))
        if self.infer is not None:
            out = self.infer(header, batch)
            if out is not None:
                return self._answer(request, *out)
        pred = self.detector.backend.run(batch.astype(np.float32))[0]
        version = request.path_url.split("/versions/")[1].split("/")[0] if "/versions/" in request.path_url else "1"
        out = {"name": "output0", "datatype": "FP32", "shape": list(pred.shape)}
        if not self.binary:
            return self._answer(request, 200, {"model_name": "yolo", "model_version": version,
                                               "outputs": [{**out, "data": pred.ravel().tolist()}]})
        raw = pred.astype("<f4").tobytes()
        head = json.dumps({"model_name": "yolo", "model_version": version,
                           "outputs": [{**out, "parameters": {"binary_data_size": len(raw)}}]}).encode()
        return self._answer(request, 200, head + raw, {HEADER_LENGTH: str(len(head)),
                                                      "Content-Type": "application/octet-stream"})

    @staticmethod
    def _answer(request, status: int, body: Any, headers: dict | None = None):
        resp = requests.Response()
        resp.status_code, resp.url, resp.request = status, request.url, request
        resp.headers.update({"Content-Type": "application/json", **(headers or {})})
        resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return resp

    def close(self) -> None:
        pass


def _client(fake: BaseAdapter, url: str = URL, **kwargs) -> OipClient:
    session = requests.Session()
    session.mount("http://", fake)
    return OipClient(url, session=session, sleep=lambda s: None, **kwargs)


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [cv2.imread(str(p)) for p in sample_photos]


# --------------------------------------------------------------------------- URLs and codec

@pytest.mark.parametrize("url, base, model, version", [
    ("oip+http://h:8000/v2/models/yolo", "http://h:8000", "yolo", None),
    ("oip+http://h:8000/models/yolo/", "http://h:8000", "yolo", None),
    ("oip+https://h/serving/v2/models/yolo/versions/3", "https://h/serving", "yolo", "3"),
])
def test_url_forms(url, base, model, version):
    parsed = parse_oip_url(url)
    assert (parsed.base, parsed.model, parsed.version) == (base, model, version)


@pytest.mark.parametrize("url", ["http://h:8000/v2/models/yolo", "oip+http://h:8000/", "oip+http:///v2/models/x",
                                 "oip+http://h/v2/models/x?version=1", "oip+http://h/v2/models/x/infer", 42])
def test_bad_urls_say_what_is_expected(url):
    with pytest.raises(ConfigError, match="v2/models/NAME"):
        parse_oip_url(url)


def test_binary_codec_roundtrip():
    batch = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    body, headers = encode_infer_request(batch, input_name="x", datatype="FP16", output_name="y", timeout_us=1500)
    n = int(headers[HEADER_LENGTH])
    header = json.loads(body[:n])
    assert header["parameters"] == {"timeout": 1500}
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(body) - n == batch.size * 2
    assert np.array_equal(np.frombuffer(body[n:], "<f2").reshape(batch.shape), batch.astype(np.float16))
    head = json.dumps({"outputs": [{"name": "y", "datatype": "FP16", "shape": [2, 3],
                                    "parameters": {"binary_data_size": 12}}]}).encode()
    raw = np.arange(6, dtype="<f2").tobytes()
    _, arrays = decode_infer_response(head + raw, {HEADER_LENGTH: str(len(head))})
    assert arrays["y"].dtype == np.float32 and arrays["y"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(CloudError, match="holds 10 more bytes"):
        decode_infer_response(head + raw[:10], {HEADER_LENGTH: str(len(head))})
    with pytest.raises(ConfigError, match="0 means"):
        encode_infer_request(batch, input_name="x", datatype="FP32", output_name="y", timeout_us=0)


# --------------------------------------------------------------------------- inference

def test_fp16_binary_request_and_answer_equal_local(default_detector, photos):
    fake = FakeOip(default_detector)
    with _client(fake) as client:
        dets, metas = client.detect_many(photos, return_meta=True, budget_s=5.0)
    header, batch = fake.infers[0]
    assert len(fake.infers) == 1 and batch.dtype == np.dtype("<f2") and batch.shape == (2, 3, 416, 416)
    assert header["outputs"] == [{"name": "output0", "parameters": {"binary_data": True}}]
    assert 0 < header["parameters"]["timeout"] <= 5_000_000
    req = fake.requests[-1]
    assert req.path_url == "/v2/models/yolo/versions/1/infer" and req.headers["Accept-Encoding"] == "identity"
    local, _ = default_detector.predict(photos)
    for remote, loc in zip(dets, local):
        assert remote.class_id.tolist() == loc.class_id.tolist()
        assert np.abs(remote.xyxy - loc.xyxy).max() < 1.0 and np.abs(remote.confidence - loc.confidence).max() < 0.01
    assert metas[0]["model"] == {"name": "yolo", "sha256": default_detector.info.sha256, "version": "1"}
    assert metas[0]["timing"]["roundtrip_ms"] > 0


def test_fp32_json_answers_decode_the_same(default_detector, photos):
    fake = FakeOip(default_detector, datatype="FP32", binary=False)
    with _client(fake) as client:
        (dets,) = client.detect_many(photos[:1])
    assert fake.infers[0][1].dtype == np.dtype("<f4") and "parameters" not in fake.infers[0][0]
    assert dets == default_detector(photos[0])  # FP32 in, same backend: exactly the local answer


def test_batches_split_at_the_servers_max_batch(default_detector, photos):
    fake = FakeOip(default_detector, max_batch=2)
    with _client(fake) as client:
        dets, metas = client.detect_many(photos * 2 + photos[:1], return_meta=True)
    assert [b.shape[0] for _, b in fake.infers] == [2, 2, 1] and len(dets) == 5
    with _client(FakeOip(default_detector), max_batch=1) as client:
        assert client.verify_model()["max_batch"] == 1


def test_budget_spent_is_not_sent(default_detector, photos):
    fake = FakeOip(default_detector)
    with _client(fake) as client:
        for budget in (0, -1.0):
            with pytest.raises(CloudDeadlineExpiredError, match="not sent"):
                client.detect(photos[0], budget_s=budget)
    assert not fake.infers


def test_server_side_deadline_is_typed_and_not_retried(default_detector, photos):
    fake = FakeOip(default_detector, infer=lambda h, b: (503, {"error": "Request timeout expired"}))
    with _client(fake, max_retries=3) as client:
        with pytest.raises(CloudDeadlineExpiredError, match="nothing was computed") as info:
            client.detect(photos[0], budget_s=0.5)
    assert info.value.status_code == 503 and len(fake.infers) == 1


def test_detect_frames_sends_the_smallest_budget_of_each_request_as_its_timeout(default_detector, photos):
    from yolo_edge.remote.wire import FrameStatus

    fake = FakeOip(default_detector, max_batch=2)
    with _client(fake) as client:
        results = client.detect_frames(photos * 2 + photos[:1], budgets_s=[30.0, 8.0, None, 20.0, None])
        plain = client.detect_many(photos * 2 + photos[:1])
    assert [b.shape[0] for _, b in fake.infers[:3]] == [2, 2, 1]  # frames in requests of the server's max_batch
    timeouts = [h.get("parameters", {}).get("timeout") for h, _ in fake.infers[:3]]
    # what is left of the smallest budget of each request when it is sent (budgets far above the time it takes)
    assert 4e6 < timeouts[0] <= 8e6 and 8e6 < timeouts[1] <= 20e6 and timeouts[2] is None
    assert all(r.status is FrameStatus.OK for r in results)
    assert [r.detections for r in results] == plain  # decoded locally, in the caller's coordinates
    assert {(r.model.name, r.model.sha256) for r in results} == {("yolo", default_detector.info.sha256)}
    assert results[0].timing.batch_frames == 2 and results[4].timing.batch_frames == 1


def test_detect_frames_does_not_send_spent_budgets(default_detector, photos):
    from yolo_edge.remote.wire import FrameStatus

    fake = FakeOip(default_detector)
    with _client(fake) as client:
        results = client.detect_frames(photos + photos, budgets_s=[0, 1.0, -2.0, None])
        assert [r.status for r in results] == [FrameStatus.EXPIRED, FrameStatus.OK, FrameStatus.EXPIRED, FrameStatus.OK]
        assert [b.shape[0] for _, b in fake.infers] == [2]  # the two live frames, in one request
        assert "not sent" in results[0].error and results[0].model.sha256 == default_detector.info.sha256
    unverified = FakeOip(default_detector)
    with _client(unverified) as client:
        results = client.detect_frames(photos, budgets_s=0.0)
    assert [r.status for r in results] == [FrameStatus.EXPIRED] * 2
    assert unverified.requests == []  # every frame spent: no request at all, not even the metadata
    assert results[0].model.sha256 == default_detector.info.sha256  # the model it must serve


def test_detect_frames_answers_the_servers_timeout_as_expired(default_detector, photos):
    from yolo_edge.remote.wire import FrameStatus

    fake = FakeOip(default_detector, max_batch=2)
    fake.infer = lambda h, b: (503, {"error": "Request timeout expired"}) if b.shape[0] == 2 else None
    with _client(fake, max_retries=3) as client:
        results = client.detect_frames(photos + photos[:1], budgets_s=0.5)
    assert [r.status for r in results] == [FrameStatus.EXPIRED, FrameStatus.EXPIRED, FrameStatus.OK]
    assert "nothing was computed" in results[0].error
    assert [b.shape[0] for _, b in fake.infers] == [2, 1]  # not retried


def test_detect_frames_still_raises_what_is_the_endpoints_fault(default_detector, photos):
    fake = FakeOip(default_detector, infer=lambda h, b: (503, {"error": "Server busy"}))
    with _client(fake, max_retries=0) as client:
        with pytest.raises(CloudUnavailableError, match="Server busy"):
            client.detect_frames(photos, budgets_s=1.0)
    with _client(FakeOip(default_detector, sha256="0" * 64)) as client:
        with pytest.raises(CloudModelMismatchError):
            client.detect_frames(photos, budgets_s=1.0)
    with _client(FakeOip(default_detector)) as client:
        with pytest.raises(ConfigError, match="budgets_s"):
            client.detect_frames(photos, budgets_s=[1.0])


def test_overload_is_retried_then_unavailable(default_detector, photos):
    fake = FakeOip(default_detector, infer=lambda h, b: (503, {"error": "Server busy"}))
    with _client(fake, max_retries=2) as client:
        with pytest.raises(CloudUnavailableError, match="Server busy"):
            client.detect(photos[0])
    assert len(fake.infers) == 3


@pytest.mark.parametrize("status, error", [(400, CloudRequestError), (401, CloudAuthError), (500, CloudError)])
def test_statuses_become_typed_errors(default_detector, photos, status, error):
    fake = FakeOip(default_detector, infer=lambda h, b: (status, {"error": "nope"}))
    with _client(fake, token="s3cret") as client:
        with pytest.raises(error, match="nope"):
            client.detect(photos[0])
    assert fake.requests[-1].headers["Authorization"] == "Bearer s3cret"


def test_unreachable_server(default_detector):
    class Refused(BaseAdapter):
        def send(self, request, **kwargs):
            raise requests.ConnectionError("connection refused")

        def close(self):
            pass

    with _client(Refused()) as client:
        assert client.ready() is False and client.wake(wait_s=0) is False
        with pytest.raises(CloudUnavailableError, match="wake"):
            client.verify_model()


def test_malformed_answers_are_cloud_errors(default_detector, photos):
    bad = {"model_name": "yolo", "outputs": [{"name": "output0", "datatype": "FP32", "shape": [1, 7], "data": [0] * 7}]}
    with _client(FakeOip(default_detector, infer=lambda h, b: (200, bad))) as client:
        with pytest.raises(CloudError, match="shape"):
            client.detect(photos[0])
    with _client(FakeOip(default_detector, infer=lambda h, b: (200, b"<html>proxy</html>"))) as client:
        with pytest.raises(CloudError, match="not an inference response"):
            client.detect(photos[0])


# --------------------------------------------------------------------------- model identity

def test_the_verified_version_is_pinned(default_detector, photos):
    fake = FakeOip(default_detector, versions=["1", "10", "2"])
    with _client(fake) as client:
        assert client.verify_model()["version"] == "10"
        client.detect(photos[0])
    assert fake.requests[-1].path_url == "/v2/models/yolo/versions/10/infer"

    def from_other_version(header, batch):
        return 200, {"model_name": "yolo", "model_version": "2", "outputs": []}

    with _client(FakeOip(default_detector, infer=from_other_version)) as client:
        with pytest.raises(CloudModelMismatchError, match="version 2"):
            client.detect(photos[0])


def test_another_model_is_refused(default_detector, photos, caplog):
    other = FakeOip(default_detector, sha256="ab" * 32)
    with _client(other) as client:
        with pytest.raises(CloudModelMismatchError, match="abababababab"):
            client.detect(photos[0])
    assert not other.infers
    with _client(FakeOip(default_detector, sha256="ab" * 32), allow_model_mismatch=True) as client:
        with caplog.at_level(logging.WARNING, logger="yolo_edge.remote.oip"):
            assert len(client.detect_many(photos)) == 2
    assert "allow_model_mismatch" in caplog.text


def test_a_server_that_does_not_say_its_model_is_refused(default_detector):
    with _client(FakeOip(default_detector, sha256=None)) as client:
        with pytest.raises(CloudModelMismatchError, match="export-triton"):
            client.verify_model()


def test_sha256_in_metadata_parameters_when_there_is_no_config(default_detector):
    fake = FakeOip(default_detector, config=False)
    fake_send = fake.send

    def send(request, **kwargs):
        resp = fake_send(request, **kwargs)
        if request.path_url == "/v2/models/yolo":  # KServe-style: identity in the metadata
            resp._content = json.dumps({**json.loads(resp._content), "parameters": {"sha256": fake.sha256}}).encode()
        return resp

    fake.send = send
    with _client(fake) as client:
        assert client.verify_model()["sha256"] == default_detector.info.sha256


@pytest.mark.parametrize("field, value, match", [
    ("inputs", [{"name": "a", "datatype": "FP32", "shape": [-1, 3, 416, 416]}] * 2, "takes 2 inputs"),
    ("inputs", [{"name": "images", "datatype": "UINT8", "shape": [-1, 416, 416, 3]}], "UINT8"),
    ("inputs", [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}], "640"),
    ("outputs", [{"name": "output0", "datatype": "FP32", "shape": [-1, 6, 8400]}], "none has the local model's"),
])
def test_another_interface_is_refused(default_detector, field, value, match):
    fake = FakeOip(default_detector)
    setattr(fake, field, value)
    with _client(fake) as client:
        with pytest.raises(CloudModelMismatchError, match=match):
            client.verify_model()


@pytest.mark.parametrize("field, value", [
    ("inputs", ["images"]),
    ("inputs", [{"name": "images", "datatype": "FP32", "shape": ["batch", 3, 416, 416]}]),
    ("outputs", [{"name": "output0", "datatype": "FP32", "shape": None}]),
])
def test_malformed_metadata_is_a_cloud_error(default_detector, field, value):
    fake = FakeOip(default_detector)
    setattr(fake, field, value)
    with _client(fake) as client:
        with pytest.raises(CloudError, match="malformed model metadata"):
            client.verify_model()


def test_malformed_outputs_are_a_cloud_error(default_detector, photos):
    bad = {"outputs": [{"name": "output0", "datatype": "FP32", "shape": [1, 2535, 85], "data": "zeros"}]}
    with _client(FakeOip(default_detector, infer=lambda h, b: (200, bad))) as client:
        with pytest.raises(CloudError, match="malformed inference response"):
            client.detect(photos[0])
