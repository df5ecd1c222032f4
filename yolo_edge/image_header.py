"""Image dimensions read from the encoded header, before a single pixel is decoded.

A decompression bomb is a small file that decodes to a huge image: a 0.7 MB TIFF of
15000x15000 pixels, a PNG of zeros, a JPEG whose frame header hides behind legal 0xFF
fill bytes. The only safe defence is to read the size the decoder *will* allocate from
the header, with the decoder's own parsing rules, and refuse before decoding.

Every format this build of OpenCV's ``imdecode`` accepts is either parsed here or
refused here, so nothing reaches the decoder unmeasured:

============  ===========================================================================
parsed        JPEG (segments walked like libjpeg: fill bytes and garbage skipped, the
              first frame header wins), PNG/APNG (IHDR), GIF (screen and every frame),
              BMP/DIB (all header versions), WebP (VP8, VP8L, VP8X canvas), TIFF (every
              page, both byte orders, classic and BigTIFF, tile sizes), PBM/PGM/PPM
              (P1-P6), PAM (P7), Sun raster, JPEG 2000 (JP2 boxes and the codestream's
              SIZ, whichever is larger)
refused       OpenEXR, Radiance HDR and PFM (floating-point formats, not photos), AVIF
              (the AV1 stream inside may be larger than its container says, and the
              stream header is not readable without an AV1 parser), and anything else
============  ===========================================================================

>>> read_header(bytes.fromhex("89504e470d0a1a0a0000000d49484452000001e0000002800806000000"))
ImageHeader(format='png', width=480, height=640, frames=1)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .errors import ImageDecodeError, UnsupportedImageError

__all__ = ["ImageHeader", "read_header", "MIME_TYPES", "PARSED_FORMATS", "REFUSED_FORMATS"]

#: Content types to upload each parsed format with.
MIME_TYPES = {
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "bmp": "image/bmp", "webp": "image/webp",
    "tiff": "image/tiff", "pnm": "image/x-portable-anymap", "pam": "image/x-portable-arbitrarymap",
    "sunras": "image/x-sun-raster", "jp2": "image/jp2",
}
PARSED_FORMATS = tuple(MIME_TYPES)
REFUSED_FORMATS = ("exr", "hdr", "pfm", "avif")

_EXPECTED = "expected JPEG, PNG, WebP, BMP, TIFF, GIF, PNM, Sun raster or JPEG 2000 data"
#: Bounds on the work one header may cause: TIFF pages, GIF blocks, text header bytes.
_MAX_PAGES = 256
_MAX_TIFF_ENTRIES = 4096
_MAX_TEXT_HEADER = 64 * 1024


@dataclass(frozen=True)
class ImageHeader:
    """What the header promises: the largest frame's size and the number of frames seen."""

    format: str
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def mime(self) -> str:
        return MIME_TYPES[self.format]


class _Truncated(Exception):
    pass


