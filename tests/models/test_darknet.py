"""Darknet -> ONNX converter, checked against an independent reference: OpenCV's Darknet importer.

OpenCV 4.x (``cv2.dnn.readNetFromDarknet``) reads the same .cfg/.weights with its own code;
both graphs get the same input blob and their head outputs must agree. OpenCV's [yolo]
output is one ``[gh*gw*A, 5 + nc]`` matrix per head, rows in (y, x, anchor) order, boxes
normalised to the input size and class scores multiplied by the objectness and zeroed at or
below its 0.2 threshold; the helpers below convert it to the converter's layout.
"""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from yolo_edge.errors import ModelError, ModelNotFoundError, UnsupportedModelError
from yolo_edge.models.darknet import build_layers, darknet_to_onnx, parse_cfg, read_weights

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
if not hasattr(cv2.dnn, "readNetFromDarknet"):  # OpenCV 5 removed the Darknet importer
    pytest.skip("this OpenCV has no readNetFromDarknet (needs opencv-python-headless<5)", allow_module_level=True)

OPENCV_CLASS_THRESH = 0.2  # OpenCV's region layer zeroes objectness*class at or below this


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_onnx(darknet_files, tmp_path_factory) -> Path:
    cfg, weights, names = darknet_files
    return darknet_to_onnx(cfg, weights, names, tmp_path_factory.mktemp("darknet") / "yolov3-tiny.onnx")


def _asset(name: str) -> np.ndarray:
    from yolo_edge.models.fetch import sample_path

    path = sample_path(name)
    img = cv2.imread(str(path))
    if img is None:
        pytest.fail(f"sample {path} is not fetched: run `make test` or `yolo-edge models fetch --all`", pytrace=False)
    return img


def _blob(img_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plain resize (no letterbox) to (h, w), RGB, [0, 1], NCHW float32."""
    rgb = cv2.cvtColor(cv2.resize(img_bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _opencv_heads(cfg: Path, weights: Path, blob: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per [yolo] head: (OpenCV's decoded output, OpenCV's raw NHWC head tensor)."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(blob)
    yolo_names = list(net.getUnconnectedOutLayersNames())
    raw_names = [name.replace("yolo_", "permute_") for name in yolo_names]  # the head's conv output, NHWC
    outs = net.forward(yolo_names + raw_names)
    return list(zip(outs[: len(yolo_names)], outs[len(yolo_names) :]))


def _to_our_layout(decoded: np.ndarray, raw: np.ndarray, n_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV (y, x, anchor) rows -> our (anchor, y, x) rows, for both tensors."""
    _, gh, gw, channels = raw.shape
    per = channels // n_anchors
    dec = decoded.reshape(gh, gw, n_anchors, per).transpose(2, 0, 1, 3).reshape(-1, per)
    raw = raw.reshape(gh, gw, n_anchors, per).transpose(2, 0, 1, 3).reshape(-1, per)
    return dec, raw


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _compare_with_opencv(cfg: Path, weights: Path, onnx_path: Path, blob: np.ndarray) -> None:
    _, layers = build_layers(parse_cfg(cfg.read_text()))
    heads = [layer for layer in layers if layer.type == "yolo"]
    ours = _session(onnx_path).run(None, {"images": blob})[0][0]
    h, w = blob.shape[2:]
    assert ours.shape == (sum(len(hd.params["anchors"]) * hd.out_shape[1] * hd.out_shape[2] for hd in heads),
                          5 + heads[0].params["classes"])
    start = 0
    for head, (decoded, raw) in zip(heads, _opencv_heads(cfg, weights, blob)):
        dec, raw = _to_our_layout(decoded, raw, len(head.params["anchors"]))
        mine = ours[start : start + len(dec)].astype(np.float64)
        start += len(dec)
        # boxes: OpenCV normalises by the input size, we give input pixels
        np.testing.assert_allclose(mine[:, [0, 2]] / w, dec[:, [0, 2]], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(mine[:, [1, 3]] / h, dec[:, [1, 3]], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(mine[:, 4], dec[:, 4], atol=1e-4)
        # every class probability, against the sigmoid of OpenCV's raw head tensor
        np.testing.assert_allclose(mine[:, 5:], _sigmoid(raw[:, 5:]), atol=1e-4)
        # and OpenCV's own scores: objectness * class where above its threshold, else 0
        product = mine[:, 4:5] * mine[:, 5:]
        kept = dec[:, 5:] > 0
        np.testing.assert_allclose(product[kept], dec[:, 5:][kept], atol=1e-4)
        assert np.all(product[~kept] <= OPENCV_CLASS_THRESH + 1e-4)
        assert np.all(product[kept] > OPENCV_CLASS_THRESH - 1e-4)
    assert start == len(ours)


def _top_detections(rows: np.ndarray, scores: np.ndarray, conf: float = 0.25, iou: float = 0.45):
    """(class ids, xyxy, scores) after conf filter and class-wise NMS, best first."""
    cls = scores.argmax(1)
    best = scores.max(1)
    keep = best >= conf
    boxes, cls, best = rows[keep, :4], cls[keep], best[keep]
    xywh = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], 1)
    idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), best.tolist(), cls.tolist(), conf, iou), int).reshape(-1)
    idx = idx[np.argsort(-best[idx], kind="stable")]
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    return cls[idx], xyxy[idx], best[idx]


