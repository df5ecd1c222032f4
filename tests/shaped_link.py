"""A real shaped uplink on this machine: a network namespace, a veth pair, kernel ``tbf``.

The root-namespace end of the veth is the device; the namespace end is the cloud. The
device's egress (its uploads) is shaped with ``tbf``, changed every step (100 ms) to follow
an uplink trace (:mod:`edge_agent.sim.uplink`) or held at a fixed rate; the answers come back
unshaped. A real ``bentoml serve`` runs inside the namespace (:meth:`ShapedLink.service`),
bound to the namespace's address, so the agent reaches it over real TCP through the
shaped link. The rates applied come from :func:`link_shaper.plan_tbf` (why they are not
the trace's own rates is explained there) and are applied by a small shaper process that
also removes everything if its owner dies.

    from shaped_link import ShapedLink, skip_unless_shaped_link
    from edge_agent.sim.uplink import bundled

    with ShapedLink(bundled("verizon-lte"), start_s=30.0) as link:
        with link.service(threads=1, cpus={1}) as svc:   # a real bentoml serve in the namespace
            ...  # CloudClient(svc.url) from here goes through the shaped link
        sched = link.schedule()   # what was applied: start (monotonic), rates, kernel counters
    # namespace, veth, qdisc and every process started in the namespace are gone here

The simulator replays the same link with ``TraceLink(trace, offset_s=start_s)`` (its time 0
at ``sched.start``), or exactly what the shaper gave with ``TraceLink(sched.as_uplink_trace())``.
Tests call ``skip_unless_shaped_link()``: it tries the whole thing once and skips with the
reason (not root, no ``ip``/``tc``, no namespaces, no ``tbf``...).
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from link_shaper import L2_FACTOR, TbfPlan, plan_tbf
from yolo_edge.errors import YoloEdgeError

__all__ = ["ShapedLink", "ShapedLinkError", "AppliedSchedule", "shaped_link_unavailable", "skip_unless_shaped_link",
           "BURST_BYTES", "QUEUE_LIMIT_BYTES", "MIN_RATE_BPS"]

logger = logging.getLogger(__name__)

#: two full frames at the link layer: the smallest bucket that passes a 1514-byte frame with
#: room to spare, so tbf keeps the trace's pace at 100 ms steps (a 32 KB burst stalled TCP)
BURST_BYTES = 2 * 1514
#: about 700 full packets, as deep as a cellular base station's per-device buffer: seconds of
#: queue at 1-6 Mbit/s, so the agent's few uploads in flight (a PNG frame is 150-260 KB) are
#: delayed, never dropped, as in the simulator's FIFO; a bulk TCP flow still finds the end
QUEUE_LIMIT_BYTES = 1 << 20
#: what tbf gets when the trace carries nothing: it cannot take 0, and below ~100 bit/s tc overflows the
#: bucket of a 3 KB burst (125 bytes/s: a 10 s outage leaks one packet)
MIN_RATE_BPS = 1000
#: the device is 10.201.N.(4i+1), the cloud 10.201.N.(4i+2): one /30 per link
_SUBNET = "10.201"
_STATE = Path("/run/shaped-link")
_LOCK = Path("/tmp/shaped-link.lock")
_HERE = Path(__file__).resolve().parent


class ShapedLinkError(YoloEdgeError):
    """The shaped link could not be set up, or failed while running."""


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


IP, TC = _tool("ip"), _tool("tc")


def _run(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode:
        raise ShapedLinkError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class AppliedSchedule:
    """What the shaper applied, step by step, and what the kernel reported at each step.

    ``start`` is the ``time.monotonic()`` of step 0; step ``k`` was due at ``start + k * step_s``
    and applied at ``applied_at[k]``. Kernel counters (``sent_bytes``, ``drops``: cumulative;
    ``backlog_bytes``: at that moment) are link-layer bytes, read just after each change.
    """

    start: float
    step_s: float
    trace_name: str | None
    trace_offset_s: float
    plan: TbfPlan
    applied_at: np.ndarray
    kernel_bps: np.ndarray
    sent_bytes: np.ndarray
    drops: np.ndarray
    backlog_bytes: np.ndarray
    skipped_steps: int

    @property
    def lateness_s(self) -> np.ndarray:
        """How long after its due time each step was in force."""
        return self.applied_at - (self.start + self.step_s * np.arange(len(self.applied_at)))

    def capacity_bytes(self, t0: float, t1: float) -> float:
        """IP bytes the plan lets through in [t0, t1] (monotonic): each change's burst, then its rate."""
        cap = self.plan.capacity_bytes
        burst = np.where(self.plan.changed, self.plan.burst_bytes / L2_FACTOR, 0.0)
        rate = (cap - burst) / self.step_s

        def upto(t: float) -> float:
            x = (t - self.start) / self.step_s
            k = int(np.clip(np.floor(x), 0, len(cap)))
            done = float(cap[:k].sum())
            if k < len(cap) and x >= 0:
                done += burst[k] + rate[k] * (x - k) * self.step_s
            return done

        return upto(t1) - upto(t0)

    def as_uplink_trace(self):
        """The plan as a Mahimahi-style trace (its time 0 = ``start``), for ``TraceLink``: the link exactly as shaped."""
        from edge_agent.sim.uplink import PACKET_BYTES, UplinkTrace

        cap, step_ms = self.plan.capacity_bytes, self.step_s * 1000
        burst = np.where(self.plan.changed, self.plan.burst_bytes / L2_FACTOR, 0.0)
        times, before = [], 0.0
        for k in range(len(cap)):
            after_burst, end = before + burst[k], before + cap[k]
            n = np.arange(int(before // PACKET_BYTES) + 1, int(end // PACKET_BYTES) + 1) * PACKET_BYTES
            frac = np.clip((n - after_burst) / max(end - after_burst, 1e-9), 0.0, 1.0)
            times.append(np.floor((k + frac) * step_ms).astype(np.int64))
            before = end
        ms = np.concatenate(times) if times else np.zeros(0, np.int64)
        return UplinkTrace(name=f"shaped-{self.trace_name or 'fixed'}", opportunities_ms=ms,
                           period_ms=int(round(len(cap) * step_ms)))


class ShapedLink:
    """A namespace ("the cloud") behind a veth whose device side is shaped by ``tbf``.

    Give an :class:`~edge_agent.sim.uplink.UplinkTrace` (or a bundled trace's name) to follow it
    from ``start_s`` into it, changing the rate every ``step_s`` for ``duration_s`` (then the
    last rate holds); or ``rate_bps`` for a fixed rate; or neither for an unshaped veth.
    ``device_ip`` is the device end, ``cloud_ip`` the namespace's; ``url(port)`` the address
    the device uses for a server in the namespace.
    """

    def __init__(self, trace=None, *, rate_bps: float | None = None, start_s: float = 0.0,
                 duration_s: float = 900.0, step_s: float = 0.1, burst_bytes: int = BURST_BYTES,
                 limit_bytes: int = QUEUE_LIMIT_BYTES, min_rate_bps: float = MIN_RATE_BPS, prefix: str = "shl") -> None:
        if trace is not None and rate_bps is not None:
            raise ShapedLinkError("give a trace or rate_bps, not both")
        if rate_bps is not None and rate_bps < min_rate_bps:
            raise ShapedLinkError(f"rate_bps must be >= {min_rate_bps} (tbf cannot take 0), got {rate_bps}")
        if not re.fullmatch(r"[a-z]{1,5}", prefix):
            raise ShapedLinkError(f"prefix must be 1-5 lowercase letters (interface names are 15 characters), got {prefix!r}")
        if isinstance(trace, str):
            from edge_agent.sim.uplink import UplinkTrace

            trace = UplinkTrace.load(trace)
        self.trace, self.rate_bps, self.start_s, self.step_s = trace, rate_bps, float(start_s), float(step_s)
        self.burst_bytes, self.limit_bytes, self.prefix = int(burst_bytes), int(limit_bytes), prefix
        if trace is not None:
            self.plan: TbfPlan | None = plan_tbf(trace.rate_schedule(step_s=step_s, start_s=start_s, duration_s=duration_s),
                                                 step_s=step_s, burst_bytes=burst_bytes, min_rate_bps=min_rate_bps)
        elif rate_bps is not None:  # one change, then the rate holds: no refills, so no burst per step
            tbf = int(round(rate_bps * L2_FACTOR))
            self.plan = TbfPlan(step_s=step_s, trace_bps=np.array([float(rate_bps)]), tbf_bps=np.array([tbf]),
                                changed=np.array([True]), capacity_bytes=np.array([rate_bps / 8 * step_s]),
                                burst_bytes=burst_bytes)
        else:
            self.plan = None
        self.netns = self.device = self.peer = self.device_ip = self.cloud_ip = ""
        self.start = float("nan")
        self._shaper: subprocess.Popen | None = None
        self._records: list[dict] = []
        self._cond = threading.Condition()
        self._procs: list[subprocess.Popen] = []
        self._services: list = []
        self._old_sigterm = None
        self._open = False

    # -- set-up and tear-down -----------------------------------------------------------------
    def __enter__(self) -> "ShapedLink":
        if not IP or not TC:
            raise ShapedLinkError(f"needs iproute2's `ip` and `tc` (found ip={IP}, tc={TC}): apt-get install iproute2")
        if not shutil.which("stdbuf"):
            raise ShapedLinkError("needs coreutils' `stdbuf` to read `tc -batch` line by line")
        _STATE.mkdir(parents=True, exist_ok=True)
        with _LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            clean_stale(self.prefix)
            self._name()
            self._open = True
            atexit.register(self.close)
            self._catch_sigterm()
            try:
                self._create()
            except BaseException:
                self.close()
                raise
        try:
            self._start_shaper()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _name(self) -> None:
        pid = os.getpid()
        used = {n for n in _run(IP, "netns", "list").split() if n.startswith(f"{self.prefix}-{pid}-")}
        n = next(i for i in range(100) if f"{self.prefix}-{pid}-{i}" not in used)
        self.netns, self.device, self.peer = f"{self.prefix}-{pid}-{n}", f"{self.prefix}{pid}d{n}", f"{self.prefix}{pid}c{n}"
        taken = set(re.findall(rf"inet {_SUBNET}\.(\d+)\.(\d+)/", _run(IP, "-o", "-4", "addr", "show")))
        idx = next(i for i in range(16384) if (str(i // 64), str(i % 64 * 4 + 1)) not in taken)
        net, host = f"{_SUBNET}.{idx // 64}", idx % 64 * 4
        self.device_ip, self.cloud_ip = f"{net}.{host + 1}", f"{net}.{host + 2}"
        (_STATE / f"{self.netns}.json").write_text(json.dumps({"pid": pid, "start_time": _start_time(pid)}))

    def _create(self) -> None:
        ns = ("-n", self.netns)
        _run(IP, "netns", "add", self.netns)
        _run(IP, "link", "add", self.device, "type", "veth", "peer", "name", self.peer, "netns", self.netns)
        for where, dev, addr in (((), self.device, self.device_ip), (ns, self.peer, self.cloud_ip)):
            _run(IP, *where, "link", "set", "dev", dev, "addrgenmode", "none")  # no IPv6 chatter on the link
            _run(IP, *where, "addr", "add", f"{addr}/30", "dev", dev)
            _run(IP, *where, "link", "set", "dev", dev, "up")
        _run(IP, *ns, "link", "set", "dev", "lo", "up")
        if self.plan is not None:
            _run(TC, "qdisc", "add", "dev", self.device, "root", "tbf", "rate", f"{int(self.plan.tbf_bps[0])}bit",
                 "burst", str(self.burst_bytes), "limit", str(self.limit_bytes))

    def _start_shaper(self) -> None:
        cfg = {"device": self.device, "netns": self.netns, "ip": IP, "tc": TC, "kick_host": self.cloud_ip,
               "step_s": self.step_s, "burst_bytes": self.burst_bytes, "limit_bytes": self.limit_bytes,
               "owner_pid": os.getpid(),
               "tbf_bps": [] if self.plan is None else [int(r) for r in self.plan.tbf_bps],
               "changed": [] if self.plan is None else [bool(c) for c in self.plan.changed]}
        self._shaper = subprocess.Popen([sys.executable, str(_HERE / "link_shaper.py")], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self._shaper.stdin.write(json.dumps(cfg) + "\n")
        self._shaper.stdin.flush()
        threading.Thread(target=self._read_shaper, name=f"shaper-{self.netns}", daemon=True).start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._records, timeout=10.0):
                raise ShapedLinkError(f"the shaper of {self.device} reported nothing within 10 s")
        self.check()
        self.start = self._records[0]["t"]

    def _read_shaper(self) -> None:
        for line in self._shaper.stdout:
            rec = json.loads(line)
            with self._cond:
                self._records.append(rec)
                self._cond.notify_all()
            if "error" in rec:
                logger.error("shaper of %s: %s", self.device, rec["error"])

    def _catch_sigterm(self) -> None:
        # SIGTERM's default kills without unwinding: make it an exception so ``with`` removes the link
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def on_term(signum, frame):
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def close(self) -> None:
        """Stop what runs in the namespace, the shaper, and remove the link. Idempotent; never leaves a half."""
        if not self._open:
            return
        self._open = False
        for svc in self._services:
            try:
                svc.stop()
            except Exception:  # noqa: BLE001 - the namespace is removed below whatever happened
                logger.exception("stopping the service in %s", self.netns)
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
            proc.wait()
        if self._shaper is not None and self._shaper.poll() is None:
            self._shaper.terminate()
            try:
                self._shaper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._shaper.kill()
                self._shaper.wait()
        _remove(self.netns, self.device)
        (_STATE / f"{self.netns}.json").unlink(missing_ok=True)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
        atexit.unregister(self.close)
        left = [what for what, there in (("namespace", self.netns in _run(IP, "netns", "list", check=False).split()),
                                         ("veth", bool(_run(IP, "-o", "link", "show", "dev", self.device, check=False))))
                if there]
        if left:
            raise ShapedLinkError(f"could not remove the {' and '.join(left)} of {self.netns}; remove them with "
                                  f"`ip netns pids {self.netns} | xargs -r kill -9; ip link del {self.device}; ip netns del {self.netns}`")

    # -- use -----------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise if the shaper failed (tc exited, a change was refused)."""
        with self._cond:
            err = next((r["error"] for r in self._records if "error" in r), None)
        if err:
            raise ShapedLinkError(f"the shaper of {self.device} failed: {err}")
        if self._shaper is not None and self._shaper.poll() is not None and self._open:
            raise ShapedLinkError(f"the shaper of {self.device} exited with {self._shaper.returncode}")

    def url(self, port: int) -> str:
        return f"http://{self.cloud_ip}:{port}"

    def popen(self, args: Sequence[str], *, cpus: set[int] | None = None, **kwargs) -> subprocess.Popen:
        """Start ``args`` inside the namespace (its own session), pinned to ``cpus``; killed on close."""
        kwargs.setdefault("start_new_session", True)
        if cpus:
            kwargs["preexec_fn"] = lambda: os.sched_setaffinity(0, cpus)
        proc = subprocess.Popen([IP, "netns", "exec", self.netns, *args], **kwargs)
        self._procs.append(proc)
        return proc

    def service(self, *, threads: int | None = 1, cpus: set[int] | None = None, model: str | None = None,
                port: int | None = None, env: dict[str, str] | None = None, log_dir=None,
                start_timeout_s: float = 120.0):
        """A real ``bentoml serve`` of bentos.service inside the namespace, bound to ``cloud_ip``.

        Returns an unstarted :class:`~edge_agent.cloudserve.LocalService` (use it with ``with``);
        its ``url`` goes through the shaped link. Stopped on close at the latest.
        """
        from edge_agent.cloudserve import LocalService, free_port

        svc = LocalService(model=model, threads=threads, port=port or free_port(), log_dir=log_dir, env=env,
                           start_timeout_s=start_timeout_s, cpus=cpus, host=self.cloud_ip,
                           launcher=(IP, "netns", "exec", self.netns))
        self._services.append(svc)
        return svc

    def records(self) -> list[dict]:
        with self._cond:
            return list(self._records)

    def schedule(self) -> AppliedSchedule:
        """The steps applied so far (see :class:`AppliedSchedule`)."""
        recs = [r for r in self.records() if "t" in r]
        col = lambda key: np.array([r[key] for r in recs], dtype=float)  # noqa: E731
        plan = self.plan or TbfPlan(self.step_s, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0),
                                    self.burst_bytes)
        return AppliedSchedule(start=self.start, step_s=self.step_s, trace_name=self.trace.name if self.trace else None,
                               trace_offset_s=self.start_s, plan=plan, applied_at=col("applied"),
                               kernel_bps=col("rate_bps"), sent_bytes=col("bytes"), drops=col("drops"),
                               backlog_bytes=col("backlog"),
                               skipped_steps=sum(r.get("skipped", 0) for r in self.records()))

    def trace_bytes(self, t0: float, t1: float) -> int:
        """The trace's own bytes between two ``time.monotonic()`` instants of this link (IP bytes)."""
        if self.trace is None:
            return int(round(((self.rate_bps or 0) / 8) * (t1 - t0)))
        return self.trace.bytes_between(self.start_s + t0 - self.start, self.start_s + t1 - self.start)

    def qdisc(self) -> dict:
        """The device side's root qdisc as the kernel reports it now (``tc -s -j qdisc show``)."""
        return json.loads(_run(TC, "-s", "-j", "qdisc", "show", "dev", self.device))[0]


def _remove(netns: str, device: str) -> None:
    """Kill what runs in ``netns``, delete the veth pair (both ends, synchronously) and the namespace."""
    if netns in _run(IP, "netns", "list", check=False).split():
        for _ in range(3):
            pids = [int(p) for p in _run(IP, "netns", "pids", netns, check=False).split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
    _run(IP, "link", "del", "dev", device, check=False)
    _run(IP, "netns", "del", netns, check=False)


def clean_stale(prefix: str = "shl") -> list[str]:
    """Remove the links with this prefix whose owner process is gone (a crashed run); their names."""
    gone = []
    for name in _run(IP, "netns", "list", check=False).split():
        m = re.fullmatch(rf"{prefix}-(\d+)-(\d+)", name)
        if not m:
            continue
        pid, n = int(m.group(1)), m.group(2)
        state = _STATE / f"{name}.json"
        try:
            owner_start = json.loads(state.read_text()).get("start_time")
        except (OSError, ValueError):
            owner_start = None
        alive = _start_time(pid) is not None and (owner_start is None or _start_time(pid) == owner_start)
        if not alive:
            logger.warning("removing the shaped link %s left by process %d, which is gone", name, pid)
            _remove(name, f"{prefix}{pid}d{n}")
            state.unlink(missing_ok=True)
            gone.append(name)
    for m in re.finditer(rf"^\d+: ({prefix}(\d+)d\d+)@", _run(IP, "-o", "link", "show", check=False), re.M):
        if _start_time(int(m.group(2))) is None:
            _run(IP, "link", "del", "dev", m.group(1), check=False)
            gone.append(m.group(1))
    return gone


@functools.lru_cache(maxsize=None)
def shaped_link_unavailable() -> str | None:
    """Why a shaped link cannot be made here (tried for real, once), or None when it can."""
    if os.geteuid() != 0:
        return f"needs root for network namespaces, veth and tc (running as uid {os.geteuid()})"
    try:
        with ShapedLink(rate_bps=1e6, prefix="shlp") as link:
            if link.qdisc().get("kind") != "tbf":
                return f"the tbf qdisc did not stick on {link.device}: {link.qdisc()}"
    except ShapedLinkError as exc:
        return str(exc)
    return None


def skip_unless_shaped_link() -> None:
    """``pytest.skip`` with the reason when this kernel or user cannot make a shaped link."""
    reason = shaped_link_unavailable()
    if reason:
        import pytest

        pytest.skip(f"no shaped link here: {reason}")
