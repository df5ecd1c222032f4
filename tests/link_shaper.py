"""The rates a kernel ``tbf`` follows to replay an uplink trace, and the process that applies them.

``plan_tbf`` is pure: from a trace's rate per step it chooses the ``tbf`` rate of each step
so that the capacity the shaper gives tracks the trace's own bytes. Two facts of ``tbf``
shape it (both read in ``net/sched/sch_tbf.c`` and seen on this kernel):

- ``tc qdisc change`` refills the bucket: each change grants ``burst`` bytes at once on
  top of the new rate. At 100 ms steps a 3000 B burst alone is 240 kbit/s, so a change
  to "no capacity" still carries that much. The plan charges each change its burst, and
  while the trace owes less than a change would give it keeps the minimum rate without
  changing (no refill). The capacity it gives then never strays from the trace's by
  more than about one burst plus one step's bytes, whatever the trace does.
- ``tbf`` counts link-layer bytes: a 1500-byte IP packet is 1514 bytes on a veth. Rates
  are scaled by 1514/1500 so that the trace's 1500-byte packets pass at the trace's pace.

Run as a script (``python link_shaper.py``) it is the shaper: it reads one JSON line (the
plan and the device) from stdin, feeds ``tc -batch -`` (one long-lived process) a change
at each step, reads back what the kernel holds (``qdisc show``: rate, bytes sent, drops,
backlog), sends one small packet across the link after each change (``tbf`` does not re-run
its queue on ``change``), and prints one JSON record per step. When its parent dies
(SIGKILL, a crash) it removes the namespace itself: a link never outlives its owner by
more than a step.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["L2_FACTOR", "TbfPlan", "plan_tbf"]

#: link-layer bytes per IP byte of a full packet on a veth (14-byte Ethernet header)
L2_FACTOR = 1514 / 1500


@dataclass(frozen=True)
class TbfPlan:
    """What the shaper applies at each step: rates in bits/s; capacity in IP bytes."""

    step_s: float
    trace_bps: np.ndarray     #: the trace's own rate of each step (IP bits/s)
    tbf_bps: np.ndarray       #: the rate given to tbf (link-layer bits/s, whole numbers)
    changed: np.ndarray       #: whether the step starts with a ``tc qdisc change`` (a bucket refill)
    capacity_bytes: np.ndarray  #: IP bytes the link can carry in the step (burst if changed + rate x step)
    burst_bytes: int

    def __len__(self) -> int:
        return len(self.tbf_bps)


def plan_tbf(trace_bps: np.ndarray, *, step_s: float, burst_bytes: int, min_rate_bps: float) -> TbfPlan:
    """The tbf rate of each step so that the link's capacity follows ``trace_bps`` (sigma-delta on bytes).

    >>> p = plan_tbf(np.array([8e6, 8e6, 0.0, 0.0, 8e6]), step_s=0.1, burst_bytes=3028, min_rate_bps=8000)
    >>> [int(round(c)) for c in np.cumsum(p.capacity_bytes)]   # the trace: 100000, 200000, 200000, 200000, 300000
    [100000, 200000, 203099, 203198, 300000]
    >>> p.changed.tolist()
    [True, True, True, False, True]
    """
    trace_bps = np.asarray(trace_bps, dtype=float)
    if step_s <= 0 or burst_bytes < 1514 or min_rate_bps <= 0:
        raise ValueError(f"plan_tbf needs step_s > 0, burst_bytes >= 1514 (one full frame) and min_rate_bps > 0; "
                         f"got {step_s}, {burst_bytes}, {min_rate_bps}")
    burst_ip = burst_bytes / L2_FACTOR
    min_ip = min_rate_bps / 8 / L2_FACTOR * step_s  # IP bytes one step at the minimum rate carries
    tbf = np.empty(len(trace_bps), dtype=np.int64)
    changed = np.zeros(len(trace_bps), dtype=bool)
    capacity = np.empty(len(trace_bps))
    owed = 0.0      # trace bytes not yet given capacity (negative: given ahead of the trace)
    current = -1    # the rate tbf holds (none before the first step)
    for k, bps in enumerate(trace_bps):
        want = owed + bps / 8 * step_s
        if current == int(min_rate_bps) and want < burst_ip + min_ip:
            cap = min_ip  # no change: a change would refill the bucket and give more than owed
        else:
            rate = max(int(min_rate_bps), int(round((want - burst_ip) / step_s * 8 * L2_FACTOR)))
            changed[k] = True
            current = rate
            cap = burst_ip + rate / 8 / L2_FACTOR * step_s
        tbf[k] = current
        capacity[k] = cap
        owed = want - cap
    return TbfPlan(step_s=step_s, trace_bps=trace_bps, tbf_bps=tbf, changed=changed, capacity_bytes=capacity,
                   burst_bytes=burst_bytes)


# -- the shaper process ---------------------------------------------------------------------

def _remove_namespace(ip: str, netns: str, device: str) -> None:
    """The owner died: kill what runs in its namespace and remove the link (best effort)."""
    pids = subprocess.run([ip, "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run([ip, "link", "del", "dev", device], capture_output=True)
    subprocess.run([ip, "netns", "del", netns], capture_output=True)


def _tbf_line(device: str, rate_bps: int, burst: int, limit: int) -> str:
    return f"qdisc change dev {device} root tbf rate {int(rate_bps)}bit burst {burst} limit {limit}\n"


def _emit(record: dict) -> bool:
    """Write one record to the owner; False once nobody reads (the owner is gone)."""
    try:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that exiting does not flush into the broken pipe
        return False


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    device, step_s = cfg["device"], float(cfg["step_s"])
    rates, changed = cfg["tbf_bps"], cfg["changed"]
    burst, limit, owner = int(cfg["burst_bytes"]), int(cfg["limit_bytes"]), int(cfg["owner_pid"])
    tc = subprocess.Popen(["stdbuf", "-oL", cfg["tc"], "-s", "-j", "-batch", "-"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    kick = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kick_to = (cfg["kick_host"], 9)  # discard: nobody listens, the packet only has to cross the qdisc
    start = time.monotonic()
    k = 0
    reported = True
    while True:
        if os.getppid() != owner or not reported:
            _remove_namespace(cfg["ip"], cfg["netns"], device)
            return 0
        now = time.monotonic()
        due = start + k * step_s
        if now < due:
            time.sleep(due - now)
        elif now > due + step_s:  # fell behind by more than a step: apply the current one, say so
            skipped = int((now - due) / step_s)
            k += skipped
            reported = _emit({"k": k, "skipped": skipped})
        change = k < len(rates) and changed[k]
        t_sent = time.monotonic()
        try:
            if change:
                tc.stdin.write(_tbf_line(device, rates[k], burst, limit))
            tc.stdin.write(f"qdisc show dev {device}\n")
            tc.stdin.flush()
            line = tc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            _emit({"k": k, "error": f"tc -batch exited with {tc.wait()}: {tc.stderr.read().strip()}"})
            return 1
        t_done = time.monotonic()
        if change:
            kick.sendto(b"k", kick_to)
        q = json.loads(line)[0]
        reported = _emit({"k": k, "t": t_sent, "applied": t_done, "changed": bool(change),
               "rate_bps": int(q.get("options", {}).get("rate", 0)) * 8, "bytes": q.get("bytes", 0),
               "packets": q.get("packets", 0), "drops": q.get("drops", 0), "backlog": q.get("backlog", 0),
               "qlen": q.get("qlen", 0)})
        k += 1


if __name__ == "__main__":
    sys.exit(main())
