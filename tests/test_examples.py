"""Each example in examples/ runs as its header says, from a directory like a fresh clone's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the examples as a user runs them, real services

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _run(cwd: Path, *argv: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO)}
    r = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture
def clone(tmp_path, sample_photos, default_model_path):
    (tmp_path / "examples").symlink_to(EXAMPLES)
    (tmp_path / "photos").mkdir()
    for p in sample_photos:  # what `yolo-edge samples photos` leaves
        shutil.copy(p, tmp_path / "photos")
    return tmp_path


def test_every_example_is_listed_and_exists():
    table = (EXAMPLES / "README.md").read_text()
    for name in ("sdk.py", "cloud_client.py", "agent.toml", "agent_pool.toml"):
        assert (EXAMPLES / name).is_file() and f"examples/{name}" in table


def test_sdk_example(clone):
    r = _run(clone, sys.executable, "examples/sdk.py")
    assert "bus.jpg: Detections(5: 4 person, 1 bus)" in r.stdout
    out = clone / "out" / "sdk"
    assert sorted(p.name for p in out.iterdir()) == ["bus.jpg", "bus.json", "coco_results.json", "zidane.jpg", "zidane.json"]
    coco = json.loads((out / "coco_results.json").read_text())
    assert {c["image_id"] for c in coco} == {1, 2} and {1, 6} <= {c["category_id"] for c in coco}  # person, bus
    r = _run(clone, sys.executable, "examples/sdk.py", "--classes", "bus", "--out", "out/bus")
    assert "bus.jpg: Detections(1: 1 bus)" in r.stdout


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_agent_config_example(clone):
    """`edge-agent run --config examples/agent.toml`: local only, classes by name, wall-clock times."""
    start = datetime.now(timezone.utc)
    _run(clone, "edge-agent", "run", "--config", "examples/agent.toml")
    end = datetime.now(timezone.utc)
    lines = _jsonl(clone / "out" / "agent" / "results.jsonl")
    assert [x["seq"] for x in lines] == list(range(20))
    labels = {d["label"] for x in lines for d in x.get("detections", [])}
    assert labels == {"person", "bus"}  # zidane.jpg's ties are filtered out
    for x in lines:
        captured = datetime.fromisoformat(x["captured_wall"].replace("Z", "+00:00"))
        finished = datetime.fromisoformat(x["finished_wall"].replace("Z", "+00:00"))
        assert start <= captured <= finished <= end
        assert abs((finished - captured).total_seconds() * 1000 - x["latency_ms"]) < 1.0
    assert len(list((clone / "out" / "agent" / "frames").iterdir())) > 0


@pytest.mark.slow
def test_cloud_client_example_and_agent_classes_in_the_cloud(clone, local_service):
    r = _run(clone, sys.executable, "examples/cloud_client.py", "--url", local_service.url)
    assert "the same model as this device" in r.stdout and re.search(r"bus.jpg: cloud Detections\(\d+: ", r.stdout)
    # every frame through the cloud, filtered there by the same classes as locally
    _run(clone, "edge-agent", "run", "--config", "examples/agent.toml", "--cloud", local_service.url,
         "--mode", "cloud", "--classes", "person", "--sink", "jsonl:out/cloud.jsonl")
    lines = _jsonl(clone / "out" / "cloud.jsonl")
    answered = [x for x in lines if x["outcome"] != "dropped"]  # the first frames may find the cloud cold
    assert len(lines) == 20 and answered and {x["route"] for x in answered} == {"cloud"}, lines
    assert {d["label"] for x in answered for d in x["detections"]} == {"person"}  # no bus, no tie


@pytest.mark.slow
def test_make_demo_command(tmp_path, sample_photos, default_model_path):
    """`make demo` runs `edge-agent demo --out out`: here on a 3 s clip."""
    r = _run(tmp_path, "edge-agent", "demo", "--out", "out", "--seconds", "3", BENTOML_HOME=str(tmp_path / "bentoml"))
    out = tmp_path / "out"
    summary = json.loads((out / "agent_summary.json").read_text())
    lines = _jsonl(out / "agent_results.jsonl")
    assert summary["frames"] == len(lines) > 0 and (out / "sample_clip.avi").is_file()
    assert any((out / "agent_frames").iterdir())
    # the last lines read like a result, with the numbers of the summary it wrote
    printed = r.stdout.strip().splitlines()
    at = max(i for i, line in enumerate(printed) if line.startswith("result: "))
    head, alone, carried, *rest = printed[at:]
    base = summary["baseline"]
    assert head.startswith(f"result: {summary['frames']} frames at "), r.stdout
    m = re.fullmatch(r"  local alone ([\d.]+)%, hybrid ([\d.]+)%: ([+-]\d+) frames \(([+-][\d.]+) points\) within budget",
                     alone)
    assert m, alone
    assert float(m[1]) == pytest.approx(100 * base["within_budget_share"], abs=0.05)
    assert float(m[2]) == pytest.approx(100 * summary["within_budget_share"], abs=0.05)
    assert (int(m[3]), float(m[4])) == (base["gain_frames"], pytest.approx(base["gain_points"], abs=0.05))
    assert base["gain_frames"] == round(summary["within_budget_share"] * summary["frames"]) - base["within_budget"]
    lost = summary["outcomes"]["dropped"] + summary["outcomes"]["late"]
    assert carried.startswith(f"  the cloud carried {summary['outcomes']['cloud']} frames; {lost} frames lost to ")
    fast = base.get("at_measured_capacity")
    assert len(rest) == (1 if fast else 0), printed
    if fast:  # the same replay at the local speed measured before the run
        assert f"local alone: {100 * fast['within_budget_share']:.1f}%)" in rest[0]
        assert fast["within_budget"] <= summary["frames"]
    assert "agent:" in r.stderr  # its progress bar, on stderr


@pytest.mark.slow
def test_endpoint_pool_example(clone, local_service, tmp_path):
    """`edge-agent run --config examples/agent_pool.toml` with two real services on its primaries'
    ports (the ports replaced by free ones, nothing else) and nothing on the backup's."""
    from edge_agent.cloudserve import LocalService, free_port

    text = (EXAMPLES / "agent_pool.toml").read_text()
    with LocalService(threads=1, log_dir=tmp_path, env={"BENTOML_HOME": str(tmp_path / "bentoml")}) as second:
        backup = f"http://127.0.0.1:{free_port()}"
        for written, real in (("http://127.0.0.1:3000", local_service.url), ("http://127.0.0.1:3001", second.url),
                              ("http://127.0.0.1:3002", backup)):
            assert text.count(written) == 1, written
            text = text.replace(written, real)
        (clone / "agent_pool.toml").write_text(text)
        r = _run(clone, "edge-agent", "run", "--config", "agent_pool.toml")
    lines = _jsonl(clone / "out" / "pool" / "results.jsonl")
    assert [x["seq"] for x in lines] == list(range(60))  # every frame once, in order
    answered_by = Counter(x["endpoint"] for x in lines if x["outcome"] == "cloud")
    assert set(answered_by) == {local_service.url, second.url}, answered_by  # both primaries, never the backup
    assert all(x.get("endpoint") is None for x in lines if x["route"] != "cloud")
    assert "cloud answers by endpoint" in r.stdout and "order preserved" in r.stdout
