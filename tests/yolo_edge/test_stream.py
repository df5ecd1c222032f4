"""Detector.stream: the pipelined stream, on the real default model and real photos."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import cv2
import numpy as np
import pytest

from yolo_edge import Detector, inputs
from yolo_edge.errors import BackendError, ConfigError, ImageDecodeError
from yolo_edge.stream import THREAD_PREFIX


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.fixture(autouse=True)
def no_threads_left():
    assert not _stream_threads(), "a stream of an earlier test left its threads running"
    yield
    assert not _stream_threads(), "the stream left its threads running"


@pytest.fixture(scope="module")
def frames(bus_jpg, zidane_jpg) -> list[np.ndarray]:
    """Eight distinct frames: the two photos, shifted as by a moving camera."""
    photos = [cv2.imread(str(p)) for p in (bus_jpg, zidane_jpg)]
    return [np.roll(photos[i % 2], 23 * i, axis=1) for i in range(8)]


def test_equal_to_frame_by_frame_and_in_order(default_detector, bus_jpg, zidane_jpg, frames):
    from PIL import Image

    sources = [bus_jpg, str(zidane_jpg), bus_jpg.read_bytes(), *frames,
               Image.open(zidane_jpg), cv2.cvtColor(frames[3], cv2.COLOR_BGR2GRAY)]
    results = list(default_detector.stream(sources))
    assert [r.index for r in results] == list(range(len(sources)))
    assert all(r.source is s for r, s in zip(results, sources))
    for r, source in zip(results, sources):
        expected = default_detector(source)
        assert r.ok and r.detections == expected  # exact arrays, not approximately
        assert len(expected) > 0
        assert r.image.shape[:2] == expected.image_shape
        assert r.timings.inference_s > 0 and r.timings.preprocess_s > 0


def test_per_call_options_as_in_detect(default_detector, frames):
    got = [r.detections for r in default_detector.stream(frames[:3], conf=0.5, classes=["person"], max_det=2)]
    assert got == [default_detector(f, conf=0.5, classes=["person"], max_det=2) for f in frames[:3]]
    assert all(set(d.class_id.tolist()) <= {0} and len(d) <= 2 for d in got)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in frames[:2]]
    assert [r.detections for r in default_detector.stream(rgb, channels="rgb")] == \
        [default_detector(f) for f in frames[:2]]


def test_from_a_video_and_a_folder(default_detector, frames, tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for f in frames:
        writer.write(cv2.resize(f, (640, 480)))
    writer.release()
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(tmp_path / f"photo_{i}.jpg"), f)
    files, _ = inputs.expand([str(clip), str(tmp_path)])
    expected = [default_detector(item.image) for item in inputs.frames(files, every=2)]
    results = list(default_detector.stream(inputs.frames(files, every=2)))
    assert [r.detections for r in results] == expected
    assert [(r.source.source.name, r.source.index) for r in results] == \
        [("clip.avi", i) for i in (0, 2, 4, 6)] + [("clip.avi", i) for i in (0, 2, 4, 6)] + \
        [(f"photo_{i}.jpg", None) for i in range(3)]


def test_a_bad_frame_raises_at_its_place_by_default(default_detector, frames):
    got = []
    with pytest.raises(ImageDecodeError, match="could not decode"):
        for r in default_detector.stream([frames[0], frames[1], b"not an image", frames[2]]):
            got.append(r.index)
    assert got == [0, 1]  # every earlier frame's result came first


def test_errors_yield_keeps_the_stream_going(default_detector, frames, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 a truncated jpeg")
    sources = [frames[0], bad, np.zeros((4, 4), np.float32), frames[1]]
    results = list(default_detector.stream(sources, errors="yield"))
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, ImageDecodeError) and str(bad) in str(results[1].error)
    assert "uint8" in str(results[2].error) and results[2].detections is None and results[2].image is None
    assert results[3].detections == default_detector(frames[1])
    # a file that cannot be read, as yolo_edge.inputs reports it, is that file's result too
    (item,) = inputs.frames([bad])
    (r,) = default_detector.stream([item], errors="yield")
    assert r.error is item.error


def test_early_stop_joins_the_threads_and_closes_the_source(default_detector, frames):
    closed = threading.Event()

    def camera():
        try:
            while True:
                yield frames[0]
        finally:
            closed.set()

    for i, _ in enumerate(default_detector.stream(camera())):  # dropped at the break: closed at once
        if i == 2:
            break
    assert closed.is_set() and not _stream_threads()
    results = default_detector.stream(camera())
    next(results)
    assert len(_stream_threads()) == 2
    results.close()  # a stream still referenced stops when closed
    assert not _stream_threads()
    with contextlib.closing(default_detector.stream(camera())) as results:
        next(results)
    assert not _stream_threads()


def test_nothing_runs_until_iterated(default_detector, frames):
    pulled = []
    results = default_detector.stream(pulled.append(f) or f for f in frames)
    time.sleep(0.1)
    assert not pulled and not _stream_threads()
    results.close()


def test_source_exception_propagates_after_earlier_frames(default_detector, frames):
    def broken():
        yield frames[0]
        yield frames[1]
        raise OSError("camera unplugged")

    got = []
    with pytest.raises(OSError, match="camera unplugged"):
        for r in default_detector.stream(broken()):
            got.append(r.index)
    assert got == [0, 1]


def test_model_failure_propagates(default_model_path, frames):
    det = Detector("yolov3-tiny-coco")
    real, calls = det.backend.run, []

    def flaky(batch):
        calls.append(1)
        if len(calls) == 3:
            raise BackendError("onnxruntime failed on a batch: out of memory")
        return real(batch)

    det.backend.run = flaky
    got = []
    with pytest.raises(BackendError, match="out of memory"):
        for r in det.stream(frames):
            got.append(r.index)
    assert got == [0, 1]


def test_queues_bound_the_frames_taken_ahead(default_detector, frames):
    queue_size = 2
    pulled = 0

    def source():
        nonlocal pulled
        for i in range(20):
            pulled += 1
            yield frames[i % len(frames)]

    ahead = []
    for consumed, _ in enumerate(default_detector.stream(source(), queue_size=queue_size), start=1):
        time.sleep(0.15)  # a slow consumer: the stages fill up and must wait
        ahead.append(pulled - consumed)
    assert consumed == 20
    # two queues of queue_size, one frame held by each thread: nothing more is read ahead
    assert max(ahead) <= 2 * queue_size + 2, ahead
    assert max(ahead) > queue_size, ahead  # and it does read ahead


def test_two_streams_share_one_detector(default_detector, frames):
    expected = [default_detector(f) for f in frames]
    outcome: dict[int, list] = {}

    def consume(k: int) -> None:
        outcome[k] = [r.detections for r in default_detector.stream(frames[k:] + frames[:k])]

    threads = [threading.Thread(target=consume, args=(k,)) for k in (0, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome[0] == expected and outcome[3] == expected[3:] + expected[:3]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning threads to cores needs Linux and two CPUs")
def test_pins_each_thread_to_its_cores(default_detector, frames):
    cpus = sorted(os.sched_getaffinity(0))
    model_cpu, others = {cpus[-1]}, set(cpus[:-1])
    results = default_detector.stream(frames, inference_cpus=model_cpu, prepare_cpus=others)
    assert next(results).detections == default_detector(frames[0])
    pinned = {t.name.rsplit("-", 1)[1]: os.sched_getaffinity(t.native_id) for t in _stream_threads()}
    results.close()
    assert pinned == {"infer": model_cpu, "prepare": others}
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's own thread is left alone


def test_arguments_are_checked(default_detector, bus_jpg):
    for kwargs, match in (({"errors": "ignore"}, "errors must be"), ({"queue_size": 0}, "queue_size"),
                          ({"inference_cpus": [10_000]}, "does not have"), ({"prepare_cpus": "0"}, "set of CPU ids"),
                          ({"conf": 2.0}, "conf"), ({"classes": ["nope"]}, "unknown class")):
        with pytest.raises(ConfigError, match=match):
            default_detector.stream([bus_jpg], **kwargs)
    with pytest.raises(ConfigError, match="iterable of frames"):
        default_detector.stream(str(bus_jpg))
