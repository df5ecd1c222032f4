"""The Darknet ``.cfg`` of a YOLO model, read into layers (:class:`Layer`) with their output shapes.

The first half of :mod:`yolo_edge.models.darknet`'s conversion: :func:`parse_cfg` reads
the INI-like sections, :func:`build_layers` checks each layer yolo-edge can convert
(``convolutional``, ``maxpool``, ``route``, ``upsample``, ``shortcut``, ``yolo``) and
works out its output shape, raising :class:`~yolo_edge.errors.UnsupportedModelError`
naming the first one it cannot.

>>> sections = parse_cfg("[net]\\nwidth=32\\nheight=32\\nchannels=3\\n[convolutional]\\nfilters=21\\nsize=1\\n"
...                      "activation=linear\\n[yolo]\\nclasses=2\\nanchors=1,1, 2,2, 3,3\\nmask=0,1,2\\nnum=3\\n")
>>> (c, h, w), layers = build_layers(sections)
>>> (c, h, w), [(layer.type, layer.out_shape) for layer in layers]
((3, 32, 32), [('convolutional', (21, 32, 32)), ('yolo', (21, 32, 32))])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError, UnsupportedModelError

__all__ = ["parse_cfg", "build_layers", "Layer"]

_SUPPORTED = ("convolutional", "maxpool", "route", "upsample", "shortcut", "yolo")
_ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "mish", "swish")


# --------------------------------------------------------------------------- cfg parsing


def parse_cfg(text: str) -> list[dict[str, Any]]:
    """Parse Darknet cfg text into one dict per ``[section]``, in file order.

    Each dict has ``"type"`` (the section name), ``"_line"`` (1-based line of the
    header, for error messages) and the section's options as stripped strings. As in
    Darknet, ``#`` and ``;`` start comment lines and the first value of a repeated key wins.

    >>> parse_cfg("[net]\\nwidth=416\\n# comment\\n[maxpool]\\nsize = 2\\n")
    [{'type': 'net', '_line': 1, 'width': '416'}, {'type': 'maxpool', '_line': 4, 'size': '2'}]
    """
    sections: list[dict[str, Any]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ModelError(f"cfg line {lineno}: malformed section header {line!r}; expected e.g. '[convolutional]'")
            sections.append({"type": line[1:-1].strip().lower(), "_line": lineno})
            continue
        if "=" not in line:
            raise ModelError(f"cfg line {lineno}: expected 'key=value' or '[section]', got {line!r}")
        if not sections:
            raise ModelError(f"cfg line {lineno}: option {line!r} appears before the first [section]")
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1].setdefault(key, value)
    if not sections:
        raise ModelError("the cfg is empty: expected a [net] section followed by layers")
    return sections


# --------------------------------------------------------------------------- layer plan


@dataclass(frozen=True)
class Layer:
    """One Darknet layer with its options resolved and its output shape inferred.

    ``inputs`` are layer indices (``-1`` is the network input); ``out_shape`` is (C, H, W).
    """

    index: int
    type: str
    inputs: tuple[int, ...]
    out_shape: tuple[int, int, int]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"layer {self.index} [{self.type}] (cfg line {self.params.get('_line', '?')})"


def _where(index: int, section: dict[str, Any]) -> str:
    return f"layer {index} [{section['type']}] (cfg line {section.get('_line', '?')})"


def _num(section: dict[str, Any], key: str, default: Any, where: str, kind: type = int) -> Any:
    if key not in section:
        if default is None:
            raise ModelError(f"{where}: required option '{key}' is missing")
        return default
    try:
        return kind(float(section[key])) if kind is int else kind(section[key])
    except ValueError:
        raise ModelError(f"{where}: option '{key}' must be a {kind.__name__}, got {section[key]!r}") from None


def _ints(section: dict[str, Any], key: str, where: str) -> list[int]:
    try:
        return [int(v) for v in str(section.get(key, "")).split(",") if v.strip()]
    except ValueError:
        raise ModelError(f"{where}: option '{key}' must be a comma-separated list of integers, got {section[key]!r}") from None


def _resolve(ref: int, index: int, where: str) -> int:
    # Darknet: negative indices are relative to the current layer, others are absolute.
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise ModelError(
            f"{where}: refers to layer {ref}, which resolves to {target}; expected an earlier layer (0..{index - 1})"
        )
    return target


def _net_input(net: dict[str, Any]) -> tuple[int, int, int]:
    where = f"[net] (cfg line {net.get('_line', '?')})"
    channels = _num(net, "channels", 3, where)
    height, width = _num(net, "height", None, where), _num(net, "width", None, where)
    if channels != 3:
        raise UnsupportedModelError(f"{where}: channels={channels}; yolo-edge feeds RGB images, expected channels=3")
    if height <= 0 or width <= 0:
        raise ModelError(f"{where}: width and height must be positive, got {width}x{height}")
    return channels, height, width


def build_layers(sections: list[dict[str, Any]]) -> tuple[tuple[int, int, int], list[Layer]]:
    """Resolve options, inputs and output shapes of every layer after ``[net]``.

    Returns ``((C, H, W) of the network input, layers)``. Raises
    :class:`UnsupportedModelError` naming the first layer yolo-edge cannot convert.
    """
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ModelError("the cfg must start with a [net] section (input size and channels)")
    in_shape = _net_input(sections[0])
    layers: list[Layer] = []
    for index, section in enumerate(sections[1:]):
        kind = section["type"]
        where = _where(index, section)
        if kind not in _SUPPORTED:
            raise UnsupportedModelError(
                f"{where}: layer type '{kind}' is not supported; the converter handles {', '.join(_SUPPORTED)}"
            )
        prev = layers[-1].out_shape if layers else in_shape
        builder = _BUILDERS[kind]
        layers.append(builder(index, section, where, prev, layers))
    if not any(layer.type == "yolo" for layer in layers):
        raise UnsupportedModelError("the cfg has no [yolo] layer; expected a YOLOv3/v4-style detector")
    return in_shape, layers


def _activation(section: dict[str, Any], where: str) -> str:
    act = str(section.get("activation", "linear")).strip().lower()
    if act not in _ACTIVATIONS:
        raise UnsupportedModelError(f"{where}: activation '{act}' is not supported; expected one of {', '.join(_ACTIVATIONS)}")
    return act


def _conv(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], _: list[Layer]) -> Layer:
    c, h, w = prev
    filters = _num(s, "filters", 1, where)
    size = _num(s, "size", 1, where)
    stride = _num(s, "stride", 1, where)
    groups = _num(s, "groups", 1, where)
    pad = _num(s, "padding", 0, where)
    if _num(s, "pad", 0, where):
        pad = size // 2
    for key in ("stride_x", "stride_y"):
        if key in s and _num(s, key, 1, where) != stride:
            raise UnsupportedModelError(f"{where}: different horizontal/vertical strides are not supported")
    if _num(s, "dilation", 1, where) != 1:
        raise UnsupportedModelError(f"{where}: dilation={s['dilation']} is not supported; expected 1")
    for key in ("binary", "xnor", "antialiasing", "deform"):
        if _num(s, key, 0, where):
            raise UnsupportedModelError(f"{where}: option '{key}={s[key]}' is not supported")
    if "share_index" in s:
        raise UnsupportedModelError(f"{where}: shared-weight convolutions (share_index) are not supported")
    if filters <= 0 or size <= 0 or stride <= 0 or groups <= 0 or c % groups or filters % groups:
        raise ModelError(
            f"{where}: expected positive filters/size/stride and groups dividing channels, "
            f"got filters={filters} size={size} stride={stride} groups={groups} for {c} input channels"
        )
    out_h, out_w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    if out_h <= 0 or out_w <= 0:
        raise ModelError(f"{where}: a {size}x{size} kernel does not fit the {h}x{w} input")
    params = dict(
        _line=s.get("_line"), filters=filters, size=size, stride=stride, pad=pad, groups=groups, in_channels=c,
        batch_normalize=bool(_num(s, "batch_normalize", 0, where)), activation=_activation(s, where),
    )
    return Layer(index, "convolutional", (index - 1,), (filters, out_h, out_w), params)


def _maxpool(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], _: list[Layer]) -> Layer:
    c, h, w = prev
    stride = _num(s, "stride", 1, where)
    size = _num(s, "size", stride, where)
    padding = _num(s, "padding", size - 1, where)  # Darknet's default pads size-1 in total
    for key in ("stride_x", "stride_y"):
        if key in s and _num(s, key, 1, where) != stride:
            raise UnsupportedModelError(f"{where}: different horizontal/vertical strides are not supported")
    if _num(s, "maxpool_depth", 0, where) or _num(s, "antialiasing", 0, where):
        raise UnsupportedModelError(f"{where}: maxpool_depth/antialiasing are not supported")
    if size <= 0 or stride <= 0 or not 0 <= padding < 2 * size:
        raise ModelError(f"{where}: expected positive size/stride and 0 <= padding < 2*size, got size={size} stride={stride} padding={padding}")
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    if out_h <= 0 or out_w <= 0:
        raise ModelError(f"{where}: a {size}x{size} window does not fit the {h}x{w} input")
    params = dict(_line=s.get("_line"), size=size, stride=stride, padding=padding)
    return Layer(index, "maxpool", (index - 1,), (c, out_h, out_w), params)


def _route(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], layers: list[Layer]) -> Layer:
    refs = _ints(s, "layers", where)
    if not refs:
        raise ModelError(f"{where}: option 'layers' is missing; expected e.g. 'layers = -1, 8'")
    sources = tuple(_resolve(r, index, where) for r in refs)
    shapes = [layers[i].out_shape for i in sources]
    if len({shape[1:] for shape in shapes}) != 1:
        raise ModelError(f"{where}: cannot concatenate layers {list(sources)} of different sizes {[sh[1:] for sh in shapes]}")
    groups, group_id = _num(s, "groups", 1, where), _num(s, "group_id", 0, where)
    if groups <= 0 or not 0 <= group_id < groups or any(sh[0] % groups for sh in shapes):
        raise ModelError(f"{where}: groups={groups} group_id={group_id} must split every input's channels evenly")
    channels = sum(sh[0] for sh in shapes) // groups
    params = dict(_line=s.get("_line"), groups=groups, group_id=group_id, in_channels=[sh[0] for sh in shapes])
    return Layer(index, "route", sources, (channels, shapes[0][1], shapes[0][2]), params)


def _upsample(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], _: list[Layer]) -> Layer:
    c, h, w = prev
    stride = _num(s, "stride", 2, where)
    scale = _num(s, "scale", 1.0, where, float)
    if stride <= 0:
        raise UnsupportedModelError(f"{where}: stride={stride} (downsampling) is not supported; expected a positive stride")
    params = dict(_line=s.get("_line"), stride=stride, scale=scale)
    return Layer(index, "upsample", (index - 1,), (c, h * stride, w * stride), params)


def _shortcut(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], layers: list[Layer]) -> Layer:
    refs = _ints(s, "from", where)
    if len(refs) != 1:
        raise UnsupportedModelError(f"{where}: expected exactly one 'from' layer, got {refs}")
    source = _resolve(refs[0], index, where)
    if str(s.get("weights_type", "none")).strip() != "none":
        raise UnsupportedModelError(f"{where}: weighted shortcuts (weights_type={s['weights_type']}) are not supported")
    if layers[source].out_shape != prev:
        raise UnsupportedModelError(
            f"{where}: adds layer {source} of shape {layers[source].out_shape} to {prev}; expected equal shapes"
        )
    params = dict(_line=s.get("_line"), activation=_activation(s, where))
    return Layer(index, "shortcut", (index - 1, source), prev, params)


def _yolo(index: int, s: dict[str, Any], where: str, prev: tuple[int, int, int], _: list[Layer]) -> Layer:
    classes = _num(s, "classes", 20, where)
    flat = [float(v) for v in str(s.get("anchors", "")).replace(" ", "").split(",") if v]
    num = _num(s, "num", len(flat) // 2, where)
    mask = _ints(s, "mask", where) or list(range(num))
    if len(flat) != 2 * num or any(not 0 <= m < num for m in mask):
        raise ModelError(f"{where}: expected num={num} anchor pairs and mask indices below num, got {len(flat)} values and mask {mask}")
    if _num(s, "new_coords", 0, where):
        raise UnsupportedModelError(f"{where}: new_coords=1 (scaled-YOLOv4 decoding) is not supported")
    expected = len(mask) * (classes + 5)
    if prev[0] != expected:
        raise ModelError(
            f"{where}: its input has {prev[0]} channels; expected len(mask) * (classes + 5) = {expected}. "
            "Set filters of the conv before each [yolo] to match"
        )
    anchors = [(flat[2 * m], flat[2 * m + 1]) for m in mask]
    params = dict(_line=s.get("_line"), classes=classes, anchors=anchors, scale_x_y=_num(s, "scale_x_y", 1.0, where, float))
    return Layer(index, "yolo", (index - 1,), prev, params)


_BUILDERS = {"convolutional": _conv, "maxpool": _maxpool, "route": _route, "upsample": _upsample, "shortcut": _shortcut, "yolo": _yolo}
