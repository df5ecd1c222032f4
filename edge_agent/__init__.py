"""edge_agent: local-first YOLO inference that offloads overflow frames to the cloud.

The pure parts (:mod:`edge_agent.policy`, :mod:`edge_agent.estimators`,
:mod:`edge_agent.breaker`, :mod:`edge_agent.reorder`) hold the decisions; the runner and
the simulator drive the same functions, one with threads and a wall clock, the other with
a virtual clock over traces.

    >>> from edge_agent.policy import PolicyConfig, Observation, CloudState, decide
    >>> d = decide(Observation(frame_age_s=0.0, local_queued=0, local_busy=0,
    ...                        local_service_s=0.04, cloud_state=CloudState.READY,
    ...                        cloud_rtt_s=0.1), PolicyConfig(latency_budget_s=0.5))
    >>> d.route.value
    'local'
"""

from __future__ import annotations

from .policy import CloudState, Decision, Observation, PolicyConfig, Route, decide

__all__ = ["CloudState", "Decision", "Observation", "PolicyConfig", "Route", "decide"]
