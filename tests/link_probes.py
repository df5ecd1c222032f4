"""Traffic to measure a shaped link with: a bulk TCP upload into a counting sink, and UDP echo probes.

The sink and the echo server run inside the link's namespace (``python link_probes.py sink
HOST PORT`` / ``echo HOST PORT``, started with ``ShapedLink.popen``); the senders run on the
device side. Times are ``time.monotonic()``, one clock for both sides of the veth (the
namespaces share the machine's clock), so what the sink received can be set against the
trace's bytes over the same interval.

    with ShapedLink(bundled("verizon-lte")) as link:
        sink = BulkSink.start(link, port=5001)
        bulk_upload(link.cloud_ip, 5001, seconds=10)
        samples = sink.samples()      # [(t, cumulative bytes received)], every 50 ms
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BulkSink", "bulk_upload", "EchoServer", "rtt_probes", "goodput_bps"]

_HERE = Path(__file__).resolve()
_SAMPLE_S = 0.05


@dataclass
class BulkSink:
    """A TCP receiver inside the namespace: counts bytes and reports (time, total) every 50 ms."""

    proc: subprocess.Popen

    @classmethod
    def start(cls, link, port: int, cpus: set[int] | None = None) -> "BulkSink":
        proc = link.popen([sys.executable, str(_HERE), "sink", link.cloud_ip, str(port)], cpus=cpus,
                          stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the bulk sink in {link.netns} did not start (exit {proc.poll()})")
        return cls(proc)

    def samples(self, timeout: float = 10.0) -> np.ndarray:
        """Wait for the sender to finish; rows of (monotonic time, cumulative bytes)."""
        out, _ = self.proc.communicate(timeout=timeout)
        return np.array(json.loads(out or "[]"), dtype=float).reshape(-1, 2)


def bulk_upload(host: str, port: int, *, seconds: float, chunk: int = 64 * 1024, congestion: str | None = None) -> int:
    """Send as fast as TCP allows for ``seconds`` (device side), then close; bytes written.

    ``congestion`` picks the TCP congestion control of this one socket (``"cubic"``...);
    None keeps the machine's default (``net.ipv4.tcp_congestion_control``), which is what
    the agent's own connections get.
    """
    sent = 0
    buf = b"\0" * chunk
    with socket.create_connection((host, port), timeout=30) as s:
        if congestion:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sent += s.send(buf)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the sink closes once it has read everything
    return sent


def bulk_share(link, sink: "BulkSink", port: int, seconds: float, *, congestion: str | None = None,
               startup_s: float = 2.0) -> tuple[float, float, float, float]:
    """A bulk upload into ``sink`` through ``link``, measured for ``seconds`` after TCP's
    start-up: ``(t0, t1, goodput bps, the trace's capacity in TCP payload bps)`` over the same
    interval, so goodput / capacity is 1.0 for an upload that used every packet."""
    from edge_agent.sim.uplink import PACKET_BYTES, TCP_PAYLOAD_BYTES

    bulk_upload(link.cloud_ip, port, seconds=seconds + startup_s, congestion=congestion)
    samples = sink.samples(timeout=120)
    t0 = samples[0, 0] + startup_s
    t1 = t0 + seconds
    capacity_bps = link.trace_bytes(t0, t1) * 8 / (t1 - t0) * TCP_PAYLOAD_BYTES / PACKET_BYTES
    return t0, t1, goodput_bps(samples, t0, t1), capacity_bps


def goodput_bps(samples: np.ndarray, t0: float, t1: float) -> float:
    """Bits per second the sink received between ``t0`` and ``t1`` (interpolated on its samples)."""
    t, total = samples[:, 0], samples[:, 1]
    return float(np.interp(t1, t, total) - np.interp(t0, t, total)) * 8 / (t1 - t0)


@dataclass
class EchoServer:
    """A UDP echo server inside the namespace."""

    proc: subprocess.Popen

    @classmethod
    def start(cls, link, port: int) -> "EchoServer":
        proc = link.popen([sys.executable, str(_HERE), "echo", link.cloud_ip, str(port)], stdout=subprocess.PIPE,
                          text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the echo server in {link.netns} did not start (exit {proc.poll()})")
        return cls(proc)


def rtt_probes(host: str, port: int, *, count: int | None = None, until: float | None = None,
               interval_s: float = 0.1, timeout_s: float = 10.0) -> np.ndarray:
    """Small UDP probes every ``interval_s`` (``count`` of them, or until ``time.monotonic()`` passes
    ``until``): rows of (monotonic time sent, round trip in s, NaN where lost). A probe waits for its
    echo (up to ``timeout_s``) before the next is sent, so a long round trip delays the next probe."""
    if (count is None) == (until is None):
        raise ValueError("give rtt_probes a count or an until, not both")
    rows = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        i = 0
        while (count is not None and i < count) or (until is not None and time.monotonic() < until):
            t0 = time.monotonic()
            s.sendto(i.to_bytes(4, "big"), (host, port))
            rtt = float("nan")
            try:
                while True:
                    data, _ = s.recvfrom(64)
                    if int.from_bytes(data[:4], "big") == i:
                        rtt = time.monotonic() - t0
                        break
            except socket.timeout:
                pass
            rows.append((t0, rtt))
            i += 1
            time.sleep(max(0.0, interval_s - (time.monotonic() - t0)))
    return np.array(rows, dtype=float).reshape(-1, 2)


# -- the programs that run inside the namespace -----------------------------------------------

def _sink(host: str, port: int) -> None:
    srv = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    samples, total, lock, done = [], 0, threading.Lock(), threading.Event()

    def sample() -> None:
        while not done.wait(_SAMPLE_S):
            with lock:
                samples.append((time.monotonic(), total))

    threading.Thread(target=sample, daemon=True).start()
    with lock:
        samples.append((time.monotonic(), 0))
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        with lock:
            total += len(data)
    done.set()
    samples.append((time.monotonic(), total))
    conn.close()
    print(json.dumps(samples), flush=True)


def _echo(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(64)
        s.sendto(data, addr)


if __name__ == "__main__":
    {"sink": _sink, "echo": _echo}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
