"""A cache of serialized TensorRT engines, safe to share between processes.

A TensorRT engine only runs on the GPU model and TensorRT version that built it, and
only for the precision and shape profile it was built with. :class:`EngineKey` names
all of these plus the ONNX file's sha256, so a stale or foreign engine is never
loaded: a change in any of them is a different file.

Building an engine takes minutes on a Jetson, so two processes starting at once (a
service with two workers, an agent restarted by systemd) must not both build it:
:meth:`EngineCache.get_or_build` holds an exclusive ``fcntl.flock`` on a per-key lock
file while it builds, and the second process waits, then loads the first one's
result. Files are written to a temporary name and renamed, so a reader never sees half
an engine; a zero-byte, truncated or otherwise corrupt file (power cut, disk full) is
detected through its sidecar metadata and rebuilt rather than crashed on.

Pure Python, no TensorRT needed: the build itself is a callable passed in.

    >>> key = EngineKey(gpu_name="Orin", compute_capability=(8, 7), trt_version="10.3.0",
    ...                 onnx_sha256="ab" * 32, precision="fp16", profile=None)
    >>> key.filename("yolov8s").startswith("yolov8s-fp16-orin-sm87-trt10.3.0-")
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import BackendError, ConfigError

try:  # POSIX only; on other systems builds are not serialized across processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["EngineKey", "EngineCache", "Profile", "PRECISIONS"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
#: (min, opt, max) input shapes of the one optimization profile, or None for a static model
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
_META_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class EngineKey:
    """Everything a serialized engine depends on. Equal keys mean interchangeable engines."""

    gpu_name: str
    compute_capability: tuple[int, int]
    trt_version: str
    onnx_sha256: str
    precision: str
    profile: Profile | None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ConfigError(f"onnx_sha256 must be 64 lowercase hex digits, got {self.onnx_sha256!r}")
        if len(self.compute_capability) != 2:
            raise ConfigError(f"compute_capability must be (major, minor), got {self.compute_capability!r}")
        # Normalize lists (e.g. from JSON) to tuples so equal keys hash equally.
        object.__setattr__(self, "compute_capability", tuple(int(v) for v in self.compute_capability))
        if self.profile is not None:
            if len(self.profile) != 3:
                raise ConfigError(f"profile must be (min, opt, max) shapes, got {self.profile!r}")
            object.__setattr__(self, "profile", tuple(tuple(int(d) for d in s) for s in self.profile))

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        return cls(**data)

    def digest(self) -> str:
        """Stable hash of the key: same on every machine and Python run."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def filename(self, stem: str = "model") -> str:
        """Human-readable and unique: the readable part is for people, the digest for safety."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")[:32] or "gpu"
        major, minor = self.compute_capability
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip(".-")[:48] or "model"
        trt = re.sub(r"[^0-9A-Za-z.]+", "", self.trt_version)
        return f"{stem}-{self.precision}-{gpu}-sm{major}{minor}-trt{trt}-{self.digest()[:16]}.engine"


class EngineCache:
    """A directory of engines named by :class:`EngineKey`.

    >>> import tempfile
    >>> cache = EngineCache(tempfile.mkdtemp())
    >>> key = EngineKey(gpu_name="T4", compute_capability=(7, 5), trt_version="10.3.0",
    ...                 onnx_sha256="0" * 64, precision="fp32", profile=None)
    >>> cache.get_or_build(key, lambda: b"plan bytes")
    b'plan bytes'
    >>> cache.load(key)
    b'plan bytes'
    """

    def __init__(self, cache_dir: str | os.PathLike, *, stem: str = "model", lock_timeout_s: float = 3600.0) -> None:
        self.cache_dir = Path(cache_dir)
        self.stem = stem
        self.lock_timeout_s = lock_timeout_s

    def path_for(self, key: EngineKey) -> Path:
        return self.cache_dir / key.filename(self.stem)

    def _meta_path(self, key: EngineKey) -> Path:
        return self.path_for(key).with_suffix(".json")

    def _lock_path(self, key: EngineKey) -> Path:
        return self.path_for(key).with_suffix(".lock")

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine bytes, or None when absent, empty, truncated or mismatched.

        A bad file is removed (with a warning) so the next build replaces it.
        """
        path, meta_path = self.path_for(key), self._meta_path(key)
        if not path.exists():
            return None
        problem = None
        try:
            data = path.read_bytes()
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        except (OSError, ValueError) as exc:
            data, meta, problem = b"", None, f"unreadable ({exc})"
        if problem is None:
            if not data:
                problem = "zero bytes"
            elif meta is None:
                problem = "no metadata (an interrupted write?)"
            elif meta.get("key") != key.to_dict():
                problem = "metadata names another key"
            elif meta.get("size") != len(data) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
                problem = f"size/sha256 mismatch ({len(data)} bytes, expected {meta.get('size')})"
        if problem is not None:
            logger.warning("cached engine %s is corrupt: %s; it will be rebuilt", path, problem)
            self.invalidate(key)
            return None
        return data

    def store(self, key: EngineKey, data: bytes) -> Path:
        """Write atomically: engine first, metadata last (a reader trusts only complete pairs)."""
        if not data:
            raise BackendError("refusing to cache an empty engine: the TensorRT build returned nothing")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        _atomic_write(path, data)
        meta = {
            "meta_version": _META_VERSION,
            "key": key.to_dict(),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created_unix": time.time(),
        }
        _atomic_write(self._meta_path(key), json.dumps(meta, indent=2).encode())
        return path

    def invalidate(self, key: EngineKey) -> None:
        """Remove a cached engine (e.g. one TensorRT refused to deserialize)."""
        for p in (self._meta_path(key), self.path_for(key)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def get_or_build(
        self, key: EngineKey, build: Callable[[], bytes], *, on_wait: Callable[[], None] | None = None
    ) -> bytes:
        """Load the engine for ``key``, building (once, across processes) if needed.

        ``build`` returns the serialized engine; it runs while the key's lock is held.
        ``on_wait`` is called once if another process holds the lock (for a CLI message).
        """
        data = self.load(key)
        if data is not None:
            return data
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(key, on_wait=on_wait):
            # Another process may have finished the build while we waited for the lock.
            data = self.load(key)
            if data is not None:
                logger.info("engine %s was built by another process", self.path_for(key).name)
                return data
            logger.info("building engine %s", self.path_for(key).name)
            data = build()
            self.store(key, data)
            return data

    @contextmanager
    def _locked(self, key: EngineKey, *, on_wait: Callable[[], None] | None) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning("no fcntl on this platform: concurrent engine builds are not serialized")
            yield
            return
        with open(self._lock_path(key), "a+b") as fh:
            deadline = time.monotonic() + self.lock_timeout_s
            waited = False
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        waited = True
                        logger.info("another process is building %s; waiting", self.path_for(key).name)
                        if on_wait is not None:
                            on_wait()
                    if time.monotonic() > deadline:
                        raise BackendError(
                            f"waited {self.lock_timeout_s:.0f} s for the engine build lock "
                            f"{self._lock_path(key)}; if no build is running, delete that file"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                # The lock file stays: deleting it would race with a process that just opened it.
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    """tmp file in the same directory + fsync + rename: all or nothing, even on power loss."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
