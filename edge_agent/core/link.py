"""The device's uplink as a resource of the core: bytes, goodput and the encoding ladder (pure).

Every request to every endpoint leaves through one uplink, and on a cellular device it is
often the narrowest part of the path: 1-13 Mbit/s on average, a fraction of that for
seconds. A frame's time to the cloud is then mostly its bytes and the bytes queued ahead
of it, not a round trip. :class:`Uplink` keeps what the device knows of its link:

- the uploads on it now (bytes, when each started) and, from the ones that finished, the
  link's **goodput**: bytes over the time the link was busy (the union of the upload
  intervals, so uploads that overlap are not counted twice);
- when it will be free: the uploads on it finish at their projected time; one overdue says
  more than the samples do (the link stalled), so the projection moves out with it;
- when an upload of ``n`` more bytes queued now would have left.

The core sends one request at a time onto the link (the next starts when the one before is
about to finish): a FIFO link gives the oldest frame its answer soonest, and leaves the
frames not yet sent free to go local, or to a smaller encoding, as the link changes.

:class:`Ladder` is the list of encodings a frame may be uploaded in, best first: lossless
PNG (the cloud's answer then equals the local one) and JPEG of falling quality down to a
floor. :class:`FrameSizes` estimates a frame's bytes at each rung from the frames actually
encoded (the frames of one camera are alike), so the core can plan before encoding.

>>> link = Uplink(prior_bps=8e6, safety=1.0)   # 1 MB/s until measured
>>> round(link.upload_end(0.0, 100_000), 3)
0.1
>>> round(link.start(1, 0.0, 100_000), 3), round(link.free_at(0.05), 3)
(0.1, 0.1)
>>> link.finish(1, 0.2)           # it took twice as long: 500 kB/s
0.2
>>> round(link.goodput(0.2))
500000
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from yolo_edge.errors import ConfigError

from .estimators import WindowedQuantile

__all__ = ["Rung", "Ladder", "FrameSizes", "Uplink", "DEFAULT_LADDER"]


@dataclass(frozen=True, order=True)
class Rung:
    """One encoding: lossless PNG (``quality`` None) or JPEG of ``quality``."""

    quality: int | None = None

    @classmethod
    def parse(cls, value: "str | int | Rung | None") -> "Rung":
        """``"png"``, ``"jpeg90"``/``"jpeg:90"``/``90``."""
        if isinstance(value, Rung):
            return value
        if value is None or (isinstance(value, str) and value.strip().lower() in ("png", "lossless")):
            return cls(None)
        if isinstance(value, int) and not isinstance(value, bool):
            q = value
        else:
            m = re.fullmatch(r"\s*(?:jpe?g)?[:=]?\s*(\d{1,3})\s*", str(value).lower())
            if not m:
                raise ConfigError(f"an upload encoding is 'png' (lossless) or a JPEG quality like 'jpeg90' or 90, "
                                  f"got {value!r}")
            q = int(m.group(1))
        if not 1 <= q <= 100:
            raise ConfigError(f"a JPEG quality must be within 1..100, got {q}")
        return cls(q)

    @property
    def exact(self) -> bool:
        """Lossless: the cloud sees the very pixels the local model would."""
        return self.quality is None

    @property
    def name(self) -> str:
        return "png" if self.quality is None else f"jpeg{self.quality}"

    def __str__(self) -> str:
        return self.name


#: best first: lossless while the link allows, else the best JPEG that fits, down to 70
DEFAULT_LADDER = ("png", "jpeg95", "jpeg90", "jpeg80", "jpeg70")

#: a rung's bytes relative to PNG (zlib 1) of the same frame at the model's input size,
#: measured on real photos (BENCHMARKS.md, "Encoding ladder"); used until a rung is measured
_PRIOR_RATIO = {None: 1.0, 100: 0.55, 95: 0.27, 90: 0.19, 85: 0.155, 80: 0.13, 75: 0.115, 70: 0.10, 60: 0.085,
                50: 0.075}
#: PNG bytes of a photo at a 416-pixel model input, before any frame is measured
_PRIOR_PNG_BYTES = 220_000


def _prior_ratio(q: int | None) -> float:
    if q in _PRIOR_RATIO:
        return _PRIOR_RATIO[q]
    known = sorted(k for k in _PRIOR_RATIO if k is not None)
    below = max((k for k in known if k <= q), default=known[0])
    above = min((k for k in known if k >= q), default=known[-1])
    if below == above:
        return _PRIOR_RATIO[below]
    t = (q - below) / (above - below)
    return _PRIOR_RATIO[below] + t * (_PRIOR_RATIO[above] - _PRIOR_RATIO[below])


@dataclass(frozen=True)
class Ladder:
    """The encodings a frame may be uploaded in, best first; the last is the floor."""

    rungs: tuple[Rung, ...]

    @classmethod
    def parse(cls, values: "Iterable[str | int | Rung] | str | None") -> "Ladder":
        if values is None:
            values = DEFAULT_LADDER
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        rungs = tuple(Rung.parse(v) for v in values)
        if not rungs:
            raise ConfigError("the upload ladder needs at least one encoding, e.g. ['png', 'jpeg90', 'jpeg70']")
        if len(set(rungs)) != len(rungs):
            raise ConfigError(f"the upload ladder lists an encoding twice: {[r.name for r in rungs]}")
        ordered = sorted(rungs, key=lambda r: (r.quality is not None, -(r.quality or 0)))
        if list(rungs) != ordered:
            raise ConfigError(f"list the upload ladder best first (png, then JPEG qualities falling), got "
                              f"{[r.name for r in rungs]}; did you mean {[r.name for r in ordered]}?")
        return cls(rungs)

    @property
    def floor(self) -> Rung:
        return self.rungs[-1]

    def __iter__(self):
        return iter(self.rungs)

    def __len__(self) -> int:
        return len(self.rungs)


class FrameSizes:
    """Bytes a frame takes at each rung, learned from the frames actually encoded.

    A rung measured recently answers with a high quantile of its own sizes; one never
    measured is scaled from the nearest measured rung by the typical ratio between them.
    """

    def __init__(self, *, window: int = 32, quantile: float = 0.75, prior_png_bytes: int = _PRIOR_PNG_BYTES) -> None:
        self.quantile = quantile
        self.prior_png_bytes = prior_png_bytes
        self._window = window
        self._by_rung: dict[Rung, WindowedQuantile] = {}

    def update(self, rung: Rung, nbytes: int) -> None:
        if not isinstance(nbytes, int) or nbytes <= 0:
            raise ConfigError(f"an encoded frame's size must be a positive number of bytes, got {nbytes!r}")
        q = self._by_rung.get(rung)
        if q is None:
            q = self._by_rung[rung] = WindowedQuantile(self._window)
        q.update(float(nbytes), at=0.0)

    def estimate(self, rung: Rung) -> int:
        own = self._by_rung.get(rung)
        if own is not None and own.samples:
            return int(own.quantile(self.quantile))
        measured = [(r, q) for r, q in self._by_rung.items() if q.samples]
        if measured:
            # the nearest measured rung, scaled by the typical ratio between the two
            ref, q = min(measured, key=lambda rq: abs(_prior_ratio(rq[0].quality) - _prior_ratio(rung.quality)))
            return int(q.quantile(self.quantile) * _prior_ratio(rung.quality) / _prior_ratio(ref.quality))
        return int(self.prior_png_bytes * _prior_ratio(rung.quality))

    def measured(self) -> dict[str, int]:
        return {r.name: int(q.quantile(0.5)) for r, q in sorted(self._by_rung.items()) if q.samples}


@dataclass
class _Upload:
    started: float
    nbytes: int
    projected_end: float


class Uplink:
    """What the device knows of its one uplink. Not thread-safe: the device core calls it in time order.

    ``prior_bps`` is the goodput assumed before anything is measured (None: fast enough not to
    matter, until measured). The goodput is measured over the uploads that finished in the last
    ``horizon_s`` (and always the newest ``keep``, however old), and planned with ``safety`` times it.
    """

    def __init__(self, *, prior_bps: float | None = None, horizon_s: float = 2.0, keep: int = 3,
                 safety: float = 0.9, lead_s: float = 0.02) -> None:
        if prior_bps is not None and not (math.isfinite(prior_bps) and prior_bps > 0):
            raise ConfigError(f"the uplink's prior goodput must be a positive number of bits/s or None, got {prior_bps!r}")
        if not 0 < safety <= 1:
            raise ConfigError(f"uplink safety must be in (0, 1], got {safety!r}")
        self.prior_Bps = None if prior_bps is None else prior_bps / 8.0
        self.horizon_s, self.keep, self.safety, self.lead_s = horizon_s, keep, safety, lead_s
        self._uploads: dict[int, _Upload] = {}
        self._done: deque[tuple[float, float, int]] = deque()  # (start, end, bytes) of finished uploads
        self._cache: tuple[float, float | None] | None = None
        self.sent_bytes = 0
        self.uploads = 0
        self.busy_s = 0.0  # time with at least one upload on the link, from the finished ones
        self._busy_until = -math.inf
        self._rtts: deque[float] = deque(maxlen=16)  # round trips the driver reported with finished uploads
        self.last_finish: float | None = None

    # -- the uploads ----------------------------------------------------------------------
    def start(self, request: int, now: float, nbytes: int) -> float:
        """An upload of ``nbytes`` goes onto the link now; returns when it should have left."""
        g = self.plan_Bps(now)
        end = now if g is None else self._leave(now, nbytes, g)
        self._uploads[request] = _Upload(now, int(nbytes), end)
        self.sent_bytes += int(nbytes)
        self.uploads += 1
        return end

    def resize(self, request: int, nbytes: int, now: float) -> None:
        """The upload of ``request`` is ``nbytes`` once encoded (it was planned at an estimate): its
        projected end moves by the difference, and so do those of the uploads queued behind it."""
        up = self._uploads.get(request)
        if up is None or nbytes <= 0 or nbytes == up.nbytes:
            return
        g = self.plan_Bps(now)
        if g is not None:
            shift = (int(nbytes) - up.nbytes) / g
            for other in self._uploads.values():
                if other.projected_end >= up.projected_end and other is not up:
                    other.projected_end += shift
            up.projected_end += shift
        self.sent_bytes += int(nbytes) - up.nbytes
        up.nbytes = int(nbytes)

    def finish(self, request: int, at: float, nbytes: int | None = None, rtt_s: float | None = None) -> float | None:
        """The upload of ``request`` has left the device (all its bytes acknowledged at ``at``);
        its duration. ``rtt_s``, the connection's round trip, is the part of the wait for the
        acknowledgement that was not the link carrying bytes."""
        up = self._uploads.pop(request, None)
        if up is None:
            return None
        if nbytes is not None and nbytes > 0 and nbytes != up.nbytes:
            self.sent_bytes += int(nbytes) - up.nbytes
            up.nbytes = int(nbytes)
        if rtt_s is not None and math.isfinite(rtt_s) and rtt_s >= 0:
            self._rtts.append(float(rtt_s))
        left = max(up.started, at - (rtt_s or 0.0))  # when the last byte left the device
        self.busy_s += max(0.0, left - max(up.started, self._busy_until))
        self._busy_until = max(self._busy_until, left)
        self._done.append((up.started, left, up.nbytes))
        self.last_finish = at
        self._cache = None
        return at - up.started

    @property
    def latency_s(self) -> float:
        """The round trip an upload waits for its acknowledgement after its last byte left
        (the median of the recent ones the driver reported; 0 when it reports none)."""
        return float(sorted(self._rtts)[len(self._rtts) // 2]) if self._rtts else 0.0

    def stale(self, now: float, after_s: float) -> bool:
        """Nothing on the link and no upload finished for ``after_s``: what is known of it is
        old, and an upload that would otherwise not be made is worth making to measure it."""
        return not self._uploads and self.last_finish is not None and now - self.last_finish > after_s

    def drop(self, request: int) -> None:
        """An upload that ended without finishing (the request failed): it no longer holds the link."""
        self._uploads.pop(request, None)

    @property
    def inflight(self) -> int:
        return len(self._uploads)

    @property
    def inflight_bytes(self) -> int:
        return sum(u.nbytes for u in self._uploads.values())

    # -- estimates --------------------------------------------------------------------------
    def _age_out(self, now: float) -> None:
        # the newest few are always kept: an old measurement beats the prior (a link that went
        # quiet is probed, see stale(), rather than assumed as good as new)
        while len(self._done) > self.keep and self._done[0][1] < now - self.horizon_s:
            self._done.popleft()
            self._cache = None

    def goodput(self, now: float) -> float | None:
        """Measured bytes per second while the link was busy, or the prior (None: unknown)."""
        self._age_out(now)
        if self._cache is not None and self._cache[0] == now:
            return self._cache[1]
        value = self.prior_Bps
        if self._done:
            busy, total, edge = 0.0, 0, -math.inf
            for start, end, nbytes in sorted(self._done):
                total += nbytes
                if end > edge:
                    busy += end - max(start, edge)
                    edge = end
            value = total / max(busy, 1e-4)
        self._cache = (now, value)
        return value

    def plan_Bps(self, now: float) -> float | None:
        """The goodput to plan with: a margin below the measured one, and no more than what
        the uploads on the link now have managed so far (a stall shows before they finish)."""
        g = self.goodput(now)
        if g is None:
            return None
        g *= self.safety
        if self._uploads:
            first = min(u.started for u in self._uploads.values())
            if self.overdue(now) and now > first:
                g = min(g, self.inflight_bytes / (now - first))
        return max(g, 1.0)

    def free_at(self, now: float) -> float:
        """When the uploads on the link now should all have left (never before ``now``; ``now``
        while nothing is known of the link: it is not planned for until measured)."""
        if not self._uploads or self.goodput(now) is None:
            return now
        end = max(u.projected_end for u in self._uploads.values())
        oldest = min(u.projected_end for u in self._uploads.values())
        if now > oldest + self._grace:
            # overdue: the longer it stalls, the less it is about to end (and an upload put
            # behind a stalled one does not make the link look fresh again)
            return max(end, now + (now - oldest - self._grace))
        if now <= end:
            return end
        return now  # its bytes have left: the acknowledgement is on its way back

    def overdue(self, now: float) -> bool:
        """Whether an upload on the link should have been acknowledged by now."""
        return any(now > u.projected_end + self._grace for u in self._uploads.values())

    @property
    def _lead(self) -> float:
        return self.lead_s + self.latency_s

    @property
    def _grace(self) -> float:
        return 1.5 * self.latency_s + 0.02

    def upload_end(self, now: float, nbytes: float, ahead_bytes: float = 0.0) -> float:
        """When ``nbytes`` queued now behind ``ahead_bytes`` (not yet on the link) would be
        acknowledged (its last byte left, plus the round trip): what follows is the endpoint's."""
        g = self.plan_Bps(now)
        if g is None:
            return now
        return self._leave(now, nbytes + ahead_bytes, g) + self.latency_s

    def _leave(self, now: float, nbytes: float, g: float) -> float:
        return self.free_at(now) + nbytes / g

    def accepting(self, now: float) -> bool:
        """Whether the next upload should start now: the link is (about to be) free; before
        anything is measured, when nothing is on it."""
        if self.last_finish is None:
            return self.prior_Bps is None or not self._uploads  # one upload at a time until one is measured
        return self.free_at(now) <= now + self._lead

    def next_timer(self, now: float) -> float | None:
        """When the link will accept again (None: it does now, or nothing is on it)."""
        if not self._uploads or self.last_finish is None:
            return None  # (before the first measurement, the upload's end is what frees the link)
        t = self.free_at(now) - self._lead
        return t if t > now else None

    def stats(self, now: float) -> dict:
        g = self.goodput(now)
        return {"goodput_bps": None if g is None else round(8 * g), "sent_bytes": self.sent_bytes,
                "uploads": self.uploads, "busy_s": round(self.busy_s, 3), "rtt_ms": round(1000 * self.latency_s, 1)}

