"""The Open Inference Protocol (KServe v2) on the wire: endpoint URLs, binary tensors, errors.

Pure functions, no sockets: :mod:`yolo_edge.remote.oip` does the I/O. What is encoded here:

- Endpoint URLs: ``oip+http://HOST:PORT[/PREFIX]/v2/models/NAME[/versions/V]`` (``https``
  too; ``v2/`` may be left out). The part after ``oip+`` is the model's own OIP URL.
- Inference requests with the binary tensor extension: a JSON header, then the raw
  little-endian tensor bytes; the header's length goes in ``Inference-Header-Content-Length``,
  each input says its byte size in ``parameters.binary_data_size``, and each output asks
  for ``parameters.binary_data: true``. The request ``timeout`` parameter (Triton's
  schedule-policy extension, microseconds) carries the frame's remaining budget.
- Responses in either form: binary (the same header scheme) or plain JSON ``data``.
- Server errors: :mod:`yolo_edge.remote.transport` types them as for any endpoint; here Triton's
  "Request timeout expired" becomes :class:`~yolo_edge.errors.CloudDeadlineExpiredError`.

>>> parse_oip_url("oip+http://127.0.0.1:8000/v2/models/yolo")
OipUrl(base='http://127.0.0.1:8000', model='yolo', version=None)
>>> parse_oip_url("oip+https://gpu.example.com/serving/models/yolo/versions/2").model_path
'/v2/models/yolo/versions/2'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit

import numpy as np

from ..errors import CloudDeadlineExpiredError, CloudError, ConfigError
from .endpoint_url import OIP_SCHEMES as ENDPOINT_OIP_SCHEMES
from .endpoint_url import check_endpoint_url

__all__ = [
    "OIP_SCHEMES",
    "OipUrl",
    "parse_oip_url",
    "encode_infer_request",
    "decode_infer_response",
    "refine_error",
    "NUMPY_DTYPES",
    "HEADER_LENGTH",
    "trailing_dims_match",
]

OIP_SCHEMES = ("oip+http://", "oip+https://")
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Open Inference Protocol datatypes a YOLO model's tensors may have, as little-endian numpy types
NUMPY_DTYPES = {"FP32": np.dtype("<f4"), "FP16": np.dtype("<f2"), "FP64": np.dtype("<f8")}
_PATH = re.compile(r"^(?P<prefix>.*?)/(?:v2/)?models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$")
#: how Triton words a request rejected by its queue policy (timeout_action: REJECT)
_DEADLINE_TEXT = ("request timeout expired", "timeout expired")


@dataclass(frozen=True)
class OipUrl:
    """Where one model is served: the server's base URL, the model's name and, if pinned, version."""

    base: str
    model: str
    version: str | None = None

    @property
    def model_path(self) -> str:
        path = f"/v2/models/{quote(self.model, safe='')}"
        return path + (f"/versions/{quote(self.version, safe='')}" if self.version else "")

    def with_version(self, version: str) -> "OipUrl":
        return OipUrl(self.base, self.model, version)

    def __str__(self) -> str:
        return "oip+" + self.base + self.model_path


def parse_oip_url(url: str) -> OipUrl:
    """``oip+http(s)://HOST[:PORT][/PREFIX]/v2/models/NAME[/versions/V]`` -> :class:`OipUrl`."""
    if not isinstance(url, str) or not url.startswith(OIP_SCHEMES):
        raise ConfigError(f"an Open Inference Protocol endpoint looks like 'oip+http://HOST:PORT/v2/models/NAME', "
                          f"got {url!r}")
    check_endpoint_url(url, what="Open Inference Protocol endpoint", schemes=ENDPOINT_OIP_SCHEMES)
    parts = urlsplit(url[len("oip+"):])
    match = _PATH.match(parts.path)
    if not parts.netloc or match is None or parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: expected 'oip+http://HOST:PORT[/PREFIX]/v2/models/NAME[/versions/V]' "
                          "(the model's own OIP URL with 'oip+' in front)")
    return OipUrl(f"{parts.scheme}://{parts.netloc}{match['prefix']}", match["model"], match["version"])


