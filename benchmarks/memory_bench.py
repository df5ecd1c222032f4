"""Worker memory of a real ``bentoml serve``: the bomb corpus, and the worst allowed requests.

    python benchmarks/memory_bench.py [--repo DIR] [--json out/memory.json]

Starts ``bentoml serve bentos.service:YoloEdge`` on 127.0.0.1 with the default limits
(from ``--repo``, default this checkout: point it at an export of another commit to
measure that one side by side), then sends each request once and records how far it
raised the worker's resident memory: the worker's peak RSS (``VmHWM``, reset before
each request through ``/proc/PID/clear_refs``) minus its RSS just before. Requests:

- every bomb of ``tests/bombs.py`` (a header claiming 20000x20000, in every format),
  plus bombs whose pixels are really there (a 15000x15000 PNG of zeros, 0.7 MB), and
  eight 36 MP PNGs in one request (issue 12: +1 GB);
- the largest requests the limits allow: one image at the per-image limit, images
  up to the per-request limit, and 32 full-HD frames.

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bombs import bombs, real_bombs  # noqa: E402


def png_of_zeros(width: int, height: int) -> bytes:
    """A real, complete PNG of black pixels: tiny on disk, width*height*3 bytes decoded."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + width * 3)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def full_hd_jpeg() -> bytes:
    """A real photo (the bus sample) as a 1920x1080 JPEG of quality 90, as a camera would send."""
    import cv2

    from yolo_edge.models.fetch import sample_path

    frame = cv2.resize(cv2.imread(str(sample_path("bus.jpg"))), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def cases() -> dict[str, list[bytes]]:
    out = {f"bomb: {name}": [data] for name, data in bombs().items()}
    out.update({f"bomb: {name}": [data] for name, data in real_bombs().items()})
    out["bomb: 8 x 36 MP PNGs in one request"] = [png_of_zeros(6000, 6000)] * 8
    forty = png_of_zeros(6324, 6324)  # 39.99 MP: just under the per-image limit
    out["allowed: one 40 MP PNG"] = [forty]
    out["allowed: two 40 MP PNGs (the per-request limit)"] = [forty, forty]
    out["allowed: 32 full-HD JPEG frames"] = [full_hd_jpeg()] * 32
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(repo: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "YOLO_EDGE_WARMUP_RUNS": "2",
           "PYTHONPATH": str(repo), "BENTOML_HOME": str(log.parent / "bentoml")}
    bentoml = Path(sys.executable).parent / "bentoml"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(bentoml), "serve", "bentos.service:YoloEdge", "--host", "127.0.0.1", "--port",
                                 str(port)], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited; see {log}")
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready in 180 s; see {log}")


def worker(proc: subprocess.Popen) -> psutil.Process:
    """The process that holds the model: the largest descendant of bentoml serve."""
    children = psutil.Process(proc.pid).children(recursive=True)
    return max(children, key=lambda p: p.memory_info().rss)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(url: str, pid: int, images: list[bytes]) -> tuple[int, float, str]:
    """(status, MB the request raised the worker's RSS by, start of the answer)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status_kb(pid, "VmRSS")
    files = [("images", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)]
    r = requests.post(url + "/detect", files=files, timeout=300)
    peak = status_kb(pid, "VmHWM")
    return r.status_code, (peak - before) / 1024, r.text[:90]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose service to run")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--log", type=Path, default=Path("/tmp/memory_bench/serve.log"))
    args = ap.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    proc, url = start(args.repo.resolve(), args.log)
    rows = []
    try:
        pid = worker(proc).pid
        for _ in range(3):  # settle the allocator on ordinary requests first
            measure(url, pid, [full_hd_jpeg()])
        for name, images in cases().items():
            status, mb, text = measure(url, pid, images)
            size_kb = sum(len(i) for i in images) / 1024
            rows.append({"request": name, "kb": round(size_kb, 1), "status": status, "rss_growth_mb": round(mb, 1),
                         "answer": text})
            print(f"{name:52s} {size_kb:9.1f} KB  -> {status}  +{mb:7.1f} MB", file=sys.stderr)
    finally:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        proc.wait(timeout=30)
    print("| request | size | answer | worker RSS growth |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['request']} | {r['kb']:.0f} KB | {r['status']} | +{r['rss_growth_mb']:.1f} MB |")
    bombs_max = max(r["rss_growth_mb"] for r in rows if r["request"].startswith("bomb"))
    print(f"\nlargest growth for a bomb: +{bombs_max:.1f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
