from __future__ import annotations

import time

import numpy as np
import pytest

from edge_agent.demo import make_clip
from edge_agent.sources import LiveSource, open_source, replay
from yolo_edge.errors import ConfigError

IMG = np.zeros((24, 32, 3), np.uint8)


class FakeCapture:
    """Yields ``n`` frames then fails, like a stream dropping; ``opened`` False refuses to open."""

    def __init__(self, n: int, opened: bool = True, delay: float = 0.0) -> None:
        self.n, self.opened, self.delay = n, opened, delay

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        if self.n <= 0:
            return False, None
        self.n -= 1
        time.sleep(self.delay)
        return True, IMG.copy()

    def release(self):
        pass


def test_replay_paces_like_a_camera_with_virtual_clock():
    now = [0.0]
    slept = []
    clock = lambda: now[0]  # noqa: E731

    def sleep(s):
        slept.append(s)
        now[0] += s

    frames = list(replay(iter([IMG] * 5), fps=10, clock=clock, sleep=sleep))
    assert [f.captured_at for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert sum(slept) == pytest.approx(0.4)


def test_replay_never_waits_for_a_slow_consumer():
    frames = replay(iter([IMG] * 3), fps=100)
    first = next(frames)
    time.sleep(0.1)  # the consumer was slow: the next frame is already old
    second = next(frames)
    assert second.captured_at == pytest.approx(first.captured_at + 0.01, abs=1e-3)
    assert time.monotonic() - second.captured_at > 0.08


def test_live_source_reconnects_with_backoff_and_counts():
    caps = [FakeCapture(3), FakeCapture(0, opened=False), FakeCapture(2)]
    src = LiveSource("rtsp://cam", capture_factory=lambda spec: caps.pop(0), backoff_s=0.01, max_reconnects=2,
                     buffer=100)
    frames = list(src)
    assert len([f for f in frames if f.dropped_reason is None]) == 5
    assert src.reconnects == 2


def test_live_source_reports_frames_the_consumer_missed():
    src = LiveSource("rtsp://cam", capture_factory=lambda spec: FakeCapture(50, delay=0.001), buffer=2,
                     max_reconnects=0)
    got = []
    for f in src:
        got.append(f)
        time.sleep(0.01)  # slower than the stream
    stale = [f for f in got if f.dropped_reason == "stale_source"]
    assert stale and len(got) == 50  # every frame the camera gave is either shown or reported
    assert src.stale == len(stale)


def test_video_file_source_reads_native_fps(tmp_path, sample_photos):
    clip = make_clip(tmp_path / "c.avi", frames=6, fps=25, size=(160, 90), sources=sample_photos)
    frames = list(open_source(str(clip), realtime=False))
    assert len(frames) == 6 and frames[0].image.shape == (90, 160, 3)
    looped = list(open_source(str(clip), realtime=False, loop=True, max_frames=10))
    assert len(looped) == 10


def test_image_folder_and_bad_sources(tmp_path, sample_photos):
    import shutil

    for p in sample_photos:
        shutil.copy(p, tmp_path / p.name)
    frames = list(open_source(str(tmp_path), realtime=False))
    assert len(frames) == len(sample_photos)
    with pytest.raises(ConfigError, match="neither a file"):
        open_source(str(tmp_path / "missing.avi"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        list(open_source(str(empty)))
