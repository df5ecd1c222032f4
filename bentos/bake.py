"""Copy a verified model into the build context so ``bentoml build`` bakes it into the Bento.

The Bento then carries the model in ``build/model_home``: a replica that scales up from
zero loads the model from its image, with no download and the same sha256 check as
everywhere else. Only a service running from the built Bento reads it; one started from
this clone (``python -m bentos.serve``) still loads from the user's model cache, whatever
was baked here (``bentos/model_home.py``).

    python -m bentos.bake                      # the default model, yolov3-tiny-coco
    python -m bentos.bake yolov8s-fall
    bentoml build -f bentos/bentofile.yaml .   # from the repository root
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from yolo_edge.errors import YoloEdgeError
from yolo_edge.models.fetch import verify_model
from yolo_edge.models.registry import DEFAULT_MODEL, model_path

#: Relative to the build context (the repository root); bentofile.yaml includes it.
BAKE_HOME = Path("build") / "model_home"


def bake(name: str = DEFAULT_MODEL, dest_home: Path = BAKE_HOME) -> Path:
    """Verify the fetched model ``name`` and copy it to ``dest_home``; return the copy."""
    src = verify_model(name)
    dest = model_path(name, dest_home)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".onnx.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    verify_model(name, dest_home)  # the copy must hash like the pin
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="pinned model name")
    parser.add_argument("--home", type=Path, default=BAKE_HOME, help="where to put it (default build/model_home)")
    args = parser.parse_args(argv)
    try:
        path = bake(args.model, args.home)
    except YoloEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"baked {args.model} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
