"""Progress on stderr for the agent's long commands (demo, simulate, replay-spool).

Bars go to stderr, so ``--json`` (which owns stdout) keeps them; every other line a command
writes while a bar runs goes through :func:`say` (tqdm's lock), above the bar, never into
its line. ``enabled=False`` (``--no-progress``) gives a bar that draws nothing.

>>> list(along(iter("abc"), 3, "letters", enabled=False))
['a', 'b', 'c']
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

__all__ = ["bar", "say", "follow_sinks", "along"]


def bar(total: int | None, desc: str, *, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr (a silent one when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                mininterval=0.5)


def say(line: str, *, file: Any = None) -> None:
    """Print ``line`` (default: on stderr) above any running bar."""
    from tqdm import tqdm

    tqdm.write(line, file=file or sys.stderr)


@contextlib.contextmanager
def follow_sinks(sinks: Sequence[Any], *, enabled: bool = True, every_s: float = 0.5) -> Iterator[Any]:
    """A bar of the results the sinks have settled (delivered, rejected or lost) of those they hold,
    updated from their :meth:`report` every ``every_s`` until the block ends (e.g. while they drain)."""

    def settled() -> tuple[int, int]:
        done = waiting = 0
        for s in sinks:
            r = s.report()
            done += r.delivered + r.rejected + r.lost
            waiting += r.spooled
        return done, waiting

    done, waiting = settled()
    progress = bar(done + waiting, "replay", unit="result", enabled=enabled)
    stop = threading.Event()

    def loop(update: Callable[[], None]) -> None:
        while not stop.wait(every_s):
            update()

    def update() -> None:
        done, waiting = settled()
        progress.total = max(progress.total or 0, done + waiting)
        progress.update(done - progress.n)

    thread = threading.Thread(target=loop, args=(update,), name="edge-agent-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        update()  # the final counts
        progress.close()


def along(items: Iterator[Any], total: int | None, desc: str, *, status: Callable[[], str] | None = None,
          enabled: bool = True, unit: str = "frame") -> Iterator[Any]:
    """``items`` unchanged, with a bar on stderr counting them; ``status()`` is shown beside it."""
    progress = bar(total, desc, unit=unit, enabled=enabled)
    try:
        for item in items:
            yield item
            if status is not None and enabled:
                progress.set_postfix_str(status(), refresh=False)
            progress.update()
    finally:
        progress.close()
