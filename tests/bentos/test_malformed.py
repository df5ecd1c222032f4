"""A malformed-input corpus against a real `bentoml serve`: every request gets a JSON 4xx or a correct 200.

Each kind (malformed HTTP, wrong method and path, bodies that are not multipart or not
complete, bombs of every format, oversize and too many images, bad and out-of-range
options, long headers, bad or missing token) is sent, its answer checked, and then a
good request must still be answered: nothing a client sends harms the service. A bad
request among concurrent good ones fails alone, and client errors log one line each.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import requests
from bombs import bombs

from yolo_edge.remote.wire import LIMITS, decode_results

pytestmark = pytest.mark.slow  # ~90 kinds, each followed by a good request: 20-60 s on a busy machine


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
            + b"\x00" * 32)


def encoded(ext: str, image: np.ndarray | None = None) -> bytes:
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8) if image is None else image
    return cv2.imencode(ext, image)[1].tobytes()


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "xXx") -> tuple[bytes, str]:
    """A multipart body from (name, filename or None, data)."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def raw(url: str, data: bytes, *, read_timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; return (status, headers, body) of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def http(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    if body and "Content-Length" not in (headers or {}) and "Transfer-Encoding" not in (headers or {}):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def detect_raw(parts: list[tuple[str, str | None, bytes]], extra: dict[str, str] | None = None) -> bytes:
    body, ctype = multipart(parts)
    return http("POST", "/detect", body, {"Content-Type": ctype, **(extra or {})})


PHOTO = encoded(".jpg")
GOOD = [("images", "p.jpg", PHOTO)]  # a multipart part: (name, filename, data)
GOOD_FILES = [("images", ("p.jpg", PHOTO, "image/jpeg"))]  # the same, for requests


def options(**fields: str) -> bytes:
    return detect_raw(GOOD + [(k, None, v.encode()) for k, v in fields.items()])