def read_header(data: bytes) -> ImageHeader:
    """The size ``data`` decodes to, read without decoding it.

    Raises :class:`~yolo_edge.errors.ImageDecodeError` when the bytes are no image of
    a known format or the header is damaged, and
    :class:`~yolo_edge.errors.UnsupportedImageError` for a format we refuse to decode.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not data:
        raise ImageDecodeError(f"got empty bytes: {_EXPECTED}; check the upload or file read")
    fmt = _sniff(data)
    if fmt is None:
        raise ImageDecodeError(f"could not decode {len(data)} bytes as an image (starts with {bytes(data[:11])!r}): "
                               f"{_EXPECTED}; check the file is complete and not another format")
    if fmt in REFUSED_FORMATS:
        raise UnsupportedImageError(_REFUSAL[fmt])
    try:
        header = _PARSERS[fmt](data)
    except _Truncated:
        raise ImageDecodeError(f"the {fmt.upper()} header is cut short ({len(data)} bytes): "
                               "expected a complete image file; check the upload") from None
    except struct.error:
        raise ImageDecodeError(f"the {fmt.upper()} header is cut short ({len(data)} bytes): "
                               "expected a complete image file; check the upload") from None
    if header.width <= 0 or header.height <= 0:
        raise ImageDecodeError(f"the {fmt.upper()} header says {header.width}x{header.height}: "
                               "expected a positive width and height")
    return header


_REFUSAL = {
    "exr": "OpenEXR images are not accepted (floating-point HDR, not a photo): convert to PNG or JPEG",
    "hdr": "Radiance HDR images are not accepted (floating-point HDR, not a photo): convert to PNG or JPEG",
    "pfm": "PFM images are not accepted (floating-point, not a photo): convert to PNG or JPEG",
    "avif": "AVIF images are not accepted: their size cannot be checked before decoding; convert to JPEG, PNG or WebP",
}


def _sniff(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "pnm"
    if head[:3] in (b"P7\n", b"P7\r", b"P7 "):
        return "pam"
    if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        return "pfm"
    if head.startswith(b"\x59\xa6\x6a\x95"):
        return "sunras"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jp2"
    if head.startswith(b"\x76\x2f\x31\x01"):
        return "exr"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if head[4:8] == b"ftyp" and _is_avif(data):
        return "avif"
    return None


def _is_avif(data: bytes) -> bool:
    size = int.from_bytes(data[:4], "big")
    brands = data[8:12] + data[16:max(16, min(size, 256))]
    return any(brands[i:i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


def _need(data: bytes, end: int) -> None:
    if end > len(data):
        raise _Truncated()


def _u16(data: bytes, off: int, order: str = ">") -> int:
    _need(data, off + 2)
    return struct.unpack_from(order + "H", data, off)[0]


def _u32(data: bytes, off: int, order: str = ">") -> int:
    _need(data, off + 4)
    return struct.unpack_from(order + "I", data, off)[0]


def _u64(data: bytes, off: int, order: str = ">") -> int:
    _need(data, off + 8)
    return struct.unpack_from(order + "Q", data, off)[0]


def _bad(fmt: str, what: str) -> ImageDecodeError:
    return ImageDecodeError(f"damaged {fmt} header: {what}; expected a valid {fmt} file")


# -- JPEG ---------------------------------------------------------------------------------

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> ImageHeader:
    # libjpeg's next_marker(): skip anything up to an 0xFF, any number of 0xFF fill bytes,
    # and an 0xFF 0x00 pair; the first frame header (SOFn) found that way is the one it decodes
    i, n = 2, len(data)
    while True:
        while True:
            i = data.find(b"\xff", i)
            if i < 0:
                raise _Truncated()
            while i < n and data[i] == 0xFF:
                i += 1
            if i >= n:
                raise _Truncated()
            marker = data[i]
            i += 1
            if marker != 0x00:
                break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if marker == 0xD8:
            raise _bad("JPEG", "a second start-of-image marker")
        if marker in (0xD9, 0xDA):
            raise _bad("JPEG", "image data before any frame header (SOF)")
        length = _u16(data, i)
        if length < 2:
            raise _bad("JPEG", f"segment 0x{marker:02X} has length {length}")
        if marker in _SOF:
            _need(data, i + 8)
            height, width = struct.unpack_from(">HH", data, i + 3)
            if height == 0:  # the height would come later, in a DNL marker
                raise _bad("JPEG", "a frame header without a height (DNL), which is not supported")
            return ImageHeader("jpeg", width, height)
        i += length


# -- PNG, GIF, BMP, WebP ----------------------------------------------------------------------

def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise _Truncated() if len(data) < 16 else _bad("PNG", "the first chunk is not IHDR")
    return ImageHeader("png", _u32(data, 16), _u32(data, 20))


def _gif(data: bytes) -> ImageHeader:
    screen_w, screen_h = _u16(data, 6, "<"), _u16(data, 8, "<")
    _need(data, 13)
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    best, frames = (screen_w, screen_h), 0
    while True:  # every block moves i forward, so this ends with the data
        _need(data, i + 1)
        block = data[i]
        if block == 0x21:  # extension: label, then data sub-blocks
            i = _skip_sub_blocks(data, i + 2)
        elif block == 0x2C:  # image descriptor: left, top, width, height, flags
            _need(data, i + 10)
            left, top, w, h = struct.unpack_from("<HHHH", data, i + 1)
            frames += 1
            if (left + w) * (top + h) > best[0] * best[1]:
                best = (left + w, top + h)
            local = data[i + 9]
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            i = _skip_sub_blocks(data, i + 1)  # after the LZW minimum code size
        else:
            break  # the trailer (0x3B), or anything else: where every decoder stops
    return ImageHeader("gif", best[0], best[1], max(frames, 1))


def _skip_sub_blocks(data: bytes, i: int) -> int:
    while True:
        _need(data, i + 1)
        size = data[i]
        i += 1 + size
        if size == 0:
            return i


def _bmp(data: bytes) -> ImageHeader:
    dib = _u32(data, 14, "<")
    if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return ImageHeader("bmp", _u16(data, 18, "<"), _u16(data, 20, "<"))
    if dib < 16:
        raise _bad("BMP", f"an information header of {dib} bytes")
    _need(data, 26)
    width, height = struct.unpack_from("<ii", data, 18)
    return ImageHeader("bmp", width, abs(height))  # a negative height means top-down rows


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas every frame is drawn on
        _need(data, 30)
        return ImageHeader("webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8 ":
        _need(data, 30)
        if data[23:26] != b"\x9d\x01\x2a":
            raise _bad("WebP", "a VP8 frame without its start code")
        return ImageHeader("webp", _u16(data, 26, "<") & 0x3FFF, _u16(data, 28, "<") & 0x3FFF)
    if chunk == b"VP8L":
        _need(data, 25)
        if data[20] != 0x2F:
            raise _bad("WebP", "a lossless frame without its signature")
        b = data[21:25]
        return ImageHeader("webp", 1 + (((b[1] & 0x3F) << 8) | b[0]),
                           1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6)))
    raise _Truncated() if len(data) < 16 else _bad("WebP", f"unknown first chunk {chunk!r}")


# -- TIFF -------------------------------------------------------------------------------------

_TIFF_SIZE_TAGS = {256: "width", 257: "height", 322: "tile_width", 323: "tile_height"}


def _tiff(data: bytes) -> ImageHeader:
    order = "<" if data[:2] == b"II" else ">"
    big = _u16(data, 2, order) == 43
    offset = _u64(data, 8, order) if big else _u32(data, 4, order)
    best: tuple[int, int] | None = None
    seen: set[int] = set()
    pages = 0
    while offset:
        if offset in seen:
            raise _bad("TIFF", "its pages form a loop")
        if pages == _MAX_PAGES:
            raise _bad("TIFF", f"more than {_MAX_PAGES} pages")
        seen.add(offset)
        sizes, offset = _tiff_ifd(data, offset, order, big)
        pages += 1
        if "width" not in sizes or "height" not in sizes:
            raise _bad("TIFF", f"page {pages} has no ImageWidth/ImageLength")
        for w, h in ((sizes["width"], sizes["height"]), (sizes.get("tile_width", 0), sizes.get("tile_height", 0))):
            if best is None or w * h > best[0] * best[1]:
                best = (w, h)
    if best is None:
        raise _bad("TIFF", "no pages")
    return ImageHeader("tiff", best[0], best[1], pages)


def _tiff_ifd(data: bytes, offset: int, order: str, big: bool) -> tuple[dict[str, int], int]:
    count = _u64(data, offset, order) if big else _u16(data, offset, order)
    if count > _MAX_TIFF_ENTRIES:
        raise _bad("TIFF", f"a page with {count} entries")
    base, size = offset + (8 if big else 2), (20 if big else 12)
    sizes: dict[str, int] = {}
    for k in range(count):
        entry = base + k * size
        tag, kind = _u16(data, entry, order), _u16(data, entry + 2, order)
        if tag not in _TIFF_SIZE_TAGS:
            continue
        value = entry + (12 if big else 8)
        if kind == 3:  # SHORT
            sizes[_TIFF_SIZE_TAGS[tag]] = _u16(data, value, order)
        elif kind == 4:  # LONG
            sizes[_TIFF_SIZE_TAGS[tag]] = _u32(data, value, order)
        elif kind == 16 and big:  # LONG8
            sizes[_TIFF_SIZE_TAGS[tag]] = _u64(data, value, order)
        else:
            raise _bad("TIFF", f"tag {tag} of type {kind}")
    end = base + count * size
    return sizes, (_u64(data, end, order) if big else _u32(data, end, order))


# -- PNM, PAM, Sun raster, JPEG 2000 ------------------------------------------------------------

_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\d{1,10})(?=[\s#])")


def _pnm(data: bytes) -> ImageHeader:
    text = data[2:_MAX_TEXT_HEADER]
    first = _PNM_TOKEN.match(text)
    second = _PNM_TOKEN.match(text, first.end()) if first else None
    if second is None:
        raise _Truncated() if len(data) < _MAX_TEXT_HEADER else _bad("PNM", "no width and height")
    return ImageHeader("pnm", int(first.group(1)), int(second.group(1)))


def _pam(data: bytes) -> ImageHeader:
    fields: dict[bytes, int] = {}
    for line in data[3:_MAX_TEXT_HEADER].splitlines():
        words = line.split()
        if not words or words[0].startswith(b"#"):
            continue
        if words[0] == b"ENDHDR":
            if b"WIDTH" not in fields or b"HEIGHT" not in fields:
                raise _bad("PAM", "no WIDTH or HEIGHT before ENDHDR")
            return ImageHeader("pam", fields[b"WIDTH"], fields[b"HEIGHT"])
        if words[0] in (b"WIDTH", b"HEIGHT"):
            if len(words) < 2 or not words[1].isdigit() or len(words[1]) > 10:
                raise _bad("PAM", f"{words[0].decode()} is not a number")
            fields[words[0]] = int(words[1])
    raise _Truncated() if len(data) < _MAX_TEXT_HEADER else _bad("PAM", "no ENDHDR")


def _sunras(data: bytes) -> ImageHeader:
    return ImageHeader("sunras", _u32(data, 4), _u32(data, 8))


def _jp2(data: bytes) -> ImageHeader:
    if data.startswith(b"\xff\x4f\xff\x51"):
        return _j2k_siz(data, 0)
    sizes: list[tuple[int, int]] = []
    i, codestream = 0, None
    while i < len(data) and codestream is None:
        length, kind, body = _box(data, i)
        if kind == b"jp2h":
            j = body
            while j < i + length:
                sub_len, sub_kind, sub_body = _box(data, j)
                if sub_kind == b"ihdr":
                    sizes.append((_u32(data, sub_body + 4), _u32(data, sub_body)))
                j += sub_len
        elif kind == b"jp2c":
            codestream = body
        i += length
    if codestream is None:
        raise _Truncated()
    siz = _j2k_siz(data, codestream)
    w, h = max([*sizes, (siz.width, siz.height)], key=lambda s: s[0] * s[1])
    return ImageHeader("jp2", w, h)


def _box(data: bytes, i: int) -> tuple[int, bytes, int]:
    """(length, type, offset of the payload) of the ISO box at ``i``."""
    length, kind = _u32(data, i), data[i + 4:i + 8]
    body = i + 8
    if length == 1:
        length, body = _u64(data, i + 8), i + 16
    elif length == 0:  # to the end of the file
        length = len(data) - i
    if length < body - i:
        raise _bad("JPEG 2000", f"box {kind!r} of length {length}")
    return length, kind, body


def _j2k_siz(data: bytes, i: int) -> ImageHeader:
    if data[i:i + 4] != b"\xff\x4f\xff\x51":
        raise _Truncated() if len(data) < i + 4 else _bad("JPEG 2000", "the codestream does not start with SIZ")
    xsiz, ysiz, xosiz, yosiz = (_u32(data, i + 8 + 4 * k) for k in range(4))
    return ImageHeader("jp2", xsiz - xosiz, ysiz - yosiz)


_PARSERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "bmp": _bmp, "webp": _webp, "tiff": _tiff, "pnm": _pnm,
            "pam": _pam, "sunras": _sunras, "jp2": _jp2}
