"""Triton ``config.pbtxt`` for a YOLO model: a typed description and its text rendering.

The text follows Triton's ``model_config.proto`` (the ``ModelConfig`` message), written
without a protobuf dependency; ``tests/triton`` parses it back with protobuf's
``text_format`` into tritonclient's ``ModelConfig`` and checks it field by field.

Dynamic batching always comes with a queue policy that REJECTs requests whose timeout
passed while they waited, and lets each request set its own (shorter) timeout: that is
how a frame's remaining budget travels on the wire (the request ``timeout`` parameter of
Triton's schedule-policy extension, in microseconds), and why the server never computes
a frame that is already late.

>>> cfg = TritonModelConfig(name="yolo", platform="onnxruntime_onnx", max_batch_size=8,
...                         input=TensorSpec("images", "FP32", (3, 640, 640)),
...                         outputs=(TensorSpec("output0", "FP32", (84, 8400)),))
>>> print(render_config(cfg).splitlines()[1])
platform: "onnxruntime_onnx"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ConfigError

__all__ = ["TensorSpec", "DynamicBatching", "TritonModelConfig", "render_config", "PLATFORMS", "DATATYPES"]

#: what goes into ``platform:`` (or ``backend:`` for "python") per export kind
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "python": "python"}
#: Open Inference Protocol datatypes we serve, and their ``data_type`` in config.pbtxt
DATATYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16"}
_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, Open Inference Protocol datatype, and dims without the batch axis."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ConfigError(f"tensor {self.name!r}: datatype must be one of {sorted(DATATYPES)}, got {self.datatype!r}")
        if not self.dims or any(int(d) < 1 and int(d) != -1 for d in self.dims):
            raise ConfigError(f"tensor {self.name!r}: dims must be positive (or -1 for a variable axis), got {self.dims}")


@dataclass(frozen=True, kw_only=True)
class DynamicBatching:
    """Triton's dynamic batcher: batch sizes it aims for, how long a request may wait for more."""

    preferred_batch_size: tuple[int, ...] = (4, 8)
    max_queue_delay_microseconds: int = 2000
    preserve_ordering: bool = True
    #: the longest any request may wait in the queue. It must not be 0: Triton lets a
    #: request's own ``timeout`` override the default only when it is shorter, so with 0
    #: ("no timeout") every per-request deadline would be ignored.
    default_timeout_microseconds: int = 60_000_000

    def check(self, max_batch_size: int) -> None:
        """Raise ConfigError unless Triton would read these settings as meant for ``max_batch_size``."""
        if max_batch_size < 1:
            raise ConfigError("dynamic batching needs max_batch_size >= 1")
        bad = [b for b in self.preferred_batch_size if not 1 <= b <= max_batch_size]
        if bad:
            raise ConfigError(f"preferred batch sizes {bad} are outside 1..max_batch_size={max_batch_size}")
        if self.max_queue_delay_microseconds < 0:
            raise ConfigError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_microseconds}")
        if self.default_timeout_microseconds < 1:
            raise ConfigError("default_timeout_microseconds must be >= 1: with 0 Triton ignores every request's "
                              f"own timeout, got {self.default_timeout_microseconds}")


@dataclass(frozen=True, kw_only=True)
class TritonModelConfig:
    name: str
    platform: str  # a value of PLATFORMS
    max_batch_size: int
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    instance_count: int = 1
    instance_kind: str = "KIND_GPU"
    dynamic_batching: DynamicBatching | None = field(default_factory=DynamicBatching)
    #: free-form ``parameters``: string keys and values (Triton's ModelParameter.string_value)
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS.values():
            raise ConfigError(f"platform must be one of {sorted(PLATFORMS.values())}, got {self.platform!r}")
        if self.max_batch_size < 0:
            raise ConfigError(f"max_batch_size must be >= 0 (0: no batching), got {self.max_batch_size}")
        if self.instance_kind not in _KINDS or self.instance_count < 1:
            raise ConfigError(f"instance_group needs kind in {_KINDS} and count >= 1, "
                              f"got {self.instance_kind!r} x {self.instance_count}")
        if self.dynamic_batching is not None:
            self.dynamic_batching.check(self.max_batch_size)

def _quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, everything else as octal bytes."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor(kind: str, spec: TensorSpec) -> list[str]:
    dims = ", ".join(str(int(d)) for d in spec.dims)
    return [f"{kind} [", "  {", f"    name: {_quote(spec.name)}", f"    data_type: {DATATYPES[spec.datatype]}",
            f"    dims: [ {dims} ]", "  }", "]"]


def render_config(cfg: TritonModelConfig) -> str:
    """The ``config.pbtxt`` text for ``cfg``."""
    head = (f"backend: {_quote(cfg.platform)}" if cfg.platform == "python" else f"platform: {_quote(cfg.platform)}")
    lines = [f"name: {_quote(cfg.name)}", head, f"max_batch_size: {int(cfg.max_batch_size)}"]
    lines += _tensor("input", cfg.input)
    lines.append("output [")
    for i, out in enumerate(cfg.outputs):
        block = _tensor("", out)[1:-1]
        if i < len(cfg.outputs) - 1:
            block[-1] += ","
        lines += block
    lines.append("]")
    lines += ["instance_group [", "  {", f"    count: {int(cfg.instance_count)}", f"    kind: {cfg.instance_kind}",
              "  }", "]"]
    batching = cfg.dynamic_batching
    if batching is not None:
        sizes = ", ".join(str(int(b)) for b in batching.preferred_batch_size)
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {sizes} ]",
            f"  max_queue_delay_microseconds: {int(batching.max_queue_delay_microseconds)}",
            f"  preserve_ordering: {'true' if batching.preserve_ordering else 'false'}",
            "  default_queue_policy {",
            "    timeout_action: REJECT",
            f"    default_timeout_microseconds: {int(batching.default_timeout_microseconds)}",
            "    allow_timeout_override: true",
            "  }",
            "}",
        ]
    for key, value in cfg.parameters.items():
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value {{ string_value: {_quote(str(value))} }}", "}"]
    return "\n".join(lines) + "\n"
