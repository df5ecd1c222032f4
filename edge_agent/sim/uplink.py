"""Real uplinks: capacity traces in the Mahimahi format, and a link that replays one.

A device has one uplink, and on a cellular network it is the narrowest part of the path
to the cloud: 1-13 Mbit/s on average and a fraction of that for seconds at a time. The
traces bundled here (``edge_agent/sim/uplinks/``, see the README there) were recorded on four
U.S. cellular networks. In the Mahimahi format each line is a time in milliseconds at
which one 1500-byte packet may leave the bottleneck queue; a millisecond repeated on
several lines carries several packets; the trace repeats when it ends; an opportunity that
finds the queue empty is lost.

:class:`UplinkTrace` reads a trace and answers for it: its statistics, the bytes it can
carry in any interval, and the per-step rates a kernel shaper follows (``rate_schedule``,
what the shaped-link test applies with ``tbf``). :class:`TraceLink` is the link itself for
the simulator: a FIFO byte queue drained at the trace's opportunities.

>>> t = UplinkTrace.parse("1\\n1\\n3\\n4\\n", name="tiny")
>>> t.period_s, t.packets_per_period
(0.004, 4)
>>> link = TraceLink(t)
>>> link.send(0.0, 3000)   # two packets: the two opportunities at 1 ms
0.001
>>> link.send(0.0, 1500)   # queued behind them: the next one, at 3 ms
0.003
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from yolo_edge.errors import ConfigError

__all__ = ["UplinkTrace", "TraceLink", "PACKET_BYTES", "TCP_PAYLOAD_BYTES", "BUNDLED", "bundled", "wire_bytes",
           "FrameSizeTable", "frame_size_table"]

#: one delivery opportunity of a Mahimahi trace carries one packet of this many bytes
PACKET_BYTES = 1500
#: the TCP payload of one full packet (1500 - 20 IP - 32 TCP with timestamps)
TCP_PAYLOAD_BYTES = 1448
#: request line, headers and multipart framing of one upload, roughly
_REQUEST_OVERHEAD_BYTES = 600

_HERE = Path(__file__).resolve().parent / "uplinks"
#: the traces shipped with the package, by short name
BUNDLED = {
    "verizon-lte": "Verizon-LTE-short.up",
    "tmobile-lte": "TMobile-LTE-short.up",
    "att-lte-driving": "ATT-LTE-driving.up",
    "tmobile-umts-driving": "TMobile-UMTS-driving.up",
}


def wire_bytes(body_bytes: int, frames: int = 1) -> int:
    """Bytes on the wire for an HTTP upload of ``body_bytes`` of images: framing and TCP/IP headers."""
    payload = body_bytes + _REQUEST_OVERHEAD_BYTES + 200 * max(0, frames - 1)
    return int(math.ceil(payload / TCP_PAYLOAD_BYTES)) * PACKET_BYTES


@dataclass(frozen=True)
class UplinkTrace:
    """One period of a Mahimahi trace: the times (ms) of its delivery opportunities, sorted."""

    name: str
    opportunities_ms: np.ndarray
    period_ms: int

    @classmethod
    def parse(cls, text: str, *, name: str = "trace") -> "UplinkTrace":
        try:
            ms = np.array([int(line) for line in text.split() if line.strip()], dtype=np.int64)
        except ValueError as exc:
            raise ConfigError(f"uplink trace {name}: every line must be a whole number of milliseconds ({exc})") from None
        if not len(ms):
            raise ConfigError(f"uplink trace {name} is empty: expected one millisecond per line")
        if ms[0] < 0 or np.any(np.diff(ms) < 0):
            raise ConfigError(f"uplink trace {name}: times must be non-negative and never decrease")
        period = int(ms[-1])
        if period <= 0:
            raise ConfigError(f"uplink trace {name}: its last time must be > 0 ms (it sets the period)")
        return cls(name=name, opportunities_ms=ms, period_ms=period)

    @classmethod
    def load(cls, path: str | Path) -> "UplinkTrace":
        """A trace file (``.up``, or ``.up.gz``); a bundled trace by short name or file name."""
        path = Path(path)
        if not path.exists():
            key = str(path)
            if key in BUNDLED:
                return bundled(key)
            if (_HERE / (key + ".gz")).exists() or (_HERE / key).exists():
                return bundled(key)
            raise ConfigError(f"uplink trace {path} not found: give a Mahimahi .up file or one of {sorted(BUNDLED)}")
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
        name = path.name.removesuffix(".gz").removesuffix(".up")
        return cls.parse(text, name=name)

    # -- what it carries -------------------------------------------------------------------
    @property
    def period_s(self) -> float:
        return self.period_ms / 1000.0

    @property
    def packets_per_period(self) -> int:
        return len(self.opportunities_ms)

    @property
    def mean_bps(self) -> float:
        """Mean capacity in bits per second."""
        return self.packets_per_period * PACKET_BYTES * 8 / self.period_s

    def window_bps(self, window_s: float = 1.0) -> np.ndarray:
        """Capacity of each consecutive window of one period, in bits per second."""
        step = int(round(window_s * 1000))
        counts = np.bincount(self.opportunities_ms // step, minlength=int(math.ceil(self.period_ms / step)))
        return counts[: self.period_ms // step] * PACKET_BYTES * 8 / window_s

    def packets_before(self, t: float) -> int:
        """Opportunities in [0, t) (the trace repeating)."""
        n = self.packets_per_period
        whole, rest = divmod(t * 1000.0, self.period_ms)
        return int(whole) * n + int(np.searchsorted(self.opportunities_ms, rest, side="left"))

    def opportunity_time(self, index: int) -> float:
        """When opportunity ``index`` (0-based, counting over repetitions) comes, in seconds."""
        whole, i = divmod(index, self.packets_per_period)
        return (whole * self.period_ms + int(self.opportunities_ms[i])) / 1000.0

    def bytes_between(self, t0: float, t1: float) -> int:
        return (self.packets_before(t1) - self.packets_before(t0)) * PACKET_BYTES

    def rate_schedule(self, *, step_s: float = 0.1, start_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
        """Bits per second for each step of ``step_s`` from ``start_s``: what a shaper changed every step applies."""
        duration_s = self.period_s if duration_s is None else duration_s
        steps = int(math.ceil(duration_s / step_s))
        edges = [self.packets_before(start_s + k * step_s) for k in range(steps + 1)]
        return np.diff(np.asarray(edges)) * PACKET_BYTES * 8 / step_s

    def describe(self) -> str:
        w = self.window_bps(1.0) / 1e6
        return (f"{self.name}: {self.period_s:.0f} s, mean {self.mean_bps / 1e6:.2f} Mbit/s, 1 s windows p10/p50/p90 "
                f"{np.percentile(w, 10):.2f}/{np.percentile(w, 50):.2f}/{np.percentile(w, 90):.2f} Mbit/s, "
                f"{np.mean(w == 0):.1%} of seconds with no capacity")


@lru_cache(maxsize=None)
def bundled(name: str) -> UplinkTrace:
    """A trace shipped with the package: ``verizon-lte``, ``tmobile-lte``, ``att-lte-driving``, ``tmobile-umts-driving``."""
    file = BUNDLED.get(name, name)
    path = _HERE / (file if file.endswith(".gz") else file + ".gz")
    if not path.exists():
        raise ConfigError(f"no bundled uplink trace {name!r}; choose one of {sorted(BUNDLED)}")
    text = gzip.decompress(path.read_bytes()).decode()
    short = next((k for k, v in BUNDLED.items() if v == file or k == name), file)
    return UplinkTrace.parse(text, name=short)


class TraceLink:
    """A FIFO byte queue that the trace's opportunities drain, one packet each; unused ones are lost.

    ``offset_s`` starts the trace that far in (devices of a fleet, or seeds, see different
    stretches of it). ``efficiency``: the share of the packets that carry the uploads' bytes
    (what TCP gets from the link; the rest of each packet goes unused). ``send(at, nbytes)``
    queues an upload and returns when its last packet leaves. Not thread-safe: the
    simulator's event loop calls it in time order.
    """

    def __init__(self, trace: UplinkTrace, *, offset_s: float = 0.0, efficiency: float = 1.0) -> None:
        if not 0.0 < efficiency <= 1.0:
            raise ConfigError(f"a link's efficiency is the share of its packets an upload gets, in (0, 1], "
                              f"not {efficiency}")
        self.trace = trace
        self.offset_s = float(offset_s)
        self.packet_bytes = PACKET_BYTES * efficiency  # what one opportunity carries, on average
        self._next = trace.packets_before(self.offset_s)  # first opportunity not yet used
        self.sent_bytes = 0
        self.busy_s = 0.0

    def send(self, at: float, nbytes: int) -> float:
        """Queue ``nbytes`` at time ``at``; the time its last packet leaves."""
        if nbytes <= 0:
            return at
        packets = int(math.ceil(nbytes / self.packet_bytes))
        first = max(self._next, self.trace.packets_before(at + self.offset_s))
        last = first + packets - 1
        self._next = last + 1
        start = self.trace.opportunity_time(first) - self.offset_s
        end = self.trace.opportunity_time(last) - self.offset_s
        self.sent_bytes += packets * PACKET_BYTES
        self.busy_s += end - max(at, start) if end > at else 0.0
        return max(end, at)

    def backlog_clears_at(self) -> float:
        """When everything queued so far has left."""
        return self.trace.opportunity_time(max(0, self._next - 1)) - self.offset_s


@dataclass(frozen=True)
class FrameSizeTable:
    """Real frames encoded at the model's input size: bytes and encode time per rung, per frame."""

    rungs: tuple[str, ...]
    names: tuple[str, ...]
    nbytes: np.ndarray  # [frame, rung]
    encode_s: np.ndarray  # [frame, rung]
    source: str = ""

    def rung_index(self, rung: str) -> int:
        if rung not in self.rungs:
            raise ConfigError(f"no frame sizes measured for encoding {rung!r}; the table has {list(self.rungs)}")
        return self.rungs.index(rung)


@lru_cache(maxsize=None)
def frame_size_table(path: str | None = None) -> FrameSizeTable:
    """The bundled table (``edge_agent/sim/uplinks/frame_sizes.json``) or another file of the same form."""
    file = Path(path) if path else _HERE / "frame_sizes.json"
    try:
        data = json.loads(file.read_text())
        rungs = tuple(data["rungs"])
        frames = data["frames"]
        nbytes = np.array([[f["bytes"][r] for r in rungs] for f in frames], dtype=np.float64)
        enc = np.array([[f["encode_ms"][r] / 1000.0 for r in rungs] for f in frames], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the frame size table {file}: {exc}") from exc
    return FrameSizeTable(rungs, tuple(f["name"] for f in frames), nbytes, enc, str(data.get("source", "")))
