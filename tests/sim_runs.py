"""Simulator runs for the tests: each (scenario, seed, strategy) once, spread over the cores.

A check over 20 seeds is 20 independent, deterministic simulations; :meth:`SimRuns.prime`
runs the missing ones in worker processes (one per core, started once per test module)
before the test reads them one by one. The results are the same objects ``simulate``
returns, pickled back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Hashable, Iterable

Key = tuple


def simulate_key(key: Key):
    """``("run", name, seed, strategy)`` or ``("bound", name, seed)``: one result."""
    from edge_agent.sim.oracle import oracle_bound
    from edge_agent.sim import simulate
    from edge_agent.sim.traces import sample, scenario

    if key[0] == "run":
        _, name, seed, strategy = key
        return simulate(scenario(name, seed=seed), strategy=strategy)
    _, name, seed = key
    return oracle_bound(sample(scenario(name, seed=seed)))


def _quiet() -> None:
    logging.getLogger("edge_agent").setLevel(logging.ERROR)  # as the tests' own caplog does


class SimRuns:
    """A cache of simulator results that fills itself on every core."""

    def __init__(self, compute: Callable[[Key], object] = simulate_key) -> None:
        self._compute = compute
        self._done: dict[Hashable, object] = {}
        self._pool: ProcessPoolExecutor | None = None
        self.workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

    def run(self, name: str, seed: int, strategy: str = "policy"):
        return self.get(("run", name, seed, strategy))

    def bound(self, name: str, seed: int):
        return self.get(("bound", name, seed))

    def get(self, key: Key):
        if key not in self._done:
            self._done[key] = self._compute(key)
        return self._done[key]

    def prime(self, keys: Iterable[Key]) -> None:
        """Compute every missing key, in parallel where there is more than one core."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._done))
        if len(missing) < 2 or self.workers < 2:
            for k in missing:
                self.get(k)
            return
        if self._pool is None:
            # spawn, not fork: the test process may have threads (servers of other tests) running
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_quiet)
        for k, result in zip(missing, self._pool.map(self._compute, missing)):
            self._done[k] = result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
