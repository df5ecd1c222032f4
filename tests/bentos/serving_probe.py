"""What the service, imported from a given source tree, resolves its model to.

The service module is imported in a fresh interpreter, from ``source_root`` (a clone, or
a built Bento's ``src``) and with that directory as the working directory, as `bentoml
serve` imports it there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json
from bentos.service import SETTINGS
from yolo_edge.models.resolve import resolve_model
r = resolve_model(SETTINGS.model, SETTINGS.model_home)
print(json.dumps({"path": str(r.path), "sha256": r.sha256, "origin": SETTINGS.model_origin.name}))
"""


def serving_model(source_root: Path, model: str, *, path: list[Path] = ()) -> dict[str, str]:
    """``{"path", "sha256", "origin"}`` of ``YOLO_EDGE_MODEL=model`` for the service in ``source_root``.

    ``path``: directories after ``source_root`` on the import path (where yolo_edge is, when
    ``source_root`` holds only ``bentos``). The caller's ``YOLO_EDGE_HOME`` is kept: it is
    what the user's tools use too.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(YOLO_EDGE_MODEL=model, PYTHONPATH=os.pathsep.join(str(p) for p in [source_root, *path]),
               BENTOML_DO_NOT_TRACK="true")
    run = subprocess.run([sys.executable, "-c", _PROBE], cwd=source_root, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
