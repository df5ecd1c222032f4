"""Work-conserving adaptive batching: BentoML's batcher never holds a request back while the model is idle.

BentoML 1.4's ``CorkDispatcher`` (one per batchable API) starts a batch when the model is
free, unless it decides to wait for more requests first: it waits while
``n * (age + 1 ms + per-item time) <= 0.95 * wait``, where ``wait`` is the average time
the recent batches' first requests spent queued. That average feeds on itself: after a
burst (requests queued behind a running batch), every request that arrives alone is held
back for about that long, its wait is recorded, and the average stays. Measured with the
no-inference backend on one core (benchmarks/service_bench.py's serving path): 4 ms a
request at concurrency 1, then 10-14 ms for good after one burst at concurrency 4; with the
real model the learnt wait after a burst at concurrency 16 is hundreds of milliseconds.

Batches still form on their own: requests that arrive while a batch runs queue up and go
together in the next one (``max_batch_size``). So the wait is kept at zero; the per-item
and per-batch times BentoML learns (for its 503 when ``max_latency_ms`` cannot be met) are
untouched. :func:`install` is called by ``bentos/service.py`` at import, before BentoML
builds its dispatchers in the worker.
"""

from __future__ import annotations

import logging

__all__ = ["install"]

logger = logging.getLogger(__name__)


def install() -> bool:
    """Make new BentoML dispatchers work-conserving; False (and a warning) if BentoML's internals moved."""
    try:
        from bentoml._internal.marshal import dispatcher
        base = dispatcher.Optimizer
    except (ImportError, AttributeError) as exc:
        logger.warning("cannot make BentoML's batching work-conserving (%s): a lone request may wait for company", exc)
        return False
    if getattr(base, "work_conserving", False):
        return True
    if not callable(getattr(base, "trigger_refresh", None)):
        logger.warning("BentoML's batching optimizer has changed: leaving it as it is")
        return False

    class WorkConserving(base):  # type: ignore[misc, valid-type]
        """BentoML's optimizer with the learnt wait for company held at zero."""

        work_conserving = True

        def trigger_refresh(self) -> None:
            super().trigger_refresh()
            self.wait = 0

    dispatcher.Optimizer = WorkConserving
    return True
