"""What became of the results a sink was given (pure: counts in, verdict out).

Every result handed to a sink ends as exactly one of: delivered (it reached the
destination), spooled (kept on local disk, delivered by the next run or
``edge-agent replay-spool``), rejected (the destination refused it as invalid; kept in
the sink's rejected file) or lost (an I/O error kept it from both). The run's
:class:`Delivery` is the worst over all sinks, and is the exit code of ``edge-agent run``.

>>> ok = SinkReport(name="jsonl:out.jsonl", received=3, delivered=3)
>>> late = SinkReport(name="webhook:http://127.0.0.1:8080/hook", received=3, delivered=1, spooled=2)
>>> Delivery.of([ok]).exit_code, Delivery.of([ok, late]).exit_code
(0, 3)
>>> Delivery.of([ok, late]).value
'spooled'
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Iterable

__all__ = ["Delivery", "SinkReport"]


@dataclass(frozen=True, kw_only=True)
class SinkReport:
    """One sink's counts; a snapshot while running, final after ``close()``.

    After close, ``received`` plus what earlier runs had spooled equals ``delivered +
    spooled + rejected + lost + skipped``: every result is accounted for.
    """

    name: str  # kind and target, without credentials (safe as a metrics label)
    received: int = 0  # results handed to the sink by this run
    delivered: int = 0  # results that reached the destination (replayed ones included)
    replayed: int = 0  # of ``delivered``: results an earlier run had spooled
    spooled: int = 0  # results waiting in the spool for the next run or replay-spool
    rejected: int = 0  # refused by the destination as invalid (kept in ``rejected_file``)
    lost: int = 0  # neither delivered nor kept: an I/O error (logged at ERROR)
    skipped: int = 0  # results this sink does not take by design (annotated: dropped frames)
    retries: int = 0  # delivery attempts that failed and were retried
    spool: str | None = None
    rejected_file: str | None = None
    error: str | None = None  # the sink failed to close: its counts cannot be trusted

    @property
    def delivery(self) -> "Delivery":
        if self.lost or self.rejected or self.error:
            return Delivery.FAILED
        return Delivery.SPOOLED if self.spooled else Delivery.COMPLETE

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def render(self) -> str:
        """One line of the summary printed at exit."""
        parts = [f"delivered {self.delivered}" + (f" (of them {self.replayed} from an earlier run)"
                                                  if self.replayed else "")]
        for label in ("spooled", "rejected", "lost", "skipped"):
            if getattr(self, label):
                parts.append(f"{label} {getattr(self, label)}")
        line = f"  sink {self.name}: " + "  ".join(parts)
        if self.spooled:
            line += f"  -> waiting in {self.spool}"
        if self.rejected:
            line += f"  -> refused ones in {self.rejected_file}"
        if self.error:
            line += f"  CLOSE FAILED: {self.error}"
        return line


class Delivery(enum.Enum):
    """The run's verdict over all sinks; ``exit_code`` is what ``edge-agent run`` returns."""

    COMPLETE = "complete"  # every result reached every sink's destination
    SPOOLED = "spooled"  # some results wait in a spool (none lost)
    FAILED = "failed"  # some results were lost or refused by a destination

    @property
    def exit_code(self) -> int:
        return {Delivery.COMPLETE: 0, Delivery.SPOOLED: 3, Delivery.FAILED: 4}[self]

    @classmethod
    def of(cls, reports: Iterable[SinkReport]) -> "Delivery":
        worst = cls.COMPLETE
        for r in reports:
            if r.delivery is cls.FAILED:
                return cls.FAILED
            if r.delivery is cls.SPOOLED:
                worst = cls.SPOOLED
        return worst