def encode_infer_request(
    batch: np.ndarray,
    *,
    input_name: str,
    datatype: str,
    output_name: str,
    timeout_us: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one binary-tensor inference request for ``batch``.

    ``batch`` is cast to ``datatype`` ("FP32" or "FP16") in little-endian byte order;
    ``timeout_us`` becomes the request's ``timeout`` parameter.
    """
    if datatype not in ("FP32", "FP16"):
        raise ConfigError(f"the input datatype must be FP32 or FP16, got {datatype!r}")
    raw = np.ascontiguousarray(batch, dtype=NUMPY_DTYPES[datatype]).tobytes()
    header: dict[str, Any] = {
        "inputs": [{"name": input_name, "shape": [int(d) for d in batch.shape], "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
    }
    if timeout_us is not None:
        if timeout_us < 1:
            raise ConfigError(f"timeout_us must be >= 1 (0 means 'no timeout' to Triton), got {timeout_us}")
        header["parameters"] = {"timeout": int(timeout_us)}
    head = json.dumps(header, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(head)),
        # raw float tensors barely compress: gzip would only cost CPU on both ends
        "Accept-Encoding": "identity",
    }
    return head + raw, headers


def decode_infer_response(body: bytes, headers: Mapping[str, str], url: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON header, {output name: float32 array}) from a binary or plain-JSON answer."""
    length = headers.get(HEADER_LENGTH)
    try:
        n = int(length) if length is not None else len(body)
        header = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise CloudError(f"{url} answered something that is not an inference response: {body[:120]!r}") from exc
    outputs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(outputs, list):
        raise CloudError(f"{url} answered {str(header)[:200]!r}: expected a JSON object with 'outputs'")
    try:
        return header, _arrays(outputs, body, n, url)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # JSON of an unexpected form
        raise CloudError(f"{url}: malformed inference response ({type(exc).__name__}: {exc})") from exc


def _arrays(outputs: list, body: bytes, offset: int, url: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for out in outputs:
        name, dtype, shape = _output_spec(out, url)
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if offset + int(size) > len(body) or int(size) != dtype.itemsize * int(np.prod(shape)):
                raise CloudError(f"{url}: output {name!r} says {size} bytes of {out.get('datatype')} {shape}, "
                                 f"but the answer holds {len(body) - offset} more bytes")
            arr = np.frombuffer(body, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
            offset += int(size)
        elif "data" in out:
            arr = np.asarray(out["data"], dtype=dtype).reshape(shape)
        else:
            raise CloudError(f"{url}: output {name!r} carries neither binary data nor 'data'")
        arrays[name] = arr.astype(np.float32)
    return arrays


def _output_spec(out: Any, url: str) -> tuple[str, np.dtype, list[int]]:
    if not isinstance(out, dict) or not isinstance(out.get("name"), str) or not isinstance(out.get("shape"), list):
        raise CloudError(f"{url}: malformed output entry {str(out)[:200]!r}")
    dtype = NUMPY_DTYPES.get(str(out.get("datatype")))
    if dtype is None:
        raise CloudError(f"{url}: output {out['name']!r} has datatype {out.get('datatype')!r}; "
                         f"expected one of {sorted(NUMPY_DTYPES)}")
    return out["name"], dtype, [int(d) for d in out["shape"]]


def refine_error(error: CloudError) -> CloudError:
    """A non-2xx answer's typed error, read as an OIP server means it (the transport's refine hook).

    Triton words a request its queue policy dropped (``timeout_action: REJECT``) as
    "Request timeout expired", with 503 or 400: the frame's deadline passed before its
    batch started, nothing was computed. That is a :class:`CloudDeadlineExpiredError`
    (not retried: its deadline is gone), not the endpoint's fault. Other errors stay.
    """
    text = str(error)
    if isinstance(error, CloudDeadlineExpiredError) or not any(t in text.lower() for t in _DEADLINE_TEXT):
        return error
    return CloudDeadlineExpiredError(text + " (the request's deadline passed in the server's queue, "
                                     "before its batch started: nothing was computed)", status_code=error.status_code)


def trailing_dims_match(served: Sequence[int], local: Sequence[int | str | None]) -> bool:
    """Whether a served shape (batch first, -1 where variable) fits the local one past the batch axis."""
    if len(served) != len(local):
        return False
    return all(not isinstance(want, int) or got in (want, -1) for got, want in zip(served[1:], local[1:]))
