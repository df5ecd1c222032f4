"""Python 3.10 is really supported, as pyproject.toml and the README say.

The check is static: vermin (a test dependency) reads every module and names any standard
library module, function or syntax newer than the minimum (``tomllib``, ``datetime.UTC``,
``typing.Self``, ``ExceptionGroup``, ``except*``, ``enum.StrEnum`` ...). A line that runs
only on newer Pythons, behind a version check, carries a ``# novermin`` comment.
``make test-py310`` also runs the unit tests on a real Python 3.10, where one is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import yolo_edge

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = (REPO / "pyproject.toml").read_text()


def _minimum() -> str:
    m = re.search(r'^requires-python = ">=(3\.\d+)"$', PYPROJECT, re.M)
    assert m, "pyproject.toml should state requires-python = \">=3.N\""
    return m.group(1)


def test_no_api_newer_than_the_stated_minimum():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    if vermin is None:
        pytest.fail("vermin is not installed: `make test` installs it with the [test] extra", pytrace=False)
    # `bytes.decode` after an isinstance check reads to vermin like Python 2's str.decode
    r = subprocess.run([vermin, "-q", "--no-tips", "--violations", "--eval-annotations", f"--target={_minimum()}-",
                        "--exclude", "str.decode", "yolo_edge", "edge_agent", "bentos", "examples", "benchmarks", "deploy"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), f"needs a newer Python than {_minimum()}:\n{r.stdout}{r.stderr}"


def test_minimum_is_stated_the_same_everywhere():
    assert _minimum() == "3.10"
    assert f"Python {_minimum()}+" in (REPO / "README.md").read_text()
    assert "tomli>=1.1; python_version < '3.11'" in PYPROJECT  # the config reader's TOML parser on 3.10


def test_one_version_number():
    assert re.search(r'^version = "(.+)"$', PYPROJECT, re.M).group(1) == yolo_edge.__version__
