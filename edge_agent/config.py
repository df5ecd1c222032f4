"""Agent settings: frozen dataclasses, loadable from a TOML or YAML file.

The CLI merges a config file with command-line flags (flags win); environment variables
are read only by the CLI.

>>> cfg = AgentConfig.from_mapping({"source": "clip.avi", "latency_budget_ms": 300, "sinks": ["stdout"]})
>>> cfg.policy().latency_budget_s
0.3
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from yolo_edge.remote.endpoint_url import check_endpoint_url, check_table, safe_name
from yolo_edge.errors import ConfigError

from .core import CoreConfig
from .core.link import Ladder
from yolo_edge.remote.health import HealthConfig
from .core.policy import Mode, PolicyConfig
from .core.pool import EndpointSpec

__all__ = ["AgentConfig", "CloudEndpoint", "load_config"]


@dataclass(frozen=True, kw_only=True)
class CloudEndpoint:
    """One cloud endpoint of the agent: a yolo-edge service (``http(s)://``) or an Open
    Inference Protocol server (``oip+http(s)://.../v2/models/NAME``), with its share."""

    url: str
    weight: float = 1.0
    backup: bool = False  # used only while no primary endpoint is in rotation
    max_inflight: int | None = None  # default: the agent's max_inflight
    max_batch: int | None = None  # default: the agent's max_batch
    token: str | None = None  # default: the agent's token

    @classmethod
    def parse(cls, item: Any) -> "CloudEndpoint":
        """A URL, or a table like ``{url = "http://gpu-2:3000", weight = 2, backup = false}``."""
        if isinstance(item, CloudEndpoint):
            return item
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"a cloud endpoint is a URL or a table with 'url' (and weight, backup, max_inflight, "
                              f"max_batch, token), got {item!r}")
        item = check_table(item, [f.name for f in fields(cls)], what="cloud endpoint")
        check_endpoint_url(item["url"], what="cloud endpoint")  # http(s)://: yolo-edge; oip+http(s)://: Triton
        try:
            return cls(**item)
        except TypeError as exc:
            raise ConfigError(f"bad cloud endpoint {dict(item)!r}: {exc}") from exc

    @property
    def name(self) -> str:
        """The URL without credentials or query: safe in logs, metrics labels and results."""
        return safe_name(self.url)

    def spec(self) -> EndpointSpec:
        return EndpointSpec(name=self.name, weight=self.weight, backup=self.backup, max_inflight=self.max_inflight,
                            max_batch=self.max_batch)


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    source: str = ""
    model: str | None = None  # registry name or .onnx path; None: the default model
    backend: str = "auto"
    local_threads: int | None = None  # inference threads of the local backend
    local_workers: int = 1
    #: pin the local worker threads to these CPU cores (Linux), and keep the agent's cloud
    #: senders (upload encoding and HTTP) and wake probes on the other cores, so that the
    #: network's work stays off the cores inference runs on (the thread that submits frames is
    #: the caller's: pin it too); None: the OS decides
    local_cpus: tuple[int, ...] | None = None
    #: the cloud endpoints: one URL, or several (URLs or CloudEndpoint tables); None: local only
    cloud: str | tuple[Any, ...] | None = None
    token: str | None = None
    latency_budget_ms: float = 500.0
    queue_budget: int = 8
    mode: str = "hybrid"  # hybrid | local | cloud
    max_inflight: int = 4  # cloud requests in flight
    max_batch: int = 1  # frames per cloud request (batch-aware sending)
    cloud_timeout_s: float | None = None  # default: the latency budget
    #: upload encodings, best first: each frame goes losslessly (PNG: the cloud's answer equals
    #: the local one) while that fits its deadline over the uplink as measured, else as JPEG of
    #: the highest quality that fits, down to the last (the floor). None: png,jpeg95,90,80,70
    upload_ladder: tuple[str | int, ...] | str | None = None
    #: one fixed encoding instead of the ladder: a JPEG quality (e.g. 90); None: the ladder
    cloud_jpeg_quality: int | None = None
    #: the uplink's goodput assumed until the first upload is measured, Mbit/s
    uplink_mbps: float = 10.0
    #: a frame at the cloud still unanswered when a local run could just finish by its
    #: deadline is also run locally if a worker is idle (the first answer is released)
    hedge: bool = True
    allow_model_mismatch: bool = False
    wake_timeout_s: float = 120.0
    reorder_window: int = 256  # frames held for in-order release
    #: an endpoint with max_fails failures within fail_timeout_s is out for fail_timeout_s, then probed
    max_fails: int = 3
    fail_timeout_s: float = 0.8
    fps: float | None = None  # replay pace for files; None: the file's own fps
    realtime: bool = True  # pace files like a live camera (False: as fast as admitted)
    loop: bool = False
    max_frames: int | None = None
    sinks: tuple[str, ...] = ("stdout",)
    annotate_dir: str | None = None
    spool_dir: str | None = None  # webhook spools not named in their spec; the CLI's default: the user's state dir
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no /metrics server
    conf: float = 0.25
    iou: float = 0.45
    classes: tuple[int | str, ...] | None = None  # names or ids ("person,bus"); None: every class

    def __post_init__(self) -> None:
        object.__setattr__(self, "sinks", tuple(self.sinks))
        if self.cloud is not None:
            items = list(self.cloud) if isinstance(self.cloud, (list, tuple)) else [self.cloud]
            endpoints = tuple(CloudEndpoint.parse(item) for item in items)
            object.__setattr__(self, "cloud", endpoints or None)
            names = [e.name for e in endpoints]
            if len(set(names)) != len(names):
                raise ConfigError(f"cloud endpoints must differ, got {names}")
        if isinstance(self.classes, str):
            object.__setattr__(self, "classes", tuple(c.strip() for c in self.classes.split(",") if c.strip()))
        elif self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.local_cpus is not None:
            cpus = (self.local_cpus,) if isinstance(self.local_cpus, int) else tuple(self.local_cpus)
            if not cpus or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus):
                raise ConfigError(f"local_cpus must be CPU core numbers like [0] or [2, 3], got {self.local_cpus!r}")
            object.__setattr__(self, "local_cpus", cpus)
        if not isinstance(self.uplink_mbps, (int, float)) or isinstance(self.uplink_mbps, bool) or \
                not 0 < self.uplink_mbps < 1e6:
            raise ConfigError(f"uplink_mbps must be a positive number of Mbit/s (e.g. 5), got {self.uplink_mbps!r}")
        if not isinstance(self.hedge, bool):
            raise ConfigError(f"hedge must be true or false, got {self.hedge!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ConfigError(f"fps must be a positive number of frames per second, got {self.fps!r}")
        self.core()  # validates every budget, bound and threshold, with a ConfigError naming it

    def policy(self) -> PolicyConfig:
        if not isinstance(self.latency_budget_ms, (int, float)) or isinstance(self.latency_budget_ms, bool):
            raise ConfigError(f"latency_budget_ms must be a number of milliseconds, got {self.latency_budget_ms!r}")
        return PolicyConfig(latency_budget_s=self.latency_budget_ms / 1000.0, queue_budget=self.queue_budget,
                            mode=self.mode)

    @property
    def endpoints(self) -> tuple[CloudEndpoint, ...]:
        """The cloud endpoints (none in local mode or without a cloud)."""
        return () if self.cloud is None or self.mode == Mode.LOCAL.value else self.cloud

    def core(self) -> CoreConfig:
        """The device core's settings."""
        return CoreConfig(policy=self.policy(), health=HealthConfig(max_fails=self.max_fails,
                                                                    fail_timeout_s=self.fail_timeout_s),
                          endpoints=tuple(e.spec() for e in self.endpoints), local_workers=self.local_workers,
                          max_inflight=self.max_inflight, max_batch=self.max_batch, cloud_timeout_s=self.cloud_timeout_s,
                          window=self.reorder_window, wake_timeout_s=self.wake_timeout_s, hedge=self.hedge,
                          ladder=self.ladder(), uplink_prior_bps=self.uplink_mbps * 1e6)

    def ladder(self) -> Ladder:
        """The upload encodings to choose from, best first."""
        if self.cloud_jpeg_quality is not None:
            if self.upload_ladder is not None:
                raise ConfigError("set either cloud_jpeg_quality (one fixed encoding) or upload_ladder, not both")
            return Ladder.parse([self.cloud_jpeg_quality])
        return Ladder.parse(self.upload_ladder)

    @property
    def timeout_s(self) -> float:
        """How long one cloud request may take (the client's timeout): by default the budget."""
        return self.core().request_timeout_s

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "AgentConfig":
        known = {f.name for f in fields(cls)}
        data = {k.replace("-", "_"): v for k, v in dict(data).items()}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown agent setting(s) {unknown}; known settings are {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad agent settings: {exc}") from exc

    def replace(self, **changes: Any) -> "AgentConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(path: str | Path) -> AgentConfig:
    """Read a ``.toml`` or ``.yaml``/``.yml`` file; settings may sit under an ``[agent]`` table."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib  # novermin: this branch runs on Python 3.11+ only
            else:  # Python 3.10: the same parser, from PyPI (a dependency there)
                import tomli as tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as exc:  # tomllib / yaml parse errors
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table of settings, got {type(data).__name__}")
    return AgentConfig.from_mapping(data.get("agent", data))
