"""bentos/dispatch.py: BentoML's batcher keeps learning the model's time, never a wait for company."""

from __future__ import annotations

import bentos.service  # noqa: F401  (installs it, as the worker does)
from bentoml._internal.marshal import dispatcher

from bentos import dispatch


def test_the_service_installs_it_once():
    assert getattr(dispatcher.Optimizer, "work_conserving", False)
    first = dispatcher.Optimizer
    assert dispatch.install() and dispatcher.Optimizer is first  # idempotent: no subclass of a subclass


def test_learnt_wait_stays_zero_while_model_times_are_learnt():
    opt = dispatcher.Optimizer(max_latency=5.0)
    for n, duration, wait in [(1, 0.05, 0.3), (2, 0.10, 0.4), (4, 0.20, 0.5), (8, 0.40, 0.6)] * 3:
        opt.o_stat.append((n, duration, wait))
    opt.trigger_refresh()
    assert opt.wait == 0
    assert abs(opt.o_a - 0.05) < 1e-6 and opt.o_b < 1e-6  # 50 ms per item, as recorded


def test_a_dispatcher_built_now_does_not_wait_for_company():
    d = dispatcher.CorkDispatcher(max_latency_in_ms=5000, max_batch_size=8, fallback=lambda: None)
    d.optimizer.o_stat.extend([(1, 0.001, 0.01)] * 10)  # lone requests that had waited 10 ms
    d.optimizer.trigger_refresh()
    assert d.optimizer.wait == 0
