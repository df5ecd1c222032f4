"""EngineKey naming, atomic cache writes, corruption recovery and the cross-process build lock."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from yolo_edge.backends.engine_cache import EngineCache, EngineKey
from yolo_edge.errors import BackendError, ConfigError


def make_key(**over) -> EngineKey:
    fields = dict(
        gpu_name="NVIDIA Jetson Orin Nano",
        compute_capability=(8, 7),
        trt_version="10.3.0",
        onnx_sha256="a" * 64,
        precision="fp16",
        profile=((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640)),
    )
    fields.update(over)
    return EngineKey(**fields)


def test_digest_is_stable_and_filename_readable():
    key = make_key()
    # Pinned: the digest must not change between runs or Python versions, or every cache is lost.
    assert key.digest() == make_key().digest()
    assert key.digest() == EngineKey.from_dict(key.to_dict()).digest()
    name = key.filename("yolov8s-fall")
    assert name.startswith("yolov8s-fall-fp16-nvidia-jetson-orin-nano-sm87-trt10.3.0-")
    assert name.endswith(".engine") and "/" not in name


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_name": "NVIDIA A10G"},
        {"compute_capability": (8, 6)},
        {"trt_version": "10.3.1"},
        {"onnx_sha256": "b" * 64},
        {"precision": "fp32"},
        {"profile": ((1, 3, 640, 640), (2, 3, 640, 640), (8, 3, 640, 640))},
        {"profile": None},
    ],
)
def test_every_field_changes_the_key(change):
    assert make_key(**change).digest() != make_key().digest()
    assert make_key(**change).filename() != make_key().filename()


def test_lists_from_json_equal_tuples():
    key = make_key()
    as_lists = make_key(compute_capability=[8, 7], profile=[[1, 3, 640, 640], [4, 3, 640, 640], [8, 3, 640, 640]])
    assert as_lists == key and as_lists.digest() == key.digest()


@pytest.mark.parametrize(
    "bad", [{"precision": "int8"}, {"onnx_sha256": "xyz"}, {"compute_capability": (8,)}, {"profile": ((1, 3, 4, 4),)}]
)
def test_bad_key_fields_raise_config_error(bad):
    with pytest.raises(ConfigError):
        make_key(**bad)


def test_filename_sanitizes_hostile_names():
    name = make_key(gpu_name="../../etc/passwd").filename("../evil name")
    assert "/" not in name and not name.startswith(".")
    assert name.startswith("evil-name-fp16-etc-passwd-")


def test_get_or_build_builds_once_then_loads(tmp_path):
    cache = EngineCache(tmp_path, stem="m")
    calls = []

    def build():
        calls.append(1)
        return b"engine-bytes"

    assert cache.get_or_build(make_key(), build) == b"engine-bytes"
    assert cache.get_or_build(make_key(), build) == b"engine-bytes"
    assert len(calls) == 1
    assert cache.path_for(make_key()).read_bytes() == b"engine-bytes"
    # No temporary files are left behind.
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p, m: p.write_bytes(b""),  # zero bytes
        lambda p, m: p.write_bytes(b"engine-by"),  # truncated
        lambda p, m: p.write_bytes(b"engine-bytez"),  # same size, other content
        lambda p, m: m.unlink(),  # crash between engine and metadata rename
        lambda p, m: m.write_text("{not json"),
    ],
)
def test_corrupt_engine_is_rebuilt_not_crashed_on(tmp_path, damage, caplog):
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.get_or_build(key, lambda: b"engine-bytes")
    damage(cache.path_for(key), cache.path_for(key).with_suffix(".json"))
    assert cache.load(key) is None
    assert "corrupt" in caplog.text
    assert cache.get_or_build(key, lambda: b"rebuilt") == b"rebuilt"


def test_metadata_for_another_key_is_rejected(tmp_path):
    cache = EngineCache(tmp_path)
    a, b = make_key(), make_key(precision="fp32")
    cache.store(a, b"same bytes")
    cache.store(b, b"same bytes")
    # b's engine file with a's metadata (e.g. files copied by hand under the wrong name)
    cache.path_for(b).with_suffix(".json").write_text(cache.path_for(a).with_suffix(".json").read_text())
    assert cache.load(a) == b"same bytes"
    assert cache.load(b) is None


def test_empty_build_result_is_an_error(tmp_path):
    with pytest.raises(BackendError, match="empty engine"):
        EngineCache(tmp_path).get_or_build(make_key(), lambda: b"")
    assert not EngineCache(tmp_path).path_for(make_key()).exists()


def test_failed_build_releases_lock(tmp_path):
    cache = EngineCache(tmp_path)

    def boom():
        raise BackendError("parser failed")

    with pytest.raises(BackendError):
        cache.get_or_build(make_key(), boom)
    assert cache.get_or_build(make_key(), lambda: b"ok") == b"ok"


def _build_in_child(cache_dir: str, log_path: str, barrier) -> None:
    cache = EngineCache(cache_dir, stem="m")

    def build():
        with open(log_path, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough that the other process surely tries meanwhile
        return b"the-engine"

    barrier.wait()
    assert cache.get_or_build(make_key(), build) == b"the-engine"


def test_two_processes_build_only_once(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path / "c"), str(log), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("built") == 1


def test_lock_timeout_raises_backend_error(tmp_path):
    import fcntl

    cache = EngineCache(tmp_path, lock_timeout_s=0.3)
    key = make_key()
    tmp_path.mkdir(exist_ok=True)
    with open(cache.path_for(key).with_suffix(".lock"), "a+b") as held:
        # flock locks are per open file description: a second open() in this process contends.
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        waited = []
        with pytest.raises(BackendError, match="build lock"):
            cache.get_or_build(key, lambda: b"x", on_wait=lambda: waited.append(1))
        assert waited == [1]
