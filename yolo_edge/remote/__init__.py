"""The SDK's remote layer: everything that talks to an inference service over the network.

Imports go one way, clients -> transport -> wire, never back:

- :mod:`~yolo_edge.remote.wire`: the request options, the result envelope and the limits, defined
  once (the service imports it too); :mod:`~yolo_edge.remote.values` checks the values in them
- :mod:`~yolo_edge.remote.transport`: one HTTP transport under both clients (retries, backoff,
  Retry-After, error mapping), with :mod:`~yolo_edge.remote.upload_timing`
- :mod:`~yolo_edge.remote.cloud`: :class:`~yolo_edge.CloudClient` for the BentoML service
  (:mod:`~yolo_edge.remote.cloud_upload` prepares its uploads)
- :mod:`~yolo_edge.remote.oip`: :class:`~yolo_edge.OipClient` for any Open Inference Protocol
  (KServe v2) endpoint (:mod:`~yolo_edge.remote.oip_wire`, :mod:`~yolo_edge.remote.oip_model`)
- :mod:`~yolo_edge.remote.endpoint`, :mod:`~yolo_edge.remote.endpoint_url`: one endpoint spec, either kind
- :mod:`~yolo_edge.remote.balancer`: the sans-I/O balancer the SDK pool and the device core both drive,
  with :mod:`~yolo_edge.remote.health`
- :mod:`~yolo_edge.remote.pool`: :class:`~yolo_edge.EndpointPool` (:mod:`~yolo_edge.remote.pool_members`,
  :mod:`~yolo_edge.remote.failover`)

This package imports none of them itself, so ``yolo_edge.remote.wire`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def __getattr__(name: str) -> Any:
    # a submodule used as an attribute (yolo_edge.remote.wire...) without importing it first
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
