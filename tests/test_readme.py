"""The README runs as written.

Its reader has a fresh clone after `make demo` (models and sample photos fetched, the
demo's clip in `out/sample_clip.avi`) and has typed the quick start's
`source .venv/bin/activate` and `yolo-edge samples photos`. The `clone` fixture makes that
state in a temporary directory (the clip is made the way the demo makes it, `examples/`
is linked in), and everything runs there:

- every `yolo-edge ...` and `edge-agent ...` command in a bash block parses with the real
  parsers; all but the few in ``PARSE_ONLY`` (each with its reason) also run, through
  bash, in README order, and must exit 0, and so do the bash lines that run ``python``
  (making a checkpoint to export, rendering the nginx config, checked with ``nginx -t``);
- the reader's home is a fresh directory whose ``~/.cache/yolo-edge`` holds the fetched
  models and photos: after every line has run, nothing was written in it outside that cache
  (Ultralytics' settings, for one, would land in ``~/.config``);
- every Python block runs in a fresh interpreter; a ``print(x)  # text`` line must print
  ``text``;
- blocks and commands that talk to the service at ``127.0.0.1:3000`` run against a real
  `bentoml serve` on a free port: ``127.0.0.1:3000`` is replaced by its address, a
  ``--metrics-port 9100`` by another free port, and ``127.0.0.1:3001``/``:3002`` (endpoints
  the README says are down) by free ports nothing listens on;
- blocks that talk to an Open Inference Protocol server at ``gpu-node:8000`` run against a
  real Triton server (tests/triton) serving the model under the name the block uses, with
  ``gpu-node:8000`` replaced by its address. Those are the only changes made to any line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.cli import build_parser as agent_parser
from edge_agent.cloudserve import free_port
from yolo_edge.cli import build_parser as yolo_parser

pytestmark = pytest.mark.integration  # the README's blocks and commands as a user runs them

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SERVICE = "127.0.0.1:3000"
TRITON = "gpu-node:8000"
DOWN = ("127.0.0.1:3001", "127.0.0.1:3002")  # endpoints that are down in the README's pool example

PARSE_ONLY = {
    "yolo-edge build-engine": "needs TensorRT and an NVIDIA GPU (tests/backends)",
    "edge-agent demo": "what `make demo` runs (20 s); tests/test_examples.py runs it on a short clip",
}

# python lines of the bash blocks that do not run here (the others do, as written)
PYTHON_NOT_RUN = {
    "python -m bentos.serve": "a server that runs until stopped; the service tests run it (local_service)",
    "python -m bentos.bake": "tests/bentos/test_bento_build.py bakes and builds the Bento",
}


@dataclass(frozen=True)
class Command:
    line: str  # as written, continuation lines joined
    argv: list[str]

    @property
    def needs_service(self) -> bool:
        return SERVICE in self.line

    def parse_only(self) -> str | None:
        return next((why for prefix, why in PARSE_ONLY.items() if self.line.startswith(prefix)), None)


def blocks(lang: str) -> list[str]:
    """The README's fenced blocks in ``lang`` (indented ones too), dedented."""
    fence = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^\1```", re.S | re.M)
    return [textwrap.dedent(m.group(3)) for m in fence.finditer(README) if m.group(2) == lang]


def commands() -> list[Command]:
    """Every `yolo-edge`/`edge-agent` command of the bash blocks (a line may hold several, joined by &&)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] in ("yolo-edge", "edge-agent"):
                    out.append(Command(" ".join(part.split("#")[0].split()), argv))
    return out


def shell_lines() -> list[Command | str]:
    """In README order: the commands of :func:`commands` and the bash lines that run ``python``
    (``VAR=value python ...`` too) but for those in ``PYTHON_NOT_RUN``, the latter as written."""
    out: list[Command | str] = []
    by_line = iter(commands())
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] in ("yolo-edge", "edge-agent"):
                    out.append(next(by_line))
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                words = words[1:]
            if words and words[0] == "python":
                text = " ".join(line.split("#")[0].split())
                not_run = next((why for prefix, why in PYTHON_NOT_RUN.items() if " ".join(words).startswith(prefix)),
                               None)
                assert not_run or words[1] in ("-c", "deploy/nginx/render.py"), f"say why `{text}` is not run"
                if not not_run:
                    out.append(text)
    return out


def python_blocks(*, service: bool, triton: bool = False) -> list[str]:
    return [b for b in blocks("python") if (SERVICE in b) == service and (TRITON in b) == triton]


@pytest.fixture(scope="module")
def clone(tmp_path_factory, default_model_path, fall_model_path, sample_photos):
    """A directory in the state the README's reader is in after `make demo` and the quick start."""
    from edge_agent.demo import make_clip

    from yolo_edge.models.registry import cache_dir

    root = tmp_path_factory.mktemp("clone")
    for name in ("examples", "deploy"):
        (root / name).symlink_to(REPO / name)
    cache = root / "home" / ".cache" / "yolo-edge"  # the models and photos `make demo` fetched, nothing else
    cache.mkdir(parents=True)
    for name in ("models", "artifacts", "samples"):
        if (cache_dir() / name).is_dir():
            (cache / name).symlink_to(cache_dir() / name)
    make_clip(root / "out" / "sample_clip.avi", frames=30, fps=15.0, size=(640, 360))
    assert "yolo-edge samples photos" in [c.line for c in commands()], "the quick start should fetch the photos"
    _run_line(root, "yolo-edge samples photos")
    return root


def _env(cwd: Path) -> dict[str, str]:
    # `source .venv/bin/activate`: the commands of this environment first on PATH; the reader's own home
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO), "HOME": str(cwd / "home")}
    for var in ("YOLO_EDGE_HOME", "YOLO_CONFIG_DIR"):  # the reader has set neither (make sets YOLO_CONFIG_DIR)
        env.pop(var, None)
    return env


def _run_line(cwd: Path, line: str, url: str | None = None) -> subprocess.CompletedProcess:
    if url:
        line = line.replace(f"http://{SERVICE}", url).replace("--metrics-port 9100", f"--metrics-port {free_port()}")
    r = subprocess.run(["bash", "-c", line], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"`{line}` exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _run_python(cwd: Path, code: str, url: str | None = None) -> None:
    if url:
        code = code.replace(f"http://{SERVICE}", url)
        for down in DOWN:
            code = code.replace(f"http://{down}", f"http://127.0.0.1:{free_port()}")
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"README block failed:\n{code}\n{r.stderr[-3000:]}"
    for expected in re.findall(r"^[ \t]*print\(.*\)\s+#\s*(.+?)\s*$", code, re.M):
        assert expected in r.stdout, f"the README says {expected!r}, the block printed:\n{r.stdout}"


def test_readme_has_what_a_user_types():
    lines = [c.line for c in commands()]
    assert len(lines) >= 15 and len(python_blocks(service=False)) >= 3 and len(python_blocks(service=True)) >= 2
    for must in ("yolo-edge samples photos", "yolo-edge detect photos/*.jpg", "yolo-edge --version",
                 "edge-agent --version", "edge-agent run --config examples/agent.toml", "yolo-edge models fetch --all"):
        assert any(line.startswith(must) for line in lines), must


def test_toml_blocks_are_agent_settings():
    """A config-file excerpt in the README is one the agent takes as written."""
    from edge_agent.config import AgentConfig

    if sys.version_info >= (3, 11):
        import tomllib  # novermin: this branch runs on Python 3.11+ only
    else:
        import tomli as tomllib
    assert blocks("toml")
    for block in blocks("toml"):
        data = tomllib.loads(block)
        AgentConfig.from_mapping(data.get("agent", data))


@pytest.mark.parametrize("command", commands(), ids=lambda c: c.line[:60])
def test_command_parses(command):
    parser = yolo_parser() if command.argv[0] == "yolo-edge" else agent_parser()
    try:
        args = parser.parse_args(command.argv[1:])
    except SystemExit as exc:  # --version and --help exit 0; a bad option exits 2
        assert exc.code == 0, f"`{command.line}` does not parse"
        return
    assert getattr(args, "func", None) or getattr(args, "cmd", None)


@pytest.mark.slow
def test_commands_run(clone):
    ran = []
    for command in shell_lines():
        if isinstance(command, str):  # a python line: as written
            _run_line(clone, command)
            ran.append(command)
            continue
        if command.needs_service or command.parse_only():
            continue
        r = _run_line(clone, command.line)
        ran.append(command.line)
        if command.argv[-1] == "--version":
            assert r.stdout.startswith(f"{command.argv[0]} ")
        if command.argv[:2] == ["yolo-edge", "export"]:
            assert "use it with Detector(" in r.stdout
    assert len(ran) >= 15 and any(line.startswith("yolo-edge export") for line in ran)
    # the export registered its model in the reader's cache, and nothing was written in the home outside it
    assert (clone / "home" / ".cache" / "yolo-edge" / "registry.json").is_file()
    home = clone / "home"
    said = [home / ".cache" / "yolo-edge",
            home / ".local" / "state" / "edge-agent",  # the agent's default spool directory (README: Where results go)
            home / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime"]  # onnxruntime's device id (README)
    outside = [str(p.relative_to(home)) for p in home.rglob("*")
               if not any(p.is_relative_to(d) or d.is_relative_to(p) for d in said)]
    assert outside == [], outside
    conf = next(clone.glob("out/*/yolo-edge.conf"), None)  # the nginx block's config, rendered as written
    assert conf is not None
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:  # its upstream addresses resolve and its paths exist: what `nginx -p ... -c ...` would load
        r = subprocess.run([nginx, "-t", "-p", str(conf.parent), "-c", conf.name, "-e", "logs/error.log"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (clone / "out" / "detect").glob("*.jpg")) == ["bus.jpg", "zidane.jpg"]
    assert (clone / "out" / "agent" / "results.jsonl").is_file()  # examples/agent.toml's sink


@pytest.mark.parametrize("index", range(len(python_blocks(service=False))))
def test_python_block_runs(clone, index):
    _run_python(clone, python_blocks(service=False)[index])


@pytest.fixture(scope="module")
def triton_for_readme(tmp_path_factory, default_model_path, fall_model_path):
    """A real Triton server serving each model the README's OIP blocks name, under that name."""
    sys.path.insert(0, str(REPO / "tests" / "triton"))
    from triton_server import TritonServer, find_triton
    from yolo_edge.triton.export import export_triton

    try:
        find_triton()
    except Exception as exc:  # noqa: BLE001 -- the reason is the skip message
        pytest.skip(f"no Triton server here ({exc}); `make triton` installs it")
    names = sorted(set(re.findall(rf"oip\+http://{TRITON}/v2/models/([\w.-]+)", README)))
    repo = tmp_path_factory.mktemp("readme_triton")
    for name in names:
        export_triton(name, repo, name=name, platform="python")
    with TritonServer(repo, models=names, workdir=tmp_path_factory.mktemp("triton_work")) as server:
        yield server


@pytest.mark.slow
def test_oip_blocks_run_against_a_real_triton(clone, triton_for_readme):
    address = triton_for_readme.base.split("://", 1)[1]
    assert python_blocks(service=False, triton=True), "the README should show the OIP client"
    for code in python_blocks(service=False, triton=True):
        _run_python(clone, code.replace(TRITON, address))


@pytest.mark.slow
def test_service_blocks_and_commands_run(clone, local_service):
    for code in python_blocks(service=True):
        _run_python(clone, code, local_service.url)
    lines = [c.line for c in commands() if c.needs_service and not c.parse_only()]
    assert any(line.startswith("edge-agent run --source out/sample_clip.avi --cloud") for line in lines)
    for line in lines:
        _run_line(clone, line, local_service.url)
    assert (clone / "out" / "results.jsonl").read_text().count("\n") == 30  # every frame of the clip accounted for
    for block in blocks("bash"):  # the curl lines of the "Serve locally" block
        for line in block.splitlines():
            if line.startswith("curl ") and SERVICE in line:
                assert _run_line(clone, line, local_service.url).stdout.startswith(("[", "{"))
