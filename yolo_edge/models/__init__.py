"""The model registry: pinned models and sample images, fetched only when asked."""

from .fetch import fetch_model, fetch_sample, is_fetched, sample_images, sha256_file, verify_model
from .registry import DEFAULT_MODEL, MODELS, SAMPLES, ModelSpec, cache_dir, get_spec, model_path

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "SAMPLES",
    "ModelSpec",
    "cache_dir",
    "fetch_model",
    "fetch_sample",
    "get_spec",
    "is_fetched",
    "model_path",
    "sample_images",
    "sha256_file",
    "verify_model",
]
