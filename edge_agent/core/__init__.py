"""The device core: the agent's logic as one sans-I/O state machine, events in, actions out.

Every module here is pure: no clock, thread, socket, sleep or OpenCV. The threaded
:class:`edge_agent.runner.Agent` and the simulator (:mod:`edge_agent.sim`) are its two
drivers. :class:`DeviceCore` (:mod:`edge_agent.core.device`) ties the parts together:

- :mod:`~edge_agent.core.events`: the timestamped events in and the actions out
- :mod:`~edge_agent.core.config`: :class:`CoreConfig`, the core's settings
- :mod:`~edge_agent.core.policy`: the pure routing policy (state -> route)
- :mod:`~edge_agent.core.frames`, :mod:`~edge_agent.core.window`: frames, their outcomes and the release window
- :mod:`~edge_agent.core.lane`: the local workers; :mod:`~edge_agent.core.dispatch`: the cloud queue and batches
- :mod:`~edge_agent.core.pool`: the cloud endpoints (over :mod:`yolo_edge.remote.balancer`)
- :mod:`~edge_agent.core.link`: the uplink and the encoding ladder; :mod:`~edge_agent.core.estimators`
- :mod:`~edge_agent.core.routing`, :mod:`~edge_agent.core.hedge`, :mod:`~edge_agent.core.answers`
- :mod:`~edge_agent.core.stats`, :mod:`~edge_agent.core.delivery`: counting what was released and delivered

>>> DeviceCore(CoreConfig(), cloud=False).handle(FrameCaptured(at=0.0, seq=0))
[RunLocal(seq=0)]
"""

from __future__ import annotations

from .device import (
    Action, Close, CloudDone, CoreConfig, CoreSnapshot, DeviceCore, Encoded, EndpointSpec, Event, Failure, Flush,
    FrameCaptured, FrameSkipped, LateAnswer, LocalDone, LocalReady, Release, RunLocal, SendBatch, Tick, Uploaded,
    Wake, WakeDone,
)

__all__ = [
    "CoreConfig", "DeviceCore", "CoreSnapshot", "EndpointSpec", "Failure",
    "FrameCaptured", "FrameSkipped", "LocalReady", "LocalDone", "Encoded", "Uploaded", "CloudDone", "WakeDone", "Tick",
    "Close", "Flush", "RunLocal", "SendBatch", "Wake", "Release", "LateAnswer", "Event", "Action",
]
