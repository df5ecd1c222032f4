"""Decompression bombs of every format OpenCV decodes, and a TIFF writer to build them.

Each bomb is a small, otherwise well-formed file whose header promises a huge image
(the decoder would allocate for it), built by patching the size fields of a real file
that OpenCV wrote, or written field by field where that is clearer (TIFF, BMP core
header, WebP VP8X, PNM, PAM, Sun raster). Used by the image tests, the malformed-input
corpus against the real service and ``benchmarks/memory_bench.py``.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

__all__ = ["BOMB_SIDE", "bombs", "tiff", "real_bombs"]

#: Every bomb claims BOMB_SIDE x BOMB_SIDE pixels (400 MP: 1.2 GB as BGR).
BOMB_SIDE = 20000

_SMALL = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)


def _encoded(ext: str, image: np.ndarray = _SMALL, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok, ext
    return buf.tobytes()


def _png(side: int) -> bytes:
    data = bytearray(_encoded(".png"))
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_sof(data: bytes) -> int:
    """Offset of the first SOFn marker's 0xFF in a plain JPEG."""
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return i


def _jpeg(side: int, *, fill: int = 0, garbage: int = 0, progressive: bool = False) -> bytes:
    params = (cv2.IMWRITE_JPEG_PROGRESSIVE, 1) if progressive else ()
    data = bytearray(_encoded(".jpg", params=params))
    sof = _jpeg_sof(bytes(data))
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    # 0xFF fill bytes before a marker are legal; garbage bytes are skipped by libjpeg with a warning
    return bytes(data[:sof]) + b"\x00" * garbage + b"\xff" * fill + bytes(data[sof:])


def _gif(side: int, *, frame: bool = False) -> bytes:
    data = bytearray(_encoded(".gif"))
    if frame:  # a small screen, and an image descriptor far larger than it
        i = data.index(b"\x2c", 13)
        data[i + 5:i + 9] = struct.pack("<HH", min(side, 65535), min(side, 65535))
    else:
        data[6:10] = struct.pack("<HH", min(side, 65535), min(side, 65535))
    return bytes(data)


def _bmp(side: int, *, top_down: bool = False) -> bytes:
    data = bytearray(_encoded(".bmp"))
    data[18:26] = struct.pack("<ii", side, -side if top_down else side)
    return bytes(data)


def _bmp_core(side: int) -> bytes:
    """An OS/2 BITMAPCOREHEADER: 16-bit sizes."""
    side = min(side, 65535)
    core = struct.pack("<IHHHH", 12, side, side, 1, 24)
    return b"BM" + struct.pack("<IHHI", 14 + len(core) + 64, 0, 0, 14 + len(core)) + core + b"\x00" * 64


def _webp_vp8x(side: int) -> bytes:
    lossy = _encoded(".webp")
    vp8 = lossy[12:]  # the VP8 chunk of a real file
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (side - 1).to_bytes(3, "little") * 2
    body = b"WEBP" + chunk + vp8
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_vp8(side: int) -> bytes:
    data = bytearray(_encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80)))
    assert data[12:16] == b"VP8 "
    side = min(side, 16383)
    data[26:30] = struct.pack("<HH", side, side)
    return bytes(data)


