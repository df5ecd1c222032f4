"""The simulator: the device core driven on a virtual clock over traces.

- :mod:`~edge_agent.sim.simulator`: the discrete-event driver of :class:`~edge_agent.core.DeviceCore`
  and the simulated cloud endpoints (:func:`simulate`, :func:`simulate_fleet`)
- :mod:`~edge_agent.sim.traces`: scenarios (arrivals, service times, outages, uplinks)
- :mod:`~edge_agent.sim.uplink`: real cellular uplink traces (bundled in ``uplinks/``) and a link that replays one
- :mod:`~edge_agent.sim.oracle`: the best any policy could do on a trace
- :mod:`~edge_agent.sim.livesim`: a trace replayed through the real threaded agent (fidelity checks)

Importing this package loads the simulator, not the threaded agent (``livesim`` does).

>>> from edge_agent.sim.traces import scenario
>>> simulate(scenario("steady", duration_s=5, warmup_s=1)).unaccounted
0
"""

from __future__ import annotations

from .simulator import STRATEGIES, SimCloud, SimSummary, compare, core_config_for, simulate, simulate_fleet

__all__ = ["simulate", "simulate_fleet", "SimSummary", "SimCloud", "STRATEGIES", "core_config_for", "compare"]