def corpus(photo: bytes) -> dict[str, tuple[bytes, set[int]]]:
    """kind -> (raw request, the statuses it may get). Bombs of every format come from tests/bombs.py."""
    good_png = encoded(".png")
    cases: dict[str, tuple[bytes, set[int]]] = {
        # malformed HTTP: uvicorn answers before any app sees it
        "garbage request line": (b"GARBAGE\r\n\r\n", {400}),
        "NUL in the request line": (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
        "bad Content-Length": (http("POST", "/detect", b"", {"Content-Length": "abc"}), {400}),
        "Content-Length and Transfer-Encoding": (
            http("POST", "/detect", b"5\r\nhello\r\n0\r\n\r\n", {"Content-Length": "5", "Transfer-Encoding": "chunked"}),
            {400, 415}),  # h11 reads it as chunked: then it is no multipart
        "broken chunked encoding": (http("POST", "/detect", b"zz\r\nhello\r\n", {"Transfer-Encoding": "chunked"}), {400}),
        "a 64 KiB header": (http("GET", "/metadata", b"", {"X-Big": "a" * 65536}), {200, 400, 431}),
        "a 1 MiB header": (http("GET", "/metadata", b"", {"X-Big": "a" * (1 << 20)}), {200, 400, 431}),
        "200 small headers": (http("GET", "/metadata", b"", {f"X-H{i}": "v" * 40 for i in range(200)}), {200, 400, 431}),
        # wrong method and path
        "unknown path": (http("GET", "/nope"), {404}),
        "PUT /detect": (http("PUT", "/detect", b"x"), {405}),
        "GET /detect": (http("GET", "/detect"), {405}),
        "DELETE /metadata": (http("DELETE", "/metadata"), {405}),
        "POST /metadata": (http("POST", "/metadata", b"{}"), {405}),
        "path traversal": (http("GET", "/../../etc/passwd"), {404}),
        # bodies
        "empty body, no content type": (http("POST", "/detect"), {415}),
        "JSON body": (http("POST", "/detect", b'{"images": ["aGVsbG8="]}', {"Content-Type": "application/json"}), {415}),
        "text body": (http("POST", "/detect", b"hello", {"Content-Type": "text/plain"}), {415}),
        "multipart without boundary": (http("POST", "/detect", b"xx", {"Content-Type": "multipart/form-data"}), {400}),
        "multipart garbage": (http("POST", "/detect", b"\x00\xff" * 100,
                                   {"Content-Type": "multipart/form-data; boundary=b"}), {400}),
        "multipart cut short": (http("POST", "/detect", multipart(GOOD)[0][:-30],
                                     {"Content-Type": multipart(GOOD)[1]}), {200, 400}),
        "body shorter than its Content-Length": (http("POST", "/detect", b"--xXx\r\n",
                                                      {"Content-Type": multipart(GOOD)[1], "Content-Length": "100000"}),
                                                 {408}),
        "declared above the upload limit": (http("POST", "/detect", b"x", {"Content-Type": multipart(GOOD)[1],
                                                                         "Content-Length": str(1 << 30)}), {413}),
        "no images field": (detect_raw([("conf", None, b"0.5")]), {400}),
        "images as a text field": (detect_raw([("images", None, b"http://169.254.169.254/latest")]), {400}),
        "too many fields": (detect_raw(GOOD + [(f"f{i}", None, b"1") for i in range(20)]), {400}),
        f"{LIMITS.max_images + 1} images": (detect_raw([("images", f"{i}.png", good_png)
                                                        for i in range(LIMITS.max_images + 1)]), {400}),
        # images
        "empty file": (detect_raw([("images", "a.jpg", b"")]), {400}),
        "text file": (detect_raw([("images", "a.txt", b"hello world")]), {400}),
        "PDF file": (detect_raw([("images", "a.pdf", b"%PDF-1.4\n%%EOF")]), {400}),
        "truncated JPEG": (detect_raw([("images", "a.jpg", photo[:300])]), {400}),
        "JPEG without its end": (detect_raw([("images", "a.jpg", photo[:-200])]), {200, 400}),
        "truncated PNG": (detect_raw([("images", "a.png", good_png[:60])]), {400}),
        "one bad image among good ones": (detect_raw(GOOD + [("images", "b.jpg", b"nope")] + GOOD), {400}),
        "OpenEXR": (detect_raw([("images", "a.exr", b"\x76\x2f\x31\x01" + b"\x00" * 64)]), {415}),
        "Radiance HDR": (detect_raw([("images", "a.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8 +X 8\n")]), {415}),
        "AVIF": (detect_raw([("images", "a.avif", b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64)]),
                 {415}),
        "three 36 MP images (too many pixels together)": (
            detect_raw([("images", f"{i}.png", png_claiming(6000, 6000)) for i in range(3)]), {413}),
        # options
        **{f"option {k}={v}": (options(**{k: v}), {400}) for k, v in [
            ("conf", "1.5"), ("conf", "abc"), ("conf", "NaN"), ("conf", "1e999"), ("iou", "-1"), ("max_det", "0"),
            ("max_det", "1000000000"), ("max_det", "2.5"), ("classes", "[99999999999999999999999]"), ("classes", "[80]"),
            ("classes", "[-1]"), ("classes", "null"), ("classes", '"person"'), ("classes", "[" * 4000 + "]" * 4000),
            ("classes", "[" * 20000), ("confidence", "0.5")]},
        "conf given twice": (detect_raw(GOOD + [("conf", None, b"0.5"), ("conf", None, b"0.6")]), {400}),
        # per-frame budgets: a JSON list, one finite number of seconds within 0..max_budget_s (or null) per image
        **{f"budgets_s={v[:40]}": (options(budgets_s=v), {400}) for v in [
            "0.5", "[0.5, 0.5]", "[]", "[-1]", "[-0.0001]", "[NaN]", "[Infinity]", "[1e999]",
            f"[{LIMITS.max_budget_s * 2:g}]", '["0.5"]', "[true]", "[{}]", "[[0.5]]", "null", "{}", "[0.5",
            "[" * 4000 + "]" * 4000, "[" + "1," * 5000 + "1]", "[99999999999999999999999999999]"]},
        "budgets_s given twice": (detect_raw(GOOD + [("budgets_s", None, b"[1]"), ("budgets_s", None, b"[1]")]), {400}),
        "budgets_s as a file": (detect_raw(GOOD + [("budgets_s", "b.json", b"[1]")]), {400}),
        "budgets_s for one of two images": (detect_raw(GOOD + GOOD + [("budgets_s", None, b"[1]")]), {400}),
        # unusual but valid: a correct 200
        "a long header on a good request": (detect_raw(GOOD, {"X-Trace": "t" * 8000}), {200}),
        "a PNM image": (detect_raw([("images", "a.ppm", encoded(".ppm"))]), {200}),
        "a 16-bit PNG": (detect_raw([("images", "a.png", encoded(".png", np.full((40, 40, 3), 40000, np.uint16)))]),
                         {200}),
        "a filename with odd bytes": (detect_raw([("images", "\u00e9\u00e8 \"x\".jpg", photo)]), {200, 400}),
        "options at their bounds": (options(conf="0", iou="1", max_det=str(LIMITS.max_det), classes="[0, 79]"), {200}),
        "budgets at their bound, and none": (detect_raw(GOOD + GOOD + [("budgets_s", None, f"[{LIMITS.max_budget_s:g}, null]"
                                                                        .encode())]), {200}),
    }
    cases.update({f"bomb: {name}": (detect_raw([("images", f"bomb.{name}", data)]), {413})
                  for name, data in bombs().items()})
    return cases


def check_answer(kind: str, status: int, headers: dict[str, str], body: bytes, allowed: set[int], n_images: int) -> None:
    assert status in allowed, (kind, status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (kind, headers, body[:200])
    data = json.loads(body)
    if status == 200:
        if n_images:
            assert all(r.ok for r in decode_results(data, n_images)), (kind, data)
    else:
        assert isinstance(data["error"], str) and data["error"] and data["status"] == status, (kind, data)


def decoded_pixels_settle_to_zero(url: str) -> bool:
    """The pixel budget returns to 0 (a request releases it just after its answer is sent)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = requests.get(url + "/metrics", timeout=10).text
        if "yolo_edge_decoded_pixels 0.0" in text:
            return True
        time.sleep(0.05)
    return False


def good_request(url: str) -> None:
    r = requests.post(url + "/detect", files=GOOD_FILES, timeout=60)
    assert r.status_code == 200 and r.json()[0]["status"] == "ok", r.text


def test_the_corpus_is_large():
    assert len(corpus(PHOTO)) >= 40


def test_every_malformed_request_gets_a_json_4xx_or_a_correct_200(service):
    log_start = len(service.log.read_bytes())
    answers = {}
    for kind, (request, allowed) in corpus(PHOTO).items():
        status, headers, body = raw(service.url, request)
        n_images = request.count(b'name="images"; filename=')
        check_answer(kind, status, headers, body, allowed, n_images)
        answers[kind] = status
        good_request(service.url)  # and the service is fine
    assert not [k for k, s in answers.items() if s >= 500]
    assert decoded_pixels_settle_to_zero(service.url)  # every request gave its pixels back
    log = service.log.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]  # a client error is one line, not a traceback
    assert "refused 400 on POST /detect: classes must hold class ids within the model's classes 0..79" in log


@pytest.mark.parametrize("case", [
    ("no token", {}), ("wrong token", {"Authorization": "Bearer nope"}), ("empty bearer", {"Authorization": "Bearer "}),
    ("basic auth", {"Authorization": "Basic dGVzdC10b2tlbi0xMjM="}), ("token as a query", {}),
])
def test_bad_or_missing_token_is_a_json_401(secured_service, case):
    kind, headers = case
    path = "/detect?token=test-token-123" if kind == "token as a query" else "/detect"
    body, ctype = multipart(GOOD)
    status, out_headers, out = raw(secured_service.url, http("POST", path, body, {"Content-Type": ctype, **headers}))
    check_answer(kind, status, out_headers, out, {401}, 1)
    assert out_headers["www-authenticate"].startswith("Bearer")
    r = requests.post(secured_service.url + "/detect", files=GOOD_FILES, timeout=60,
                      headers={"Authorization": f"Bearer {secured_service.token}"})
    assert r.status_code == 200


@pytest.mark.parametrize("bad", [
    {"data": {"classes": "[99999999999999999999999]"}},
    {"data": {"classes": "[" * 3000 + "]" * 3000}},
    {"files": [("images", ("bomb.tiff", bombs()["tiff_be"], "image/tiff"))]},
    {"files": [("images", ("t.jpg", PHOTO[:300], "image/jpeg"))]},
])
def test_one_bad_request_among_concurrent_good_ones_fails_alone(service, bad):
    """Issue 12 saw 11 and 15 of 18 good requests fail with the one bad one in their batch."""

    def send(i: int) -> int:
        if i == 6:
            r = requests.post(service.url + "/detect", files=bad.get("files", GOOD_FILES), data=bad.get("data"), timeout=60)
            return -r.status_code  # the bad one, told apart by its sign
        return requests.post(service.url + "/detect", files=GOOD_FILES, timeout=60).status_code

    with cf.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(send, range(18)))
    bad_code = -codes.pop(6)
    assert 400 <= bad_code < 500, bad_code
    assert codes == [200] * 17, codes
