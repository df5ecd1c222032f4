import numpy as np
import pytest

from yolo_edge import samples
from yolo_edge.errors import ConfigError, ModelNotFoundError


def test_samples_by_name(sample_photos):
    assert samples.names() == ["bus.jpg", "zidane.jpg"]
    assert samples.path("bus.jpg") == sample_photos[0] and samples.path() == sample_photos[0]
    frame = samples.load("zidane.jpg")
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8


def test_unfetched_or_unknown_sample_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not fetched yet: run `yolo-edge samples`"):
        samples.path("bus.jpg", root=tmp_path)
    with pytest.raises(ConfigError, match=r"unknown sample 'cat.jpg': expected one of \['bus.jpg', 'zidane.jpg'\]") as info:
        samples.path("cat.jpg")
    assert not isinstance(info.value, ModelNotFoundError)  # a sample is not a model
    with pytest.raises(ConfigError, match="unknown sample"):
        samples.load("cat.jpg")


def test_copy_to(sample_photos, tmp_path):
    copies = samples.copy_to(tmp_path / "photos")
    assert [p.name for p in copies] == ["bus.jpg", "zidane.jpg"]
    assert all(c.read_bytes() == s.read_bytes() for c, s in zip(copies, sample_photos))
