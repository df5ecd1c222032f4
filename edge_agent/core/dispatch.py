"""The cloud side of the device core: its queue, its requests and the uplink they cross.

:class:`CloudDispatch` is the part of :class:`edge_agent.core.DeviceCore` that owns the frames
waiting for the cloud, the requests in flight with their timeouts, the uplink's projection
(:class:`edge_agent.core.link.Uplink`) and the frames' encoded sizes, and that plans each request:
which endpoint, which frames, which encoding. It books a request once, from
:meth:`~CloudDispatch.send` to :meth:`~CloudDispatch.done` or its timeout, and tells the
pool (:class:`edge_agent.core.pool.CloudPool`) what it needs to know of it. What becomes of the
frames of a request that failed, timed out or came back is the core's to decide: the
dispatcher hands such requests back, and never routes a frame itself.

Like the core it never reads a clock: every method takes the event time.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Iterator

from yolo_edge.errors import ConfigError
from yolo_edge.remote.wire import FrameStatus

from .events import CloudDone, Encoded, Failure, SendBatch, Uploaded
from .frames import Reason
from .hedge import Headroom
from .link import FrameSizes, Ladder, Rung, Uplink
from .policy import PolicyConfig
from .pool import CloudPool, Endpoint
from .window import FrameState, ReleaseWindow, Stage

__all__ = ["CloudDispatch", "Request"]

logger = logging.getLogger(__name__)

#: the upload encoding is one at which the frames sent to the cloud over the last second would
#: load the uplink's planned goodput to at most this share
_LINK_LOAD = 0.8


@dataclass
class Request:
    """One request to one endpoint, from its send to its answer or its timeout."""

    id: int
    endpoint: Endpoint
    seqs: tuple[int, ...]
    sent_at: float
    depth: int  # frames the endpoint already had in flight
    pool_depth: int  # frames the whole pool had in flight
    timeout_at: float
    deadlines: tuple[float, ...]
    uploaded_at: float | None = None  # when its body had left the device (None: not known)
    timed_out: bool = False
    encoded: bool = False  # its frames' real sizes are known (an Encoded event)

    @property
    def since(self) -> float:
        """Since when the endpoint has had it."""
        return self.uploaded_at if self.uploaded_at is not None else self.sent_at


class CloudDispatch:
    """The cloud queue, the requests in flight and the uplink of one device.

    ``frames`` is the core's release window (the dispatcher moves a frame between the cloud
    stages and reads its deadline), ``pool`` the endpoints, ``headroom`` the flow of frames the
    policy has wanted at the cloud (for the encoding the link can keep up with).
    """

    def __init__(self, *, policy: PolicyConfig, ladder: Ladder, timeout_s: float, probe_after_s: float,
                 uplink_prior_bps: float | None, frames: ReleaseWindow, pool: CloudPool, headroom: Headroom,
                 counters: Counter) -> None:
        self._pcfg, self.ladder, self.timeout_s, self.probe_after_s = policy, ladder, timeout_s, probe_after_s
        self._frames, self.pool, self._headroom, self.counters = frames, pool, headroom, counters
        self.queue: deque[int] = deque()  # frames waiting for a request, in order
        self.requests: dict[int, Request] = {}
        self._timeouts: list[tuple[float, int]] = []
        self._ids = 0
        self.link = Uplink(prior_bps=uplink_prior_bps)
        self.sizes = FrameSizes()
        self.link_doubt = False  # an upload ended unacknowledged before the link was ever measured
        self.uploads_reported = False  # the driver reports when an upload has left (Uploaded)

    # -- what the core asks ----------------------------------------------------------------
    def times(self, now: float, *, ahead: int, rung: Rung | None = None) -> tuple[float, float | None, float | None]:
        """For a frame joining the cloud queue behind ``ahead`` frames: its time on the uplink
        (waiting and crossing, at ``rung`` or the floor), and its answer time at the planning and
        the optimistic quantile (None before the first answer)."""
        floor = self.sizes.estimate(rung or self.ladder.floor)
        link_s = self.link.upload_end(now, floor, ahead * self.sizes.estimate(self.ladder.floor)) - now
        depth = self.pool.frames + ahead
        p = self._pcfg
        plan = self.pool.model.quantile(depth, p.cloud_quantile, now)
        low = self.pool.model.quantile(depth, p.cloud_chance_quantile, now)
        return link_s, None if plan is None else link_s + plan, None if low is None else link_s + low

    def link_free(self, now: float) -> bool:
        """No upload waits for the uplink (one may be on it)."""
        return self.link.accepting(now) or not self.queue

    def link_stalled(self, now: float) -> bool:
        """An upload on the link is past the time it should have left by (as measured)."""
        # (free_at is ``now`` while nothing is on the link or its goodput is unknown)
        return self.uploads_reported and self.link.free_at(now) > now + self.link.lead_s and self.link.overdue(now)

    def waiting(self) -> Iterator[FrameState]:
        """The frames with no answer from the cloud yet: queued, then in flight (a hedged one aside)."""
        for seq in self.queue:
            yield self._frames[seq]
        for req in self.requests.values():
            for seq in req.seqs:
                f = self._frames.get(seq)
                if f is not None and f.stage is Stage.CLOUD_FLIGHT and f.request == req.id and not f.hedged:
                    yield f

    def next_timer(self, now: float) -> float | None:
        """The next request timeout, or the uplink freeing up for a queued frame."""
        while self._timeouts and self._timeouts[0][1] not in self.requests:
            heapq.heappop(self._timeouts)
        times = [self._timeouts[0][0]] if self._timeouts else []
        if self.queue:
            link = self.link.next_timer(now)
            if link is not None:
                times.append(link)
        return min(times, default=None)

    def check(self, event: CloudDone | Encoded | Uploaded) -> None:
        """Raise a ConfigError for an event about a request that cannot be applied (before any change)."""
        if isinstance(event, CloudDone):
            req = self.requests.get(event.request)
            if req is None:
                raise ConfigError(f"CloudDone for request {event.request}, which this core never sent (or answered twice)")
            if event.failure is None:
                n = len(req.seqs)
                for name, values in (("answers", event.answers), ("metas", event.metas)):
                    if values is not None and len(values) != n:
                        raise ConfigError(f"request {req.id} sent {n} frames but got {len(values)} {name}")
                if any(not 0 <= i < n for i in event.frame_errors):
                    raise ConfigError(f"request {req.id} has {n} frames; frame_errors names {sorted(event.frame_errors)}")
            if event.uploaded is False and req.uploaded_at is not None:
                raise ConfigError(f"CloudDone for request {req.id} says it was not uploaded, but its upload was reported")
            return
        req = self.requests.get(event.request)
        if req is not None and req.uploaded_at is None and event.frame_bytes and len(event.frame_bytes) != len(req.seqs):
            raise ConfigError(f"{type(event).__name__} for request {req.id} gives {len(event.frame_bytes)} frame "
                              f"sizes; it has {len(req.seqs)} frames")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in event.frame_bytes):
            raise ConfigError(f"{type(event).__name__} frame sizes must be whole numbers of bytes >= 0, got "
                              f"{event.frame_bytes!r}")

    # -- planning and sending --------------------------------------------------------------
    def plan(self, now: float) -> tuple[Endpoint, tuple[int, ...], Rung] | Reason | None:
        """The next request: (endpoint, frames, encoding), None while no endpoint has a free slot,
        or why the head of the queue cannot go (the uplink cannot carry it in time).

        The encoding is the best rung whose answer still fits the batch's deadline (at the
        planning quantile, else at the optimistic one) without making a frame queued behind
        it miss a deadline it would meet at the floor.
        """
        p, ladder = self._pcfg, self.ladder
        head = self._frames[self.queue[0]]
        floor_bytes = self.sizes.estimate(ladder.floor)
        ep = self.pool.pick(now, head.deadline, p.cloud_quantile,
                            upload_s=self.link.upload_end(now, floor_bytes) - now, held_since=self.held_since)
        if ep is None:
            return None
        seqs = tuple(self.queue[i] for i in range(min(ep.max_batch, len(self.queue))))
        # the link not measured yet and an upload already failed on it: small ones until one is
        rungs = (ladder.floor,) if self.link.last_finish is None and self.link_doubt else self._sustainable(now)
        due = min(self._frames[s].deadline for s in seqs)
        behind = [self._frames[self.queue[i]] for i in range(len(seqs), min(len(self.queue), len(seqs) + 8))]
        for q in (p.cloud_quantile, p.cloud_chance_quantile):
            post = self.pool.post_upload(ep, q, now, held_since=self.held_since(ep))
            for rung in rungs:
                nbytes = len(seqs) * self.sizes.estimate(rung)
                if (self.link.upload_end(now, nbytes) + post <= due
                        and self._behind_still_fit(now, behind, nbytes, floor_bytes, len(seqs))):
                    return ep, seqs, rung
        best = rungs[0]
        if self.link.upload_end(now, len(seqs) * self.sizes.estimate(best)) - now <= 0.1 * max(0.0, due - now):
            return ep, seqs, best  # the uplink is no factor: a chance, as good as it gets
        link_s = self.link.upload_end(now, len(seqs) * floor_bytes) - now
        post_low = self.pool.post_upload(ep, p.cloud_chance_quantile, now)
        if link_s > post_low and now + link_s + post_low > due and not self.link.stale(now, self.probe_after_s):
            return Reason.UPLINK_TOO_SLOW
        return ep, seqs, ladder.floor  # a chance (or a probe of a link not measured lately), at the smallest size

    def held_since(self, ep: Endpoint) -> float | None:
        """Since when ``ep`` has had its oldest request in flight (not timed out); None: it has none."""
        return min((r.since for r in self.requests.values() if r.endpoint is ep and not r.timed_out), default=None)

    def _sustainable(self, now: float) -> tuple[Rung, ...]:
        """The rungs at which the link keeps up with the frames the policy has been sending it
        (the last second): one frame that fits its deadline at a rich encoding can still hold
        the link while the frames after it arrive, each then too late for it."""
        g = self.link.plan_Bps(now)
        rate = self._headroom.cloud_rate(now)
        rungs = self.ladder.rungs
        if g is None or not rate:
            return rungs
        return tuple(r for r in rungs if rate * self.sizes.estimate(r) <= _LINK_LOAD * g) or (self.ladder.floor,)

    def _behind_still_fit(self, now: float, behind: list[FrameState], nbytes: float, floor_bytes: float, n: int) -> bool:
        p = self._pcfg
        post = self.pool.model.quantile(self.pool.frames + n, p.cloud_quantile, now) or 0.0
        base = n * floor_bytes
        for k, g in enumerate(behind, start=1):
            at_floor = self.link.upload_end(now, base + k * floor_bytes) + post
            if at_floor <= g.deadline and self.link.upload_end(now, nbytes + k * floor_bytes) + post > g.deadline:
                return False
        return True

    def send(self, ep: Endpoint, seqs: tuple[int, ...], rung: Rung, now: float) -> SendBatch:
        """Take ``seqs`` (the head of the queue) off the queue into one request to ``ep``."""
        for _ in seqs:
            self.queue.popleft()
        self._ids += 1
        frames = [self._frames[s] for s in seqs]
        nbytes = len(seqs) * self.sizes.estimate(rung)
        self.link.start(self._ids, now, nbytes)
        req = Request(self._ids, ep, seqs, now, ep.frames, self.pool.frames, now + self.timeout_s,
                      tuple(f.deadline for f in frames))
        self.requests[req.id] = req
        heapq.heappush(self._timeouts, (req.timeout_at, req.id))
        self.pool.sent(ep, len(seqs))
        for f in frames:
            f.move(Stage.CLOUD_FLIGHT)
            f.request, f.rung, f.nbytes = req.id, rung, None
        self.counters["requests"] += 1
        # each frame's budget on the wire is net of one round trip (the endpoint's measured one,
        # else the link's), not of its upload: the service counts it from the request's first
        # byte, so the upload spends it there. Net of the planned upload too, the upload was paid
        # for twice: the service expired frames it could still answer, and a chance (whose
        # planned upload spends its whole budget) was answered expired by the client unsent
        network = max(self.link.latency_s, ep.network.quantile(0.5) or 0.0)
        return SendBatch(req.id, ep.index, seqs, self.timeout_s, tuple(f.deadline for f in frames), network,
                         encodings=tuple(rung.name for _ in seqs))

    def sample(self, req: Request, now: float, expired: set[int] = frozenset()) -> None:
        """What the request's frames took, from joining the pool to ``now``, for the cloud's estimate."""
        since = req.since
        for i, deadline in enumerate(req.deadlines):
            # a frame answered expired would have been answered after its deadline at the earliest
            until = max(now, deadline) if i in expired else now
            self.pool.model.update(req.pool_depth, max(0.0, until - since), at=now)

    # -- what the driver reports -----------------------------------------------------------
    def encoded(self, ev: Encoded) -> None:
        req = self.requests.get(ev.request)
        if req is None or req.uploaded_at is not None or not ev.frame_bytes:
            return
        req.encoded = True
        self._frame_sizes(req, ev.frame_bytes)
        self.link.resize(req.id, sum(ev.frame_bytes), ev.at)  # its time on the link, from its real bytes

    def _frame_sizes(self, req: Request, frame_bytes: tuple[int, ...]) -> None:
        for seq, nbytes in zip(req.seqs, frame_bytes):
            f = self._frames.get(seq)
            if f is not None and f.rung is not None and nbytes > 0:
                f.nbytes = int(nbytes)
                self.sizes.update(f.rung, int(nbytes))

    def uploaded(self, ev: Uploaded) -> None:
        self.uploads_reported = True
        req = self.requests.get(ev.request)
        if req is None or req.uploaded_at is not None:
            # over already (it timed out while its bytes were still queued): they have left now
            self.link.finish(ev.request, ev.at, sum(ev.frame_bytes) if ev.frame_bytes else None, ev.rtt_s)
            return
        req.uploaded_at = ev.at
        if not req.encoded:
            self._frame_sizes(req, ev.frame_bytes)
        self.link.finish(req.id, ev.at, sum(ev.frame_bytes) if ev.frame_bytes else None, ev.rtt_s)

    def done(self, ev: CloudDone) -> Request:
        """The request ``ev`` answers, off the books (the event was checked by :meth:`check`)."""
        req = self.requests.pop(ev.request)
        if req.uploaded_at is None:
            self.link.drop(req.id)
            if ev.failure is None and ev.uploaded is None and not self.uploads_reported and self.link.prior_Bps is not None:
                # this driver does not say when an upload has left: nothing can be measured, so
                # the uplink is not planned for (a guessed prior would only hold requests back)
                logger.debug("the driver reports no uploads: the uplink is not modelled")
                self.link.prior_Bps = None
        if not req.timed_out:
            self.pool.finished(req.endpoint, len(req.seqs))
        return req

    def answered(self, req: Request, ev: CloudDone) -> None:
        """The endpoint answered ``req`` (some frames maybe expired or in error): what it took."""
        n = len(req.seqs)
        expired = {i for i, why in ev.frame_errors.items() if why is FrameStatus.EXPIRED}
        self.sample(req, ev.at, expired)
        if len(expired) == n:
            # the endpoint judged it could not answer any of them in time: a quick "expired" is no
            # sign of speed; the answer would have taken at least until the last deadline
            self.pool.timed_out_sample(req.endpoint, since=req.since, depth=req.depth,
                                       now=max(ev.at, max(req.deadlines)))
            self.pool.answered(req.endpoint, n=0, since=req.since, depth=req.depth, now=ev.at, sample=False)
        else:
            # (``network_s``: the round trip less the endpoint's own time, which counts from the
            # request's arrival and so includes the upload: what is left is the network's)
            self.pool.answered(req.endpoint, n=n - len(ev.frame_errors), since=req.since, depth=req.depth,
                               now=ev.at, network_s=ev.network_s)

    def failed(self, req: Request, ev: CloudDone) -> bool:
        """``req`` failed (``ev.failure``): counted against its endpoint unless its timeout already
        was. Whether its frames are still to be re-routed (not when it had timed out: they were then)."""
        self.counters[f"cloud_failure_{ev.failure.value}"] += 1
        if req.timed_out:
            return False
        if ev.failure is Failure.TIMEOUT:
            self.sample(req, ev.at)  # censored: the answer takes at least this long
        self.pool.failed(req.endpoint, ev.at, ev.failure, retry_after_s=ev.retry_after_s, message=ev.message)
        return True

    def expire(self, now: float) -> Iterator[Request]:
        """The requests whose timeout has come, each booked as timed out as it is yielded (its
        frames are the core's to re-route before the next one is booked)."""
        while self._timeouts and self._timeouts[0][0] <= now:
            _, rid = heapq.heappop(self._timeouts)
            req = self.requests.get(rid)
            if req is None or req.timed_out:
                continue
            req.timed_out = True
            self.pool.finished(req.endpoint, len(req.seqs))
            if req.uploaded_at is None and self.link.last_finish is None:
                self.link_doubt = True
            if req.uploaded_at is None and self.uploads_reported:
                # still on the uplink: the link stalled, not the endpoint (its bytes stay queued until they leave)
                self.counters[("uplink", "stalled_requests")] += 1
            elif req.uploaded_at is None and self.link.prior_Bps is not None:
                # before any upload was reported, with the uplink modelled: the first uploads,
                # planned at the prior, can take longer than a request may. Timed out as the
                # endpoint's, they said it takes the whole timeout to answer, and that estimate,
                # with few answers to replace it, kept a real 1 Mbit/s device from offloading for
                # the rest of its run. Nothing is known of the link yet: its upload is let go.
                self.link.drop(req.id)
                self.counters[("uplink", "unmeasured_timeouts")] += 1
            else:
                self.link.drop(req.id)
                self.counters["cloud_timeouts"] += 1
                self.sample(req, now)  # censored: the answer takes at least this long
                self.pool.timed_out_sample(req.endpoint, since=req.since, depth=req.depth, now=now)
                self.pool.failed(req.endpoint, now, Failure.TIMEOUT, message=f"no answer within {self.timeout_s:.3f} s")
            yield req
