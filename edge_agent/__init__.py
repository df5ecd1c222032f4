"""edge_agent: local-first YOLO inference that offloads overflow frames to the cloud.

All of the device's logic lives in one sans-I/O state machine,
:class:`edge_agent.core.DeviceCore` (with the pure :mod:`edge_agent.core.policy`,
:mod:`edge_agent.core.pool` (over the SDK's :mod:`yolo_edge.remote.balancer`), :mod:`yolo_edge.remote.health` and :mod:`edge_agent.core.estimators` it uses): timestamped events
in, actions out. :class:`edge_agent.runner.Agent` drives it with threads, the real
detector and cloud client and the wall clock; :mod:`edge_agent.sim` drives the very same
core with an event heap and sampled service times on a virtual clock.

    >>> from edge_agent.core import CoreConfig, DeviceCore, FrameCaptured
    >>> DeviceCore(CoreConfig(), cloud=False).handle(FrameCaptured(at=0.0, seq=0))
    [RunLocal(seq=0)]
"""

from __future__ import annotations

from .core import CoreConfig, DeviceCore
from .core.frames import FrameResult, Outcome, Reason, Route
from .core.policy import CloudState, Decision, Observation, PolicyConfig, decide

__all__ = ["CloudState", "CoreConfig", "Decision", "DeviceCore", "FrameResult", "Observation", "Outcome",
           "PolicyConfig", "Reason", "Route", "decide"]
