"""TensorRT backend: build/cache/precision/profile/null-engine logic with a faithful fake of
the TensorRT 10 Python API and of cuda-python's cudart (host memory standing in for device
memory), plus a real-GPU test that skips without TensorRT and an NVIDIA GPU."""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
import logging
import types

import numpy as np
import pytest

from yolo_edge.backends.base import Backend
from yolo_edge.backends.cuda_runtime import CudaRuntime
from yolo_edge.backends.onnx_info import read_onnx_info
from yolo_edge.backends.tensorrt import TensorRTBackend
from yolo_edge.backends.trt_build import effective_precision, make_profile
from yolo_edge.errors import BackendError, ConfigError, UnsupportedModelError

# --------------------------------------------------------------------------- fake cudart


class FakeCudart:
    """cuda-python's runtime module: (err, value) tuples; 'device' memory is host numpy memory."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.mem: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.current = None

    def cudaGetErrorString(self, err):
        return (self.cudaError_t.cudaSuccess, f"error {int(err)}".encode())

    def cudaGetDeviceCount(self):
        if not self.devices:
            return (self.cudaError_t.cudaErrorNoDevice, 0)
        return (self.cudaError_t.cudaSuccess, self.devices)

    def cudaSetDevice(self, d):
        self.current = d
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, d):
        return (self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake Orin\0\0\0", major=8, minor=7))

    def cudaMalloc(self, n):
        arr = np.zeros(n, np.uint8)
        self.mem[arr.ctypes.data] = arr
        return (self.cudaError_t.cudaSuccess, arr.ctypes.data)

    def cudaFree(self, ptr):
        del self.mem[ptr]
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert stream in self.streams
        dev = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        assert any(p <= dev and dev + n <= p + a.nbytes for p, a in self.mem.items()), "copy outside an allocation"
        ctypes.memmove(dst, src, n)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):
        handle = 1000 + len(self.streams)
        self.streams.add(handle)
        return (self.cudaError_t.cudaSuccess, handle)

    def cudaStreamDestroy(self, s):
        self.streams.remove(s)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, s):
        return (self.cudaError_t.cudaSuccess,)


# --------------------------------------------------------------------------- fake tensorrt


def make_fake_trt(*, fp16_flag: bool = True, version: str = "10.3.0", refuse_engines: bool = False, fail_build=False):
    """A module with the TensorRT 10 Python API surface the backend uses.

    The "plan" is JSON describing the build, so tests can see what the builder was asked.
    The engine computes out[b, k, j] = sum(x[b, k % C]) + j for an output [B, 6, 10].
    """
    trt = types.SimpleNamespace(__version__=version, builds=[], monitor_calls=[])

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.IProgressMonitor = IProgressMonitor
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16"} if fp16_flag else {}), TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT", NONE="NONE")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    trt.nptype = lambda dt: {"FLOAT": np.float32}[dt]

    class Network:
        onnx = None

    class Parser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            if "broken" in path:
                self.errors = ["In node 3 (Foo): unsupported operator"]
                return False
            self.network.onnx = read_onnx_info(path)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = [list(mn), list(opt), list(mx)]

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool, self.progress_monitor = [], [], {}, None

        def set_flag(self, f):
            self.flags.append(f)

        def set_memory_pool_limit(self, pool, n):
            self.pool[pool] = n

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if config.progress_monitor is not None:
                m = config.progress_monitor
                m.phase_start("Building", None, 2)
                m.step_complete("Building", 0)
                m.step_complete("Building", 1)
                m.phase_finish("Building")
            if fail_build:
                return None
            info = network.onnx
            desc = {
                "input": info.input_name,
                "shape": [-1 if d is None else d for d in info.input_shape],
                "flags": config.flags,
                "profiles": [p.shapes for p in config.profiles],
                "outputs": ["output0"],
            }
            trt.builds.append(desc)
            return json.dumps(desc).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            shape = tuple(shape)
            prof = self.engine.profile_max()
            if prof is not None and not 1 <= shape[0] <= prof:
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            if name == self.engine.d["input"]:
                return self.shapes[name]
            return (self.shapes[self.engine.d["input"]][0], 6, 10)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            b, c, h, w = self.shapes[self.engine.d["input"]]
            x = np.ctypeslib.as_array((ctypes.c_float * (b * c * h * w)).from_address(self.addr[self.engine.d["input"]]))
            x = x.reshape(b, c, h, w)
            out = np.ctypeslib.as_array((ctypes.c_float * (b * 60)).from_address(self.addr["output0"])).reshape(b, 6, 10)
            sums = x.sum(axis=(2, 3))  # [b, c]
            out[:] = sums[:, np.arange(6) % c][:, :, None] + np.arange(10, dtype=np.float32)
            return True

    class Engine:
        def __init__(self, d):
            self.d = d
            self.num_io_tensors = 2

        def profile_max(self):
            return self.d["profiles"][0][self.d["input"]][2][0] if self.d["profiles"] else None

        def get_tensor_name(self, i):
            return [self.d["input"], "output0"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == self.d["input"] else "OUTPUT"

        def get_tensor_shape(self, name):
            return tuple(self.d["shape"]) if name == self.d["input"] else (self.d["shape"][0], 6, 10)

        def get_tensor_profile_shape(self, name, idx):
            return [tuple(s) for s in self.d["profiles"][idx][name]]

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            if refuse_engines:
                return None
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                return None  # what TensorRT does with a foreign or damaged plan

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.fixture
def cudart():
    return FakeCudart()


@pytest.fixture
def cuda(cudart):
    return CudaRuntime(cudart)


def expected(x):
    sums = x.sum(axis=(2, 3))
    return sums[:, np.arange(6) % x.shape[1]][:, :, None] + np.arange(10, dtype=np.float32)


# --------------------------------------------------------------------------- tests


def test_fp16_dynamic_batch_build_run_and_cache(tiny_onnx, tmp_path, cuda, cudart):
    trt = make_fake_trt()
    be = TensorRTBackend(tiny_onnx, precision="fp16", max_batch=8, cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert isinstance(be, Backend)
    assert trt.builds[0]["flags"] == ["FP16"]
    assert trt.builds[0]["profiles"] == [{"x": [[1, 3, 16, 16], [4, 3, 16, 16], [8, 3, 16, 16]]}]
    assert be.precision == "fp16" and be.max_batch == 8 and be.input_shape == (None, 3, 16, 16)
    assert be.providers == ("TensorRT", "cuda:0")
    assert be.metadata == {"names": "{0: 'a', 1: 'b'}"} and be.output_shapes == [["batch", 512, 7]]
    assert be.engine_path.is_file() and "fp16-fake-orin-sm87-trt10.3.0" in be.engine_path.name
    for b in (1, 3, 8):
        x = np.random.default_rng(b).random((b, 3, 16, 16), dtype=np.float32)
        (out,) = be.run(x)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected(x), rtol=1e-5)
    with pytest.raises(ConfigError, match="outside 1..8"):
        be.run(np.zeros((9, 3, 16, 16), np.float32))
    # A second backend (another process, a restart) loads the cached engine: no rebuild.
    be2 = TensorRTBackend(tiny_onnx, precision="fp16", max_batch=8, cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert len(trt.builds) == 1 and be2.engine_path == be.engine_path
    # Another precision or profile is another engine.
    TensorRTBackend(tiny_onnx, precision="fp32", max_batch=8, cache_dir=tmp_path, trt=trt, cuda=cuda)
    TensorRTBackend(tiny_onnx, precision="fp16", max_batch=4, cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert len(trt.builds) == 3 and trt.builds[1]["flags"] == []


def test_close_frees_device_memory_and_is_idempotent(tiny_onnx, tmp_path, cuda, cudart):
    be = TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(), cuda=cuda)
    assert len(cudart.mem) == 2 and len(cudart.streams) == 1
    be.close()
    be.close()
    assert cudart.mem == {} and cudart.streams == set() and be.providers == ()
    with pytest.raises(BackendError, match="closed"):
        be.run(np.zeros((1, 3, 16, 16), np.float32))


def test_trt11_without_fp16_flag_falls_back_to_fp32_loudly(tiny_onnx, tmp_path, cuda, caplog):
    trt = make_fake_trt(fp16_flag=False, version="11.3.0")
    with caplog.at_level(logging.WARNING):
        be = TensorRTBackend(tiny_onnx, precision="fp16", cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert be.precision == "fp32" and trt.builds[0]["flags"] == []
    assert "building FP32" in caplog.text and "autocast" in caplog.text
    assert "-fp32-" in be.engine_path.name


def test_static_batch_model_has_no_profile(make_tiny_onnx, tmp_path, cuda):
    trt = make_fake_trt()
    be = TensorRTBackend(make_tiny_onnx(dynamic_batch=False), max_batch=8, cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert trt.builds[0]["profiles"] == [] and be.max_batch == 1 and be.input_shape == (1, 3, 16, 16)
    x = np.ones((1, 3, 16, 16), np.float32)
    np.testing.assert_allclose(be.run(x)[0], expected(x))


def test_engine_refused_after_cache_is_rebuilt_once(tiny_onnx, tmp_path, cuda, caplog):
    trt = make_fake_trt()
    be = TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=trt, cuda=cuda)
    path = be.engine_path
    # Checksums fine, content foreign: what a driver/TensorRT update does to a cached plan.
    from yolo_edge.backends.engine_cache import EngineCache, EngineKey

    meta = json.loads(path.with_suffix(".json").read_text())
    EngineCache(tmp_path, stem=path.name.split("-fp16-")[0]).store(EngineKey.from_dict(meta["key"]), b"not a plan")
    be2 = TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=trt, cuda=cuda)
    assert "refused cached engine" in caplog.text and len(trt.builds) == 2
    x = np.ones((2, 3, 16, 16), np.float32)
    np.testing.assert_allclose(be2.run(x)[0], expected(x))


def test_null_engine_is_an_error_not_a_crash(tiny_onnx, tmp_path, cuda, cudart):
    with pytest.raises(BackendError, match="cannot load"):
        TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(refuse_engines=True), cuda=cuda)
    assert cudart.mem == {}


def test_prebuilt_engine_file(tiny_onnx, tmp_path, cuda):
    trt = make_fake_trt()
    built = TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=trt, cuda=cuda).engine_path
    be = TensorRTBackend(built, trt=trt, cuda=cuda)
    assert be.max_batch == 8 and be.output_shapes == [[None, 6, 10]] and be.metadata == {}
    foreign = tmp_path / "other-gpu.engine"
    foreign.write_bytes(b"\x00plan for another GPU")
    with pytest.raises(BackendError, match="rebuild it here"):
        TensorRTBackend(foreign, trt=trt, cuda=cuda)


def test_parser_errors_are_reported(tmp_path, tiny_onnx, cuda):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(UnsupportedModelError, match="unsupported operator"):
        TensorRTBackend(broken, cache_dir=tmp_path / "c", trt=make_fake_trt(), cuda=cuda)


def test_failed_build_is_backend_error(tiny_onnx, tmp_path, cuda):
    with pytest.raises(BackendError, match="failed to build"):
        TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(fail_build=True), cuda=cuda)
    assert not list(tmp_path.glob("*.engine"))


def test_progress_callbacks_reach_the_caller(tiny_onnx, tmp_path, cuda):
    calls = []

    class Progress:
        def phase_start(self, phase, parent, n):
            calls.append(("start", phase, n))

        def step_complete(self, phase, step):
            calls.append(("step", step))
            return True

        def phase_finish(self, phase):
            calls.append(("finish", phase))

    TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(), cuda=cuda, progress=Progress())
    assert calls == [("start", "Building", 2), ("step", 0), ("step", 1), ("finish", "Building")]


def test_no_gpu_or_bad_device(tiny_onnx, tmp_path):
    with pytest.raises(BackendError, match="not found"):
        TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(), cuda=CudaRuntime(FakeCudart(devices=0)))
    with pytest.raises(ConfigError):
        TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(), cuda=CudaRuntime(FakeCudart()), device=-1)


def test_no_driver_library_is_no_gpu_not_a_crash(tiny_onnx, tmp_path):
    """cuda-python 12.6+ raises RuntimeError('Failed to dlopen libcuda.so.1') on a host without a driver."""
    cudart = FakeCudart()

    def no_driver():
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    cudart.cudaGetDeviceCount = no_driver
    assert CudaRuntime(cudart).device_count() == 0
    with pytest.raises(BackendError, match="no NVIDIA GPU or driver"):
        TensorRTBackend(tiny_onnx, cache_dir=tmp_path, trt=make_fake_trt(), cuda=CudaRuntime(cudart))


def test_cuda_errors_become_backend_errors(cudart):
    rt = CudaRuntime(cudart)
    cudart.cudaMalloc = lambda n: (FakeCudart.cudaError_t.cudaErrorMemoryAllocation, 0)
    with pytest.raises(BackendError, match="cudaMalloc"):
        rt.malloc(10)


def test_precision_and_profile_rules(tiny_onnx, make_tiny_onnx):
    with pytest.raises(ConfigError):
        effective_precision(make_fake_trt(), "int8")
    assert effective_precision(make_fake_trt(), "fp32") == "fp32"
    info = read_onnx_info(tiny_onnx)
    assert make_profile(info, 1) == ((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))
    assert make_profile(info, 16)[1] == (8, 3, 16, 16)
    assert make_profile(read_onnx_info(make_tiny_onnx(dynamic_batch=False)), 8) is None
    with pytest.raises(ConfigError):
        make_profile(info, 0)


def _gpu_and_trt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        return CudaRuntime.load().device_count() > 0
    except BackendError:
        return False


@pytest.mark.skipif(not _gpu_and_trt(), reason="needs TensorRT and an NVIDIA GPU")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_real_tensorrt_matches_onnxruntime(model_path, tmp_path, precision, tol):
    ort = pytest.importorskip("onnxruntime")
    path = model_path("yolov8s-fall")
    be = TensorRTBackend(path, precision=precision, cache_dir=tmp_path)
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    (got,) = be.run(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * np.abs(want).max()
    be.close()


# --------------------------------------------------------------------------- yolo-edge build-engine


def test_cli_without_tensorrt_exits_with_clear_error(tiny_onnx, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    from yolo_edge.cli import main

    assert main(["build-engine", str(tiny_onnx)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "onnxruntime" in err


def test_cli_builds_then_finds_cached(tiny_onnx, tmp_path, monkeypatch, capsys):
    from yolo_edge.backends import tensorrt as trt_mod
    from yolo_edge.cli import main

    fake = make_fake_trt()
    cudart = FakeCudart()
    monkeypatch.setattr(trt_mod, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(CudaRuntime, "load", classmethod(lambda cls: cls(cudart)))
    args = ["build-engine", str(tiny_onnx), "--precision", "fp16", "--max-batch", "4", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "built in" in out.out and "fp16 on Fake Orin (sm87), max batch 4" in out.out
    assert "Building" in out.err  # the progress bar
    assert main(args + ["--no-progress"]) == 0
    assert "found in cache" in capsys.readouterr().out
    assert len(fake.builds) == 1 and cudart.mem == {}
    with pytest.raises(SystemExit):
        main(["build-engine", str(tiny_onnx), "--max-batch", "0"])