def _webp_vp8l(side: int) -> bytes:
    data = bytearray(_encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)))  # above 100: lossless
    assert data[12:16] == b"VP8L"
    w = h = min(side, 16384) - 1
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~((1 << 28) - 1)) | w | (h << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def tiff(pages: list[tuple[int, int]], *, order: str = "<", big: bool = False, tile: tuple[int, int] | None = None,
         pixels: bool = False, deflated_zeros: bool = False) -> bytes:
    """A TIFF with one 8-bit gray page per (width, height), written field by field.

    ``pixels=True`` stores real (uncompressed) pixel data, so OpenCV can decode it;
    ``deflated_zeros=True`` stores black pixels, deflate-compressed (a real bomb: 1000:1);
    otherwise each page holds one byte of data (a bomb: the header is all that matters).
    """
    entry_fmt = order + ("HHQQ" if big else "HHII")
    count_fmt, next_fmt = order + ("Q" if big else "H"), order + ("Q" if big else "I")
    entry_size = 20 if big else 12
    header = (b"II" if order == "<" else b"MM") + (struct.pack(order + "HHHQ", 43, 8, 0, 16) if big
                                                   else struct.pack(order + "HI", 42, 8))
    out = bytearray(header)
    for n, (w, h) in enumerate(pages):
        if deflated_zeros:
            z, row = zlib.compressobj(9), b"\x00" * w
            data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
        else:
            data = bytes((x * 7 + y) % 251 for y in range(h) for x in range(w)) if pixels else b"\x00"
        tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8 if deflated_zeros else 1), (262, 3, 1), (277, 3, 1)]
        if tile:
            tags += [(322, 4, tile[0]), (323, 4, tile[1])]
        ifd_at = len(out)
        data_at = ifd_at + (8 if big else 2) + entry_size * (len(tags) + 3) + (8 if big else 4)
        tags += [(273 if not tile else 324, 4, data_at), (278, 4, h), (279 if not tile else 325, 4, len(data))]
        tags.sort()
        out += struct.pack(count_fmt, len(tags))
        for tag, kind, value in tags:
            if kind == 3 and not big:  # a SHORT sits left-justified in the 4-byte value field
                out += struct.pack(order + "HHIHH", tag, kind, 1, value, 0)
            elif kind == 3:
                out += struct.pack(order + "HHQHHHH", tag, kind, 1, value, 0, 0, 0)
            else:
                out += struct.pack(entry_fmt, tag, 16 if big else kind, 1, value)
        next_at = len(out)
        out += struct.pack(next_fmt, 0)
        out += data
        if n + 1 < len(pages):
            struct.pack_into(next_fmt, out, next_at, len(out))
    return bytes(out)


def _pnm(side: int) -> bytes:
    return f"P6\n# a comment with {side} in it\n{side} {side}\n255\n".encode() + b"\x00" * 64


def _pam(side: int) -> bytes:
    return f"P7\nWIDTH {side}\nHEIGHT {side}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".encode() + b"\x00" * 64


def _sunras(side: int) -> bytes:
    return struct.pack(">8I", 0x59A66A95, side, side, 24, side * side * 3, 1, 0, 0) + b"\x00" * 64


def _jp2(side: int, *, only_codestream_size: bool = False) -> bytes:
    data = bytearray(_encoded(".jp2"))
    if not only_codestream_size:
        ihdr = data.index(b"ihdr") + 4
        data[ihdr:ihdr + 8] = struct.pack(">II", side, side)
    siz = data.index(b"\xff\x4f\xff\x51")
    data[siz + 8:siz + 16] = struct.pack(">II", side, side)
    return bytes(data)


def _j2k(side: int) -> bytes:
    data = _jp2(side)
    return data[data.index(b"\xff\x4f\xff\x51"):]


def bombs(side: int = BOMB_SIDE) -> dict[str, bytes]:
    """Every bomb kind by name, each claiming ``side`` x ``side`` (or its format's maximum)."""
    return {
        "png": _png(side),
        "jpeg": _jpeg(side),
        "jpeg_progressive": _jpeg(side, progressive=True),
        "jpeg_fill_bytes": _jpeg(side, fill=7),
        "jpeg_garbage_before_sof": _jpeg(side, garbage=3, fill=1),
        "gif_screen": _gif(side),
        "gif_frame": _gif(side, frame=True),
        "bmp": _bmp(side),
        "bmp_top_down": _bmp(side, top_down=True),
        "bmp_core_header": _bmp_core(side),
        "webp_vp8x": _webp_vp8x(side),
        "webp_vp8": _webp_vp8(side),
        "webp_vp8l": _webp_vp8l(side),
        "tiff_le": tiff([(side, side)]),
        "tiff_be": tiff([(side, side)], order=">"),
        "tiff_second_page": tiff([(16, 16), (side, side)], order=">"),
        "tiff_big": tiff([(side, side)], big=True),
        "tiff_huge_tile": tiff([(64, 64)], tile=(side, side)),
        "pnm": _pnm(side),
        "pam": _pam(side),
        "sunras": _sunras(side),
        "jp2": _jp2(side),
        "jp2_codestream_larger_than_box": _jp2(side, only_codestream_size=True),
        "j2k_codestream": _j2k(side),
    }


def real_bombs(side: int = 15000) -> dict[str, bytes]:
    """Bombs whose pixel data is really there, compressed: what a careless decoder inflates."""
    row = b"\x00" + b"\x00" * (side * 3)  # filter byte + an RGB row of zeros
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return {"png_of_zeros": png, "tiff_deflate_of_zeros": tiff([(side, side)], deflated_zeros=True)}
