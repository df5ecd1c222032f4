"""Image sizes read from headers: every format OpenCV decodes is parsed or refused, bombs never decoded."""

from __future__ import annotations

import io
import re
import struct

import cv2
import numpy as np
import pytest
from bombs import BOMB_SIDE, bombs, tiff

from yolo_edge import image as image_mod
from yolo_edge.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from yolo_edge.image import decode_image, load_image
from yolo_edge.image_header import PARSED_FORMATS, REFUSED_FORMATS, read_header

RNG = np.random.default_rng(0)
COLOR = RNG.integers(0, 255, (37, 53, 3), dtype=np.uint8)

# (name, encoded bytes) of real files OpenCV (or Pillow) wrote, in every format it writes
REAL = [(ext, cv2.imencode(ext, img)[1].tobytes()) for ext, img in [
    (".jpg", COLOR), (".png", COLOR), (".png", COLOR.astype(np.uint16) * 257), (".png", COLOR[..., 0]),
    (".bmp", COLOR), (".webp", COLOR), (".tiff", COLOR), (".tiff", COLOR.astype(np.uint16)), (".jp2", COLOR),
    (".ras", COLOR), (".ppm", COLOR), (".pgm", COLOR[..., 0]), (".pbm", (COLOR[..., 0] > 127).astype(np.uint8)),
    (".pam", COLOR), (".gif", COLOR),
]] + [
    ("webp lossless", cv2.imencode(".webp", COLOR, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()),
    ("jpeg progressive", cv2.imencode(".jpg", COLOR, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()),
    ("tiff by hand, little-endian", tiff([(53, 37)], pixels=True)),
    ("tiff by hand, big-endian", tiff([(53, 37)], order=">", pixels=True)),
    ("bigtiff", tiff([(53, 37)], big=True, pixels=True)),
    ("tiff, two pages", tiff([(53, 37), (20, 10)], order=">", pixels=True)),
]


def _pil(fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(COLOR[..., ::-1]).save(buf, fmt, **kwargs)
    return buf.getvalue()


REAL += [("pil gif", _pil("GIF")), ("pil tiff deflate", _pil("TIFF", compression="tiff_deflate")),
         ("pil jpeg with exif", _pil("JPEG", exif=b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00\x00\x00"))]


@pytest.mark.parametrize("name,data", REAL, ids=[n for n, _ in REAL])
def test_header_size_is_the_decoded_size(name, data):
    header = read_header(data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None, name
    assert (header.height, header.width) == decoded.shape[:2], name
    assert decode_image(data).shape == (*decoded.shape[:2], 3)


def test_jpeg_fill_bytes_and_garbage_before_markers_are_read_like_libjpeg():
    data = cv2.imencode(".jpg", COLOR)[1].tobytes()
    sof = data.index(b"\xff\xc0")
    for prefix in (b"\xff" * 9, b"\x00\x17" + b"\xff\xff"):  # fill bytes; skipped garbage, then a marker
        patched = data[:sof] + prefix + data[sof:]
        assert read_header(patched).width == 53
        assert decode_image(patched).shape == (37, 53, 3)  # libjpeg reads it too


def test_every_decoder_of_this_opencv_is_parsed_or_refused():
    """A new OpenCV that decodes another format (JPEG XL, say) fails here until it is handled."""
    info = cv2.getBuildInformation()
    media = info[info.index("Media I/O:"):info.index("Video I/O:")]
    decoders = {m.group(1).strip().lower() for m in re.finditer(r"^\s{4}(\w[\w ]*?):", media, re.M)} - {"zlib"}
    assert {"jpeg", "png", "tiff", "webp"} <= decoders, media  # the build information was read
    known = {"jpeg": "jpeg", "png": "png", "webp": "webp", "tiff": "tiff", "jpeg 2000": "jp2", "gif": "gif",
             "openexr": "exr", "hdr": "hdr", "sunraster": "sunras", "pxm": "pnm", "pfm": "pfm", "avif": "avif"}
    assert decoders <= set(known), f"OpenCV decodes {sorted(decoders - set(known))}: parse or refuse them"
    handled = set(PARSED_FORMATS) | set(REFUSED_FORMATS)
    assert {known[d] for d in decoders} <= handled


BOMBS = bombs()


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_before_any_pixel_is_decoded(name, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a bomb reached the decoder")

    monkeypatch.setattr(image_mod.cv2, "imdecode", no_decoding)
    header = read_header(BOMBS[name])
    assert header.pixels >= 16383 * 16383, (name, header)  # every format's maximum is above the limit
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        decode_image(BOMBS[name])
    with pytest.raises(ImageTooLargeError):
        load_image(BOMBS[name])
    assert BOMB_SIDE * BOMB_SIDE > image_mod.MAX_PIXELS


@pytest.mark.parametrize("data,error,needle", [
    (b"\x76\x2f\x31\x01" + b"\x00" * 64, UnsupportedImageError, "OpenEXR"),
    (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10 +X 10\n", UnsupportedImageError, "HDR"),
    (b"PF\n10 10\n-1\n" + b"\x00" * 64, UnsupportedImageError, "PFM"),
    (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, UnsupportedImageError, "AVIF"),
    (b"%PDF-1.4\n", ImageDecodeError, "expected JPEG, PNG"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", ImageDecodeError, "cut short"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", ImageDecodeError, "cut short"),
    (b"\xff\xd8\xff\xda\x00\x08", ImageDecodeError, "before any frame header"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03" + b"\x00" * 20, ImageDecodeError, "DNL"),
    (b"BM" + b"\x00" * 12 + struct.pack("<I", 8) + b"\x00" * 20, ImageDecodeError, "information header"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, ImageDecodeError, "start code"),
    (b"GIF89a\x10\x00\x10\x00\x00\x00\x00\x2c\x00\x00", ImageDecodeError, "cut short"),
    (b"P6\n# only a comment\n", ImageDecodeError, "cut short"),
    (b"P7\nWIDTH 10\nENDHDR\n", ImageDecodeError, "no WIDTH or HEIGHT"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", ImageDecodeError, "cut short"),
])
def test_refused_and_damaged_headers(data, error, needle):
    with pytest.raises(error, match=needle):
        read_header(data)
    with pytest.raises(error):
        decode_image(data)


def test_tiff_loops_and_endless_pages_are_refused():
    data = bytearray(tiff([(8, 8)]))
    next_at = 8 + 2 + 12 * 9  # IFD at 8: count, 9 entries, then the next-IFD offset
    struct.pack_into("<I", data, next_at, 8)  # the first page points back at itself
    with pytest.raises(ImageDecodeError, match="loop"):
        read_header(bytes(data))
    many = tiff([(2, 2)] * 300)
    with pytest.raises(ImageDecodeError, match="more than 256 pages"):
        read_header(many)


def test_zero_sizes_are_refused():
    with pytest.raises(ImageDecodeError, match="positive width and height"):
        read_header(tiff([(0, 10)]))
