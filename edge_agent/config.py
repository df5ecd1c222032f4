"""Agent settings: frozen dataclasses, loadable from a TOML or YAML file.

The CLI merges a config file with command-line flags (flags win); environment variables
are read only by the CLI.

>>> cfg = AgentConfig.from_mapping({"source": "clip.avi", "latency_budget_ms": 300, "sinks": ["stdout"]})
>>> cfg.policy().latency_budget_s
0.3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from yolo_edge.errors import ConfigError

from .breaker import BreakerConfig
from .policy import Mode, PolicyConfig

__all__ = ["AgentConfig", "load_config"]


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    source: str = ""
    model: str | None = None  # registry name or .onnx path; None: the default model
    backend: str = "auto"
    local_threads: int | None = None  # inference threads of the local backend
    local_workers: int = 1
    cloud: str | None = None  # service URL; None: local only
    token: str | None = None
    latency_budget_ms: float = 500.0
    queue_budget: int = 8
    mode: str = "hybrid"  # hybrid | local | cloud
    max_inflight: int = 4  # cloud requests in flight
    max_batch: int = 1  # frames per cloud request (batch-aware sending)
    cloud_timeout_s: float | None = None  # default: budget + reorder grace
    allow_model_mismatch: bool = False
    wake_timeout_s: float = 120.0
    reorder_window: int = 256
    late_grace_s: float = 1.0
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 5.0
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "sinks", tuple(self.sinks))
        if self.local_workers < 1 or self.max_inflight < 1 or self.max_batch < 1:
            raise ConfigError(
                f"local_workers, max_inflight and max_batch must be >= 1, got {self.local_workers}, "
                f"{self.max_inflight}, {self.max_batch}"
            )
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps!r}")
        Mode(self.mode)  # raises ValueError naming the bad mode
        self.policy()  # validate budgets early
        self.breaker()

    def policy(self) -> PolicyConfig:
        return PolicyConfig(latency_budget_s=self.latency_budget_ms / 1000.0, queue_budget=self.queue_budget,
                            mode=Mode(self.mode))

    def breaker(self) -> BreakerConfig:
        return BreakerConfig(threshold=self.breaker_threshold, cooldown_s=self.breaker_cooldown_s,
                             max_cooldown_s=max(60.0, self.breaker_cooldown_s))

    @property
    def timeout_s(self) -> float:
        return self.cloud_timeout_s or (self.latency_budget_ms / 1000.0 + self.late_grace_s)

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
            import tomllib

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
