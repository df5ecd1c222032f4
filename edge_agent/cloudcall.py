"""The agent's calls to its cloud endpoints: one request or one wake, turned into the core's event.

:class:`CloudWithOptions` wraps an endpoint's client for ``edge-agent run``: it sends the
agent's detection options with every request and tells the reachability watch how each call went.

:class:`CloudCalls` is the part of :class:`edge_agent.runner.Agent` that talks to the endpoint
clients (:class:`yolo_edge.remote.cloud.CloudClient`, :class:`yolo_edge.remote.oip.OipClient`, or anything
satisfying :class:`edge_agent.protocols.CloudEndpoint`). It carries out a ``SendBatch`` or a
``Wake`` on the calling thread (a sender or a wake thread of the agent) and answers with the
event the core is to be fed: every frame's answer or why there is none (``CloudDone``), or
whether the endpoint is up and serves the pool's model (``WakeDone``). What it learns on the
way (the frames' encoded sizes, the upload leaving the device) it reports at once through
``report``. It holds no lock and makes no decision: the agent feeds the core under its lock,
and stamps each event then (``at``), when the core takes it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

from yolo_edge.remote.balancer import ModelRule
from yolo_edge.errors import (
    CloudDeadlineExpiredError, CloudError, CloudModelMismatchError, CloudTimeoutError, CloudUnavailableError,
    ConfigError, YoloEdgeError,
)
from yolo_edge.remote.wire import FrameStatus

from .core.events import CloudDone, Encoded, Event, Failure, SendBatch, Uploaded, Wake, WakeDone
from .core.link import Rung
from .protocols import CloudEndpoint
from .stagetime import StageTimes

if TYPE_CHECKING:
    from .reach import ReachWatch

__all__ = ["CloudCalls", "CloudWithOptions", "pool_model"]

logger = logging.getLogger(__name__)


def pool_model(clouds: Sequence[CloudEndpoint], names: Sequence[str]) -> ModelRule:
    """The one model every endpoint must answer from: the device's, as the clients are pinned to it.

    ``edge-agent run`` pins every client to the sha256 of the agent's model (its registry pin);
    clients pinned to two models are refused. None: no client is pinned, no answer can be checked.
    """
    pins = {name: c.expected_sha256.lower() for c, name in zip(clouds, names) if c.expected_sha256}
    if len(set(pins.values())) > 1:
        raise ConfigError("the cloud endpoints are pinned to different models ("
                          + ", ".join(f"{name}: {sha[:12]}..." for name, sha in pins.items())
                          + "): the pool serves one model, the device's; pin every client to it "
                          "(expected_sha256=Detector(model).info.sha256)")
    if clouds and not pins:
        logger.warning("no cloud endpoint names the model it must serve (expected_sha256): answers of %s are not "
                       "checked against the device's model; pass expected_sha256=Detector(model).info.sha256 "
                       "(edge-agent run does)", ", ".join(names))
    return ModelRule(next(iter(pins.values()), None))


class CloudCalls:
    """Requests and wakes to ``clouds`` (in the core's endpoint order), on the caller's thread.

    ``model``: the pool's model, every answer from another refused (unless ``allow_mismatch``);
    ``clock``: the agent's clock, the one every event is stamped with; ``report(event)``: feeds
    an event to the core as soon as it is known (the agent takes its lock); ``stages``: where
    the time of each upload is counted.
    """

    def __init__(self, clouds: Sequence[CloudEndpoint], *, model: ModelRule, allow_mismatch: bool,
                 clock: Callable[[], float], report: Callable[[Event], None], stages: StageTimes) -> None:
        self.clouds, self.model, self.allow_mismatch = list(clouds), model, allow_mismatch
        self.clock, self.report, self.stages = clock, report, stages

    def send(self, action: SendBatch, images: list[Any]) -> CloudDone:
        """One request to one endpoint; every frame's answer, or why there is none."""
        # a deadline becomes "seconds left" here, as the client takes it: computed when the request
        # was handed to this thread, it would stretch by the wait for a free sender (measured: 6 ms)
        now = self.clock()
        budgets = [max(0.0, deadline - now - action.network_s) for deadline in action.deadlines]
        client = self.clouds[action.endpoint]
        failure, retry_after, message = None, None, ""
        answers, metas, frame_errors, network = None, None, {}, None
        sent = self.clock()
        options: dict[str, Any] = {}
        not_sent: list[int] = []  # the frames the client did not upload: their budgets ran out first
        if getattr(client, "upload_encodings", False) and action.encodings:
            # the encoding the core chose for each frame, and when the upload has left the device
            options["jpeg_qualities"] = [Rung.parse(name).quality for name in action.encodings]
            options["on_uploaded"] = lambda sizes, rtt_s=None: self.report(
                Uploaded(at=self.clock(), request=action.request, frame_bytes=tuple(sizes), rtt_s=rtt_s))
            options["on_not_sent"] = not_sent.append
            options["on_encoded"] = lambda sizes: self.report(
                Encoded(at=self.clock(), request=action.request, frame_bytes=tuple(sizes)))
        try:
            with self.stages.stage("upload"):
                results = client.detect_frames(images, budgets_s=budgets, **options)
        except CloudModelMismatchError as exc:
            failure, message = Failure.MISMATCH, str(exc)
        except CloudDeadlineExpiredError as exc:  # the endpoint refused the whole request as too late
            results, message = None, str(exc)
            answers, metas = [None] * len(images), [{}] * len(images)
            frame_errors = {i: FrameStatus.EXPIRED for i in range(len(images))}
        except CloudTimeoutError as exc:
            failure, message = Failure.TIMEOUT, str(exc)
        except CloudUnavailableError as exc:
            failure, message, retry_after = Failure.UNAVAILABLE, str(exc), exc.retry_after_s
        except (CloudError, YoloEdgeError) as exc:
            failure, message = Failure.ERROR, str(exc)
        except Exception as exc:  # anything else from the transport counts as a cloud failure
            failure, message = Failure.ERROR, f"cloud request failed: {exc!r}"
        else:
            failure, message = self._other_model(results)
            if failure is None:
                answers, metas = [], []
                server_s = max((r.timing.server_ms for r in results), default=0.0) / 1000.0
                if server_s > 0:  # the endpoint said how long it took: the rest was the network's
                    network = max(0.0, self.clock() - sent - server_s)
                for i, r in enumerate(results):
                    answers.append(r.detections if r.ok else None)
                    metas.append({"model": {"name": r.model.name, "sha256": r.model.sha256}, "timing": r.timing.to_dict()})
                    if not r.ok:
                        frame_errors[i] = r.status
                        if r.error:
                            logger.debug("%s could not answer frame %d: %s", client, action.seqs[i], r.error)
        if failure is None:
            return CloudDone(at=self.clock(), request=action.request, answers=answers, metas=metas,
                             frame_errors=frame_errors, network_s=network,
                             uploaded=False if len(set(not_sent)) == len(images) else None)
        return CloudDone(at=self.clock(), request=action.request, failure=failure, retry_after_s=retry_after,
                         message=message)

    def _other_model(self, results: Sequence[Any]) -> tuple[Failure | None, str]:
        """MISMATCH when an answer came from another model than the pool's (its client may not check)."""
        if self.model.sha256 is None or self.allow_mismatch:
            return None, ""
        for r in results:
            problem = self.model.judge(r.model.sha256, r.model.name) if r.ok else None
            if problem:
                return Failure.MISMATCH, "it answered from another model: " + problem
        return None, ""

    def wake(self, action: Wake) -> WakeDone:
        """Wake (or probe) an endpoint and check it runs the pool's model before it is used."""
        client = self.clouds[action.endpoint]
        failure, message, ok = None, "", False
        try:
            ok = bool(client.wake(wait_s=action.wait_s))
            if ok and client.expected_sha256:
                client.verify_model()
        except CloudModelMismatchError as exc:
            failure, message, ok = Failure.MISMATCH, str(exc), False
        except YoloEdgeError as exc:
            failure, message, ok = Failure.ERROR, str(exc), False
        return WakeDone(at=self.clock(), endpoint=action.endpoint, ok=ok, failure=failure, message=message)


class CloudWithOptions:
    """A cloud client that sends the agent's detection options (conf, iou, classes) with every
    request, so a frame answered in the cloud is filtered like one answered locally."""

    def __init__(self, client: Any, *, conf: float, iou: float, classes: list[int] | None,
                 watch: ReachWatch | None = None, index: int = 0) -> None:
        self.client = client
        self.endpoint = client.endpoint
        self.expected_sha256 = client.expected_sha256
        self.options = {"conf": conf, "iou": iou, "classes": classes}
        self.upload_encodings = getattr(client, "upload_encodings", False)
        self.watch, self.index = watch, index

    def _call(self, fn: Any, images: Sequence[Any], kwargs: dict) -> Any:
        try:
            answer = fn(images, **{**self.options, **kwargs})
        except CloudUnavailableError as exc:
            if self.watch is not None and exc.status_code is None:  # no HTTP answer at all: not reachable
                from yolo_edge.remote.endpoint import why_unreachable  # (the HTTP stack: loaded only when it failed)

                self.watch.request_failed(self.index, why_unreachable(exc.original) if exc.original else str(exc))
            raise
        if self.watch is not None:
            self.watch.request_answered(self.index)
        return answer

    def detect_frames(self, images: Sequence[Any], **kwargs: Any) -> Any:
        return self._call(self.client.detect_frames, images, kwargs)

    def detect_many(self, images: Sequence[Any], **kwargs: Any) -> Any:
        return self._call(self.client.detect_many, images, kwargs)

    def wake(self, wait_s: float = 0) -> bool:
        ready = self.client.wake(wait_s=wait_s)
        if ready and self.watch is not None:
            self.watch.request_answered(self.index)
        return ready

    def verify_model(self) -> dict:
        return self.client.verify_model()

    def close(self) -> None:
        self.client.close()
