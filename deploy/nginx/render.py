"""Render deploy/nginx/yolo-edge.conf.template into an nginx.conf for N replicas.

The template marks its placeholders ``{{name}}`` (nginx's own ``$variables`` stay as they
are); every placeholder must be given and every value is checked, so a typo fails here
rather than as a bad config at nginx start-up.

    python deploy/nginx/render.py --upstream 10.0.0.11:3000 --upstream 10.0.0.12:3000 \\
        --listen 8080 --prefix /srv/yolo-edge-lb -o /srv/yolo-edge-lb/yolo-edge.conf
    nginx -p /srv/yolo-edge-lb -c yolo-edge.conf -e logs/error.log

From Python (tests do this):

>>> conf = render(["127.0.0.1:3001", "127.0.0.1:3002"], listen="127.0.0.1:8080")
>>> "server 127.0.0.1:3002 max_fails=2 fail_timeout=5s;" in conf and "{{" not in conf
True
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

TEMPLATE = Path(__file__).resolve().parent / "yolo-edge.conf.template"
#: yolo_edge.remote.wire.LIMITS.max_request_bytes, the service's default YOLO_EDGE_MAX_UPLOAD_BYTES. Written out
#: because this script runs on a balancer without the SDK; tests/deploy holds the two equal.
DEFAULT_MAX_BODY_BYTES = 32 << 20
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_LISTEN = re.compile(r"^((\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$")
_DURATION = re.compile(r"^\d+(ms|s|m)$")


def render(
    upstreams: Sequence[str],
    *,
    listen: str = "8080",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    worker_processes: str = "auto",
    max_fails: int = 2,
    fail_timeout: str = "5s",
    next_upstream_tries: int = 2,
    next_upstream_timeout: str = "10s",
    template: Path = TEMPLATE,
) -> str:
    """The nginx.conf text for ``upstreams`` (``host:port`` of each ``bentoml serve``)."""
    if isinstance(upstreams, str) or not upstreams:
        raise ValueError(f"upstreams must be a non-empty list of 'host:port' replicas, got {upstreams!r}")
    for up in upstreams:
        if not _HOST_PORT.match(up) or not 0 < int(up.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"upstream {up!r} is not 'host:port' (like '10.0.0.11:3000')")
    if not _LISTEN.match(listen):
        raise ValueError(f"listen must be 'port' or 'host:port' (like '127.0.0.1:8080'), got {listen!r}")
    for name, value in (("max_body_bytes", max_body_bytes), ("max_fails", max_fails),
                        ("next_upstream_tries", next_upstream_tries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("fail_timeout", fail_timeout), ("next_upstream_timeout", next_upstream_timeout)):
        if not _DURATION.match(value):
            raise ValueError(f"{name} must be an nginx duration like '5s' or '500ms', got {value!r}")
    if worker_processes != "auto" and not worker_processes.isdigit():
        raise ValueError(f"worker_processes must be 'auto' or a number, got {worker_processes!r}")
    servers = "\n".join(f"        server {up} max_fails={max_fails} fail_timeout={fail_timeout};" for up in upstreams)
    values = {
        "servers": servers,
        "listen": listen,
        "max_body_bytes": str(max_body_bytes),
        "worker_processes": worker_processes,
        "max_fails": str(max_fails),
        "fail_timeout": fail_timeout,
        "next_upstream_tries": str(next_upstream_tries),
        "next_upstream_timeout": next_upstream_timeout,
    }
    text = Path(template).read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise ValueError(f"{template} has placeholders render() does not fill: {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def make_prefix(prefix: Path) -> Path:
    """Create the ``logs/`` and ``tmp/`` folders the config expects under ``nginx -p prefix``."""
    prefix = Path(prefix)
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return prefix


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the yolo-edge nginx load-balancer config.")
    parser.add_argument("--upstream", action="append", required=True, metavar="HOST:PORT",
                        help="a bentoml serve replica; repeat for each")
    parser.add_argument("--listen", default="8080", help="port or host:port nginx listens on (default 8080)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="client_max_body_size: the replicas' YOLO_EDGE_MAX_UPLOAD_BYTES (default 32 MiB)")
    parser.add_argument("--worker-processes", default="auto")
    parser.add_argument("--next-upstream-tries", type=int, default=2, help="replicas tried per request (default 2)")
    parser.add_argument("--prefix", type=Path, help="create logs/ and tmp/ here (the directory given to nginx -p)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        conf = render(args.upstream, listen=args.listen, max_body_bytes=args.max_body_bytes,
                      worker_processes=args.worker_processes, next_upstream_tries=args.next_upstream_tries)
    except ValueError as exc:
        parser.error(str(exc))
    if args.prefix:
        make_prefix(args.prefix)
    if args.output:
        args.output.write_text(conf)
    else:
        sys.stdout.write(conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
