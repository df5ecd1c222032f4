"""``bentoml serve`` with a Prometheus directory of its own, so several can share a host.

BentoML 1.4 keeps the multiprocess metrics of every ``bentoml serve`` in one directory,
``$BENTOML_HOME/prometheus_multiproc_dir``, and empties it when a server starts: a second
server on the same host wipes the first one's ``/metrics`` (its workers go on writing to
files that are gone, and ``/metrics`` reads the directory). This starts ``bentoml serve``
with the directory ``$BENTOML_HOME/prometheus_multiproc_dir.<port>``, emptied when that
port's server starts and removed when it stops, so each server's metrics are its own::

    python -m bentos.serve --host 127.0.0.1 --port 3000       # bentos.service:YoloEdge
    python -m bentos.serve --host 127.0.0.1 --port 3001       # a second one beside it
    python -m bentos.serve yolo-edge:latest --port 3002       # a built Bento
    python -m bentos.serve --port 3003 --metrics-dir /run/yolo-edge/metrics-3003

Every argument but ``--metrics-dir`` goes to ``bentoml serve`` unchanged; a Bento or
import path, when given, comes first. One server per container (Kubernetes, BentoCloud)
needs none of this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["DEFAULT_SERVICE", "main", "metrics_dir_for", "split_args"]

DEFAULT_SERVICE = "bentos.service:YoloEdge"


def split_args(argv: Sequence[str]) -> tuple[list[str], Path | None, int | None]:
    """``bentoml serve`` arguments (service first), the ``--metrics-dir`` and the ``--port`` given.

    >>> split_args(["--port", "3001", "--metrics-dir", "/tmp/m"])
    (['bentos.service:YoloEdge', '--port', '3001'], PosixPath('/tmp/m'), 3001)
    >>> split_args(["yolo-edge:latest", "-p3002"])
    (['yolo-edge:latest', '-p3002'], None, 3002)
    """
    argv = list(argv)
    ours = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ours.add_argument("--metrics-dir", type=Path)
    theirs = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    theirs.add_argument("-p", "--port", type=int)
    known, rest = ours.parse_known_args(argv)
    port = theirs.parse_known_args(rest)[0].port
    if not rest or rest[0].startswith("-"):
        rest.insert(0, DEFAULT_SERVICE)
    return rest, known.metrics_dir, port


def metrics_dir_for(port: int | None, env: dict[str, str] | None = None) -> Path:
    """Where the server on ``port`` keeps its metrics (BentoML's own choice, plus the port)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    env = os.environ if env is None else env
    if port is None:  # as bentoml serve resolves it: --port, then $BENTOML_PORT, then its config
        port = int(env.get("BENTOML_PORT") or BentoMLContainer.http.port.get())
    return Path(BentoMLContainer.bentoml_home.get()) / f"prometheus_multiproc_dir.{port}"


def main(argv: Sequence[str] | None = None) -> int:
    args, metrics_dir, port = split_args(sys.argv[1:] if argv is None else argv)
    # bentoml serve asks this provider for the directory, empties it and hands it to its
    # workers as PROMETHEUS_MULTIPROC_DIR; BentoML's own pytest plugin sets it the same way
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    ours = metrics_dir is None
    metrics_dir = (metrics_dir or metrics_dir_for(port)).absolute()
    BentoMLContainer.prometheus_multiproc_dir.set(str(metrics_dir))
    try:
        return cli.main(args=["serve", *args], prog_name="bentoml", standalone_mode=True)
    finally:
        if ours:  # its files describe processes that are gone; a directory you named stays
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