# --------------------------------------------------------------------------- the real model


@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_yolov3_tiny_matches_opencv(darknet_files, tiny_onnx, image):
    cfg, weights, _ = darknet_files
    _compare_with_opencv(cfg, weights, tiny_onnx, _blob(_asset(image), (416, 416)))


def test_yolov3_tiny_top_detections_match_opencv(darknet_files, tiny_onnx):
    cfg, weights, _ = darknet_files
    blob = _blob(_asset("bus.jpg"), (416, 416))
    ours = _session(tiny_onnx).run(None, {"images": blob})[0][0]
    cv_rows = np.concatenate([decoded for decoded, _ in _opencv_heads(cfg, weights, blob)])
    cv_rows[:, :4] *= 416
    # OpenCV rows come in another order; sort both sides' survivors by score to compare
    cls_a, box_a, score_a = _top_detections(ours, ours[:, 4:5] * ours[:, 5:])
    cls_b, box_b, score_b = _top_detections(cv_rows, cv_rows[:, 5:])
    assert len(cls_a) >= 3
    np.testing.assert_array_equal(cls_a, cls_b)
    np.testing.assert_allclose(box_a, box_b, atol=0.05)
    np.testing.assert_allclose(score_a, score_b, atol=1e-4)


def test_yolov3_tiny_graph_and_metadata(darknet_files, tiny_onnx):
    import onnx

    cfg, weights, names = darknet_files
    model = onnx.load(str(tiny_onnx), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["names"] == str(dict(enumerate(names))) and len(names) == 80
    assert (meta["imgsz"], meta["stride"], meta["task"], meta["batch"]) == ("[416, 416]", "32", "detect", "1")
    assert meta["output_format"] == "anchor_based" and meta["author"] == "yolo-edge darknet converter"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() in meta["source"]
    assert hashlib.sha256(cfg.read_bytes()).hexdigest() in meta["source"]
    assert model.opset_import[0].version == 13 and model.ir_version == 7
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("images", ["batch", 3, 416, 416])
    assert (out.name, dims(out)) == ("output0", ["batch", 2535, 85])


def test_conversion_is_deterministic_and_fast(darknet_files, tiny_onnx, tmp_path):
    cfg, weights, names = darknet_files
    t0 = time.perf_counter()
    again = darknet_to_onnx(cfg, weights, names, tmp_path / "again.onnx")
    assert time.perf_counter() - t0 < 5.0
    assert again.read_bytes() == tiny_onnx.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write cleaned up


def test_batch_of_two_equals_two_single_runs(tiny_onnx):
    a, b = _blob(_asset("bus.jpg"), (416, 416)), _blob(_asset("zidane.jpg"), (416, 416))
    sess = _session(tiny_onnx)
    both = sess.run(None, {"images": np.concatenate([a, b])})[0]
    assert both.shape == (2, 2535, 85)
    np.testing.assert_allclose(both[0], sess.run(None, {"images": a})[0][0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(both[1], sess.run(None, {"images": b})[0][0], rtol=1e-5, atol=1e-4)


def test_end_to_end_letterboxed_bus_finds_people_and_the_bus(darknet_files, tiny_onnx):
    _, _, names = darknet_files
    img = _asset("bus.jpg")  # 810x1080 (w x h)
    h, w = img.shape[:2]
    r = min(416 / h, 416 / w)
    nw, nh = round(w * r), round(h * r)
    canvas = np.full((416, 416, 3), 114, np.uint8)
    left, top = (416 - nw) // 2, (416 - nh) // 2
    canvas[top : top + nh, left : left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    blob = _blob(canvas, (416, 416))
    pred = _session(tiny_onnx).run(None, {"images": blob})[0][0]
    cls, xyxy, _ = _top_detections(pred, pred[:, 4:5] * pred[:, 5:])
    labels = [names[c] for c in cls]
    assert labels.count("person") >= 2 and "bus" in labels, labels
    bus = xyxy[labels.index("bus")]
    assert bus[2] - bus[0] > 0.6 * nw  # the bus spans most of the photo's width


# --------------------------------------------------------------------------- other layer types

# A small net using what YOLOv3-tiny does not: mish/swish/logistic, strided conv, shortcut,
# an absolute route index, maxpool on an odd size, scale_x_y. Checked against OpenCV too.
SYNTH_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=swish

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 3,4,5
anchors = 4,5, 8,10, 12,9, 20,24, 30,40, 50,45
classes=2
num=6
scale_x_y = 1.1

[route]
layers = -4

[upsample]
stride=2

[route]
layers = -1, 1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=logistic

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 0,1,2
anchors = 4,5, 8,10, 12,9, 20,24, 30,40, 50,45
classes=2
num=6
scale_x_y = 1.1
"""
# (filters, input channels, kernel, batch_normalize) of each conv, written out by hand so the
# test's weights do not come from the code under test.
SYNTH_CONVS = [(8, 3, 3, True), (16, 8, 3, True), (16, 16, 1, True), (21, 16, 1, False), (8, 24, 3, True), (21, 8, 1, False)]


def _synth_weights(convs=SYNTH_CONVS, seed: int = 0, header: bytes = struct.pack("<3iq", 0, 2, 5, 32013312)) -> bytes:
    rng = np.random.default_rng(seed)
    parts = [header]
    for filters, channels, k, bn in convs:
        parts.append(rng.normal(0, 0.1, filters).astype("<f4").tobytes())  # biases
        if bn:
            parts.append(rng.uniform(0.5, 1.5, filters).astype("<f4").tobytes())  # scales
            parts.append(rng.normal(0, 0.1, filters).astype("<f4").tobytes())  # rolling mean
            parts.append(rng.uniform(0.5, 2.0, filters).astype("<f4").tobytes())  # rolling variance
        parts.append(rng.normal(0, 0.3, filters * channels * k * k).astype("<f4").tobytes())
    return b"".join(parts)


@pytest.fixture()
def synth(tmp_path) -> tuple[Path, Path]:
    cfg, weights = tmp_path / "synth.cfg", tmp_path / "synth.weights"
    cfg.write_text(SYNTH_CFG)
    weights.write_bytes(_synth_weights())
    return cfg, weights


def test_synthetic_net_matches_opencv(synth, tmp_path):
    cfg, weights = synth
    out = darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "synth.onnx")
    rng = np.random.default_rng(1)
    _compare_with_opencv(cfg, weights, out, rng.uniform(0, 1, (1, 3, 64, 64)).astype(np.float32))


def test_old_weights_header_with_int32_seen(synth, tmp_path):
    cfg, weights = synth
    weights.write_bytes(_synth_weights(header=struct.pack("<4i", 0, 1, 0, 1000)))
    out = darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "old.onnx")
    _compare_with_opencv(cfg, weights, out, np.full((1, 3, 64, 64), 0.5, np.float32))


def test_parse_cfg_sections_comments_and_first_value_wins():
    sections = parse_cfg("# top\n[net]\nwidth = 416\n; c\nwidth=1\n\n[Route]\nlayers=-1, 8\n")
    assert sections == [{"type": "net", "_line": 2, "width": "416"}, {"type": "route", "_line": 7, "layers": "-1, 8"}]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("width=3\n[net]", "before the first"),
        ("[net\nwidth=3", "malformed section"),
        ("[net]\nwidth 3", "key=value"),
    ],
)
def test_parse_cfg_rejects_malformed_text(text, match):
    with pytest.raises(ModelError, match=match):
        parse_cfg(text)


# --------------------------------------------------------------------------- bad input


def test_truncated_weights_name_the_layer(synth, tmp_path):
    cfg, weights = synth
    weights.write_bytes(weights.read_bytes()[:-400])
    with pytest.raises(ModelError, match=r"layer 12 \[convolutional\].*truncated"):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_oversized_weights_are_rejected(synth, tmp_path):
    cfg, weights = synth
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    with pytest.raises(ModelError, match="2 float32 values more.*do not belong"):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")


def test_weights_for_another_cfg_are_rejected(synth, tmp_path):
    cfg, weights = synth
    cfg.write_text(SYNTH_CFG.replace("filters=8\nsize=3\nstride=1\npad=1\nactivation=leaky", "filters=9\nsize=3\nstride=1\npad=1\nactivation=leaky"))
    with pytest.raises(ModelError, match="truncated or belongs to a different cfg|do not belong"):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")


@pytest.mark.parametrize("data, match", [(b"\0" * 10, "header"), (struct.pack("<3i", 0, 2, 0) + b"\0" * 4, "20-byte"),
                                         (struct.pack("<3iq", 5000, 2, 0, 0), "not a Darknet weights file"),
                                         (struct.pack("<3iq", 0, 2, 0, 0) + b"\0\0", "whole number")])
def test_damaged_weights_header(synth, tmp_path, data, match):
    cfg, weights = synth
    weights.write_bytes(data)
    with pytest.raises(ModelError, match=match):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")


def test_unknown_layer_type_is_unsupported(synth, tmp_path):
    cfg, weights = synth
    cfg.write_text(SYNTH_CFG.replace("[shortcut]\nfrom=-2", "[crnn]\nfrom=-2"))
    with pytest.raises(UnsupportedModelError, match=r"layer 4 \[crnn\].*not supported"):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")


@pytest.mark.parametrize(
    "old, new, exc, match",
    [
        ("activation=mish", "activation=selu", UnsupportedModelError, r"layer 2 .*activation 'selu'"),
        ("layers = -1, 1", "layers = -1, 12", ModelError, r"layer 10 \[route\].*earlier layer"),
        ("scale_x_y = 1.1\n\n[route]", "new_coords=1\n\n[route]", UnsupportedModelError, "new_coords"),
        ("filters=21\nactivation=linear\n\n[yolo]\nmask = 3", "filters=20\nactivation=linear\n\n[yolo]\nmask = 3", ModelError,
         r"layer 7 \[yolo\].*expected len\(mask\) \* \(classes \+ 5\) = 21"),
        ("channels=3", "channels=1", UnsupportedModelError, "channels=3"),
        ("filters=16\nsize=3", "filters=sixteen\nsize=3", ModelError, "'filters' must be a int"),
    ],
)
def test_cfg_problems_are_typed_and_named(synth, tmp_path, old, new, exc, match):
    cfg, weights = synth
    assert old in SYNTH_CFG
    cfg.write_text(SYNTH_CFG.replace(old, new, 1))
    with pytest.raises(exc, match=match):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx")


def test_names_must_match_classes(synth, tmp_path):
    cfg, weights = synth
    with pytest.raises(ModelError, match="classes=2 but 3 names"):
        darknet_to_onnx(cfg, weights, ["a", "b", "c"], tmp_path / "x.onnx")


def test_missing_files_and_bad_opset(synth, tmp_path):
    cfg, weights = synth
    with pytest.raises(ModelNotFoundError, match="not found"):
        darknet_to_onnx(tmp_path / "nope.cfg", weights, ["a", "b"], tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="opset=9"):
        darknet_to_onnx(cfg, weights, ["a", "b"], tmp_path / "x.onnx", opset=9)


def test_read_weights_folds_batch_norm():
    _, layers = build_layers(parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nbatch_normalize=1\nfilters=1\nsize=1\n"
                                       "activation=linear\n[convolutional]\nfilters=18\nsize=1\n[yolo]\nclasses=1\nmask=0,1,2\n"
                                       "anchors=1,1,2,2,3,3\nnum=3"))
    # bias, scale, rolling mean, rolling var, then the 1x3x1x1 weights
    conv0 = np.array([0.5, 2.0, 1.0, 4.0, 3.0, -1.0, 0.25], "<f4")
    conv1 = np.zeros(18 + 18, "<f4")
    header, weights = read_weights(struct.pack("<3iq", 0, 2, 0, 7) + conv0.tobytes() + conv1.tobytes(), layers)
    assert (header.major, header.minor, header.seen, header.size) == (0, 2, 7, 20)
    w, b = weights[0]
    factor = 2.0 / (np.sqrt(4.0) + 1e-6)  # Darknet: scale / (sqrt(var) + .000001)
    np.testing.assert_allclose(w.reshape(-1), np.array([3.0, -1.0, 0.25]) * factor, rtol=1e-6)
    np.testing.assert_allclose(b, [0.5 - 1.0 * factor], rtol=1e-6)
