"""``edge-agent``: run the agent on a device, simulate the policy, or run the hybrid demo.

    edge-agent run --source clip.avi --cloud http://127.0.0.1:3000 --latency-budget-ms 500 \\
                   --queue-budget 8 --sink jsonl:out/results.jsonl --metrics-port 9100
    edge-agent run --config agent.toml
    edge-agent simulate --scenario all
    edge-agent simulate --scenario steady --devices 200
    edge-agent demo --out out
    edge-agent replay-spool 'webhook:https://hooks.example.com/detections'

Exit codes of ``run`` and ``replay-spool``: 0 every result reached every sink; 3 some results
wait in a webhook spool (the next run with that sink, or ``replay-spool``, delivers them);
4 some results were lost or refused by a receiver (see the log and the summary); 5 (``run``)
every result was delivered, but no cloud endpoint could be reached during the whole run;
2 bad settings or input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from yolo_edge.cli import BarSafeHandler, print_error
from yolo_edge.errors import YoloEdgeError

from .baseline import RunRecorder
from .cloudcall import CloudWithOptions
from .config import AgentConfig, load_config
from .core.delivery import Delivery
from .core.frames import Outcome
from .progress import along, bar, follow_sinks, say
from .reach import ReachWatch
from .summary import exit_code, summarize

__all__ = ["main", "build_agent", "build_parser", "CloudWithOptions"]

logger = logging.getLogger(__name__)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML or YAML file with agent settings (flags override it)")
    p.add_argument("--source", help="video file, image folder, rtsp/http URL, camera index or GStreamer pipeline")
    p.add_argument("--model", help="registry name or .onnx path (default: the default model)")
    p.add_argument("--backend", help="auto | onnxruntime | tensorrt | ...")
    p.add_argument("--cloud", action="append", help="cloud endpoint to offload to: a yolo-edge service URL or "
                   "oip+http(s)://HOST:PORT/v2/models/NAME (Triton, KServe); repeat for a pool (omit: local only)")
    p.add_argument("--token", help="service token (default: $EDGE_AGENT_TOKEN or $YOLO_EDGE_TOKEN)")
    p.add_argument("--latency-budget-ms", type=float, dest="latency_budget_ms")
    p.add_argument("--queue-budget", type=int, dest="queue_budget")
    p.add_argument("--mode", choices=["hybrid", "local", "cloud"])
    p.add_argument("--local-threads", type=int, dest="local_threads", help="inference threads of the local backend")
    p.add_argument("--max-inflight", type=int, dest="max_inflight")
    p.add_argument("--max-batch", type=int, dest="max_batch", help="frames per cloud request")
    p.add_argument("--upload-ladder", dest="upload_ladder", help="upload encodings, best first, the last the floor "
                   "(default png,jpeg95,jpeg90,jpeg80,jpeg70): each frame goes in the best one its deadline allows "
                   "over the uplink as measured")
    p.add_argument("--uplink-mbps", type=float, dest="uplink_mbps",
                   help="the uplink's goodput assumed until the first upload is measured (default 10)")
    p.add_argument("--no-hedge", action="store_false", default=None, dest="hedge",
                   help="never run a late cloud frame locally as well")
    p.add_argument("--sink", action="append", dest="sinks",
                   help="stdout | jsonl[,overwrite]:PATH (appends) | webhook[,spool=PATH,...]:URL | annotated:DIR "
                        "(repeatable)")
    p.add_argument("--spool-dir", dest="spool_dir", help="where webhook sinks keep what they could not deliver yet "
                   "(default: $EDGE_AGENT_SPOOL_DIR or ~/.local/state/edge-agent/spool)")
    p.add_argument("--annotate-dir", dest="annotate_dir", help="write annotated frames here")
    p.add_argument("--fps", type=float, help="replay pace of a file or folder (default: native)")
    p.add_argument("--as-fast-as-possible", action="store_true", help="do not pace files like a camera")
    p.add_argument("--loop", action="store_true", default=None)
    p.add_argument("--max-frames", type=int, dest="max_frames")
    p.add_argument("--metrics-port", type=int, dest="metrics_port", help="serve /metrics and /healthz here")
    p.add_argument("--allow-model-mismatch", action="store_true", default=None, dest="allow_model_mismatch")
    p.add_argument("--classes", help="keep only these classes, by name or id, on both routes: person,bus or 0,5")
    p.add_argument("--summary-json", help="also write the summary as JSON here")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    base = load_config(args.config) if args.config else AgentConfig()
    changes = {k: getattr(args, k, None) for k in (
        "source", "model", "backend", "cloud", "token", "latency_budget_ms", "queue_budget", "mode", "local_threads",
        "max_inflight", "max_batch", "annotate_dir", "fps", "loop", "max_frames", "metrics_port",
        "allow_model_mismatch", "classes", "spool_dir", "upload_ladder", "uplink_mbps", "hedge")}
    if args.sinks:
        changes["sinks"] = tuple(args.sinks)
    if args.as_fast_as_possible:
        changes["realtime"] = False
    cfg = base.replace(**changes)
    if not cfg.token and cfg.cloud:  # environment read at the entry point only
        cfg = cfg.replace(token=os.environ.get("EDGE_AGENT_TOKEN") or os.environ.get("YOLO_EDGE_TOKEN"))
    if not cfg.spool_dir:
        cfg = cfg.replace(spool_dir=str(default_spool_dir()))
    if not cfg.source:
        raise YoloEdgeError("no source: pass --source (a video file, folder, stream URL or camera index)")
    return cfg


def default_spool_dir() -> Path:
    """$EDGE_AGENT_SPOOL_DIR, else $XDG_STATE_HOME/edge-agent/spool, else ~/.local/state/edge-agent/spool."""
    if os.environ.get("EDGE_AGENT_SPOOL_DIR"):
        return Path(os.environ["EDGE_AGENT_SPOOL_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "edge-agent" / "spool"


def build_agent(cfg: AgentConfig, *, detector=None, recorder: RunRecorder | None = None,
                watch: ReachWatch | None = None):
    """The real Detector and CloudClient wired into an Agent (plus its sinks).

    Without ``detector`` the local Detector is built on a background thread (a TensorRT
    engine build can take minutes on a Jetson) while the agent already serves through the
    cloud; the model's sha256 for the cloud check comes from the registry at once.
    ``recorder`` notes each local inference's time (for the run's baseline); ``watch``
    hears what each cloud request and wake found (for loud, rate-limited reachability lines).
    """
    from yolo_edge import Detector
    from yolo_edge.backends.select import describe_backend
    from yolo_edge.models.resolve import resolve_model

    from .metrics import AgentMetrics
    from .runner import Agent
    from .sinks import AnnotatedSink, make_sink

    metrics = AgentMetrics()
    resolved = None if detector is not None else resolve_model(cfg.model)
    sha256 = detector.info.sha256 if detector is not None else resolved.sha256
    clouds = []
    if cfg.endpoints:
        from yolo_edge.remote.endpoint import open_endpoint

        classes = None
        if cfg.classes is not None:  # names to ids once, from the model file (the backend may still be building)
            info = detector.info if detector is not None else _model_info(resolved)
            classes = info.class_ids(cfg.classes, check_ids=True)
        local_model = resolved if resolved is not None else detector.info.path
        for index, ep in enumerate(cfg.endpoints):
            # no retries: the device core re-routes a failed frame itself, within the frame's budget
            options = dict(token=ep.token or cfg.token, timeout=cfg.timeout_s, max_retries=0, expected_sha256=sha256,
                           allow_model_mismatch=cfg.allow_model_mismatch)
            if ep.url.startswith("oip+"):
                options["model"] = local_model  # an OIP endpoint's answers are decoded with the local model
            else:
                options["jpeg_quality"] = cfg.cloud_jpeg_quality
            client = open_endpoint(ep.url, **options)
            clouds.append(CloudWithOptions(client, conf=cfg.conf, iou=cfg.iou, classes=classes, watch=watch,
                                           index=index))
    sinks = [make_sink(s, spool_dir=cfg.spool_dir) for s in cfg.sinks]
    if cfg.annotate_dir:
        sinks.append(AnnotatedSink(cfg.annotate_dir))

    def load() -> Detector:
        built = Detector(cfg.model, backend=cfg.backend, threads=cfg.local_threads, conf=cfg.conf, iou=cfg.iou,
                         classes=cfg.classes)
        metrics.set_backend(describe_backend(built.backend))
        if recorder is None:
            return built
        recorder.local_ready()
        return recorder.timed(built)

    if detector is not None:
        metrics.set_backend(describe_backend(detector.backend))
        local = detector if recorder is None else recorder.timed(detector)
        agent = Agent(cfg, detector=local, cloud=clouds, sinks=sinks, metrics=metrics)
    else:
        agent = Agent(cfg, load_detector=load, cloud=clouds, sinks=sinks, metrics=metrics)
    return agent, clouds


def _model_info(resolved):
    """A model's name, sha256 and class names from its file, without building a backend."""
    from yolo_edge.backends.onnx_info import read_onnx_info
    from yolo_edge.models.resolve import parse_metadata
    from yolo_edge.types import ModelInfo, as_names

    meta = parse_metadata(read_onnx_info(resolved.path).metadata)
    return ModelInfo(name=resolved.name, sha256=resolved.sha256, path=str(resolved.path),
                     names=as_names(meta["names"]) if "names" in meta else {}, imgsz=(0, 0))


def run(cfg: AgentConfig, *, summary_json: str | None = None, detector=None, out=None, progress: bool = False,
        recorder: RunRecorder | None = None) -> dict:
    """Run the agent on ``cfg.source``; print the summary (with its baseline) to ``out``; return it as a dict.

    ``progress``: a bar of the frames fed to the agent on stderr (the demo's; a ``stdout`` sink
    would share the terminal with it). ``recorder``: where the run's arrivals and local
    inference times are noted for the baseline (default: a fresh one).
    """
    from .metrics import MetricsServer
    from .sources import is_live, open_source

    out = out or sys.stdout

    recorder = recorder or RunRecorder()
    watch = None
    if cfg.endpoints:  # said at once on stderr, again while it lasts (rate-limited), and in the summary
        watch = ReachWatch([e.url for e in cfg.endpoints], [e.name for e in cfg.endpoints], say=_say)
    agent, clouds = build_agent(cfg, detector=detector, recorder=recorder, watch=watch)
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        logger.warning("signal %d: stopping; every frame in flight will be accounted for", signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    server = None
    try:
        if cfg.metrics_port is not None:
            server = MetricsServer(agent.metrics, agent.health, host=cfg.metrics_host, port=cfg.metrics_port).start()
        agent.start()
        if watch is not None:
            watch.start()
        if not clouds and not is_live(cfg.source):
            # a recorded file can wait for the local backend: with no cloud, every frame replayed
            # before it is ready would only be dropped (a live camera cannot wait: it is served at once)
            if not agent.wait_local_ready(stop) and agent.local_error:
                raise YoloEdgeError(f"the local detector failed to load ({agent.local_error}) and no cloud is "
                                    "configured: nothing can run the frames")
        frames = recorder.frames(open_source(cfg.source, fps=cfg.fps, realtime=cfg.realtime, loop=cfg.loop,
                                             max_frames=cfg.max_frames))
        if progress:
            frames = along(frames, _frame_count(cfg), "agent", status=lambda: _so_far(agent.stats))
        try:
            stats = agent.run(frames, stop=stop)
        finally:
            frames.close()  # a run stopped early closes its bar too, before the summary is printed
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if watch is not None:
            watch.stop()
        if server:
            server.close()
        for cloud in clouds:
            cloud.close()
    if not is_live(cfg.source):
        # local alone on a recording waits for its backend (as `run` does without a cloud): ready from the start
        recorder.recording.local_ready_at = None
    summary, lines = summarize(stats, cfg, recorder, watch)
    print("\n".join([stats.render(), *lines]), file=out)
    if summary_json:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def _frame_count(cfg: AgentConfig) -> int | None:
    """How many frames a recorded source will give (None: a live or looping one)."""
    from yolo_edge.inputs import count_frames

    from .sources import is_live

    if is_live(cfg.source) or cfg.loop or not Path(cfg.source).is_file():
        return cfg.max_frames
    n = count_frames([Path(cfg.source)])
    return n if cfg.max_frames is None else min(n, cfg.max_frames)


def _so_far(stats) -> str:
    """The run so far, beside its progress bar (read without the agent's lock: a display only)."""
    frames = stats.frames
    return f"{stats.within_budget}/{frames} in budget, {stats.outcomes[Outcome.CLOUD]} by the cloud" if frames else ""


def _say(line: str) -> None:
    say(f"edge-agent: {line}")  # above a running progress bar, if any


def replay_cmd(args: argparse.Namespace, out=None) -> Delivery:
    """Deliver what webhook sinks left in their spools; the verdict is the exit code."""
    from .sinks import SinkSpec, close_sinks, open_webhook

    out = out or sys.stdout
    specs, spool_dir = list(args.sinks), args.spool_dir
    if args.config:
        cfg = load_config(args.config)
        specs = specs or [s for s in cfg.sinks if SinkSpec.parse(s).kind == "webhook"]
        spool_dir = spool_dir or cfg.spool_dir
    if not specs:
        raise YoloEdgeError("nothing to replay: name a webhook sink as given to --sink (webhook[,spool=PATH]:URL), "
                            "or --config with one")
    sinks = []
    try:  # each opens (and locks) its spool and starts delivering at once
        for spec in specs:
            sinks.append(open_webhook(SinkSpec.parse(spec), spool_dir=spool_dir or default_spool_dir(),
                                      drain_s=args.drain_s))
    finally:
        with follow_sinks(sinks, enabled=not args.no_progress):  # a bar on stderr while they drain
            reports = close_sinks(sinks)
    for r in reports:
        print(r.render() if r.delivered or r.spooled or r.rejected or r.lost else f"  sink {r.name}: nothing waiting",
              file=out)
    return Delivery.of(reports)


def simulate_cmd(args: argparse.Namespace, out=None) -> list[dict]:
    from dataclasses import replace

    from .sim.oracle import oracle_bound
    from .sim import STRATEGIES, simulate_fleet
    from .sim.traces import SCENARIOS, sample, scenario

    out = out or sys.stdout
    names = sorted(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rows = []
    # closed before the results (or an error) are printed: the bar and a result never share a line
    with bar(len(names) * args.seeds * len(STRATEGIES), "simulate", unit="run", enabled=not args.no_progress) as runs:
        for name in names:
            trace = scenario(name)
            if args.duration:
                trace = replace(trace, duration_s=args.duration)
            if args.devices > 1:  # one autoscaled service for the fleet: replicas start as load shows up
                trace = replace(trace, autoscale=True, max_replicas=args.max_replicas, cloud_service_s=0.01,
                                cloud_slots=4, max_batch=4, cloud_cold_start_s=max(trace.cloud_cold_start_s, 10.0))
            for seed in range(args.seeds):
                seeded = replace(trace, seed=trace.seed + seed)
                bound = oracle_bound(sample(seeded)).within_share if args.devices == 1 else None
                for strategy in STRATEGIES:
                    runs.set_postfix_str(f"{name} seed {seeded.seed} {strategy}", refresh=False)
                    row = simulate_fleet(seeded, strategy=strategy, devices=args.devices).row()
                    row.update(seed=seeded.seed, oracle=None if bound is None else round(bound, 4),
                               of_oracle=None if not bound else round(row["within_budget"] / bound, 4))
                    rows.append(row)
                    runs.update()
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
    else:
        print(f"{'trace':<14} {'seed':>4} {'strategy':<10} {'in budget':>9} {'oracle':>7} {'of oracle':>9} "
              f"{'fps/dev':>8} {'offload':>8} {'late':>6} {'dropped':>8} {'local p99':>10} {'cloud p99':>10}", file=out)
        for r in rows:
            oracle = "-" if r["oracle"] is None else f"{r['oracle']:.2%}"
            share = "-" if r["of_oracle"] is None else f"{r['of_oracle']:.2%}"
            print(f"{r['trace']:<14} {r['seed']:>4} {r['strategy']:<10} {r['within_budget']:>9.2%} {oracle:>7} "
                  f"{share:>9} {r['throughput_fps']:>8.2f} {r['offload_ratio']:>8.1%} {r['late']:>6} {r['dropped']:>8} "
                  f"{str(r['local_p99_ms']):>10} {str(r['cloud_p99_ms']):>10}", file=out)
    return rows


def demo_cmd(args: argparse.Namespace, out=None) -> dict:
    from yolo_edge import Detector

    from .cloudserve import LocalService
    from dataclasses import replace

    from .baseline import replay_local_only
    from .demo import make_clip, measure_local_fps, photos, result_lines
    from yolo_edge.image import load_image

    out = out or sys.stdout
    out_dir = Path(args.out)
    # the device and its cloud stand-in share this machine: with two cores or more, the local
    # worker gets core 0 and the stand-in core 1, as a device and a GPU server would not compete
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    local_cpus, cloud_cpus = ((cores[0],), {cores[1]}) if len(cores) >= 2 else (None, None)
    detector = Detector(None, threads=1)
    local_fps = measure_local_fps(detector, load_image(photos()[0]))
    fps = 2.0 * local_fps
    clip = make_clip(out_dir / "sample_clip.avi", frames=int(fps * args.seconds), fps=fps)
    print(f"local capacity {local_fps:.1f} fps (1 thread); clip {clip} at {fps:.1f} fps for {args.seconds:.0f} s; "
          "starting the cloud stand-in (bentoml serve on 127.0.0.1) ...", file=out)
    if local_cpus:
        print(f"local worker pinned to core {local_cpus[0]}, cloud stand-in to core {min(cloud_cpus)}", file=out)
    started = time.monotonic()
    with LocalService(threads=1, log_dir=out_dir, cpus=cloud_cpus) as svc:
        print(f"cloud stand-in ready at {svc.url} after {time.monotonic() - started:.1f} s; running the agent on "
              f"{clip.name} (a bar on stderr) ...", file=out, flush=True)
        cfg = AgentConfig(source=str(clip), cloud=svc.url, latency_budget_ms=args.latency_budget_ms,
                          queue_budget=args.queue_budget, local_threads=1, max_inflight=4, local_cpus=local_cpus,
                          sinks=(f"jsonl,overwrite:{out_dir / 'agent_results.jsonl'}",),
                          annotate_dir=str(out_dir / "agent_frames"))
        recorder = RunRecorder()
        summary = run(cfg, summary_json=str(out_dir / "agent_summary.json"), detector=detector, out=out,
                      progress=not args.no_progress, recorder=recorder)
    if recorder.recording.service_s and "within_budget_share" in summary["baseline"]:
        # the same replay at the speed measured before the run, when the local worker had the CPU to itself
        at_capacity = replay_local_only(replace(recorder.recording, service_s=[1.0 / local_fps],
                                                arrivals=recorder.recording.arrivals[:summary["frames"]]), cfg.core())
        summary["baseline"]["at_measured_capacity"] = {
            "local_service_ms": round(1000.0 / local_fps, 1), "within_budget": at_capacity.within_budget,
            "within_budget_share": round(at_capacity.within_share, 4)}
        Path(out_dir / "agent_summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(result_lines(summary, fps=fps, local_fps=local_fps)), file=out)
    return summary


def build_parser() -> argparse.ArgumentParser:
    from yolo_edge.cli import version_line

    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=version_line("edge-agent"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    _run_args(sub.add_parser("run", help="run the agent on a source"))
    sp = sub.add_parser("simulate", help="compare local-only, cloud-only, threshold and our policy over traces")
    from .sim.traces import SCENARIOS

    sp.add_argument("--scenario", default="all", choices=["all", *sorted(SCENARIOS)], metavar="SCENARIO",
                    help=f"one of {', '.join(sorted(SCENARIOS))}, or 'all' (default)")
    sp.add_argument("--devices", type=int, default=1, help="simulate a fleet sharing one autoscaled service")
    sp.add_argument("--max-replicas", type=int, default=6, dest="max_replicas")
    sp.add_argument("--duration", type=float)
    sp.add_argument("--seeds", type=int, default=1, help="run each scenario with this many seeds")
    sp.add_argument("--json", action="store_true", help="print the rows as JSON (the progress bar stays on stderr)")
    sp.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar on stderr")
    dp = sub.add_parser("demo", help="hybrid demo: local service as the cloud, clip at 2x local capacity")
    dp.add_argument("--out", default="out")
    dp.add_argument("--seconds", type=float, default=20.0)
    dp.add_argument("--latency-budget-ms", type=float, default=500.0, dest="latency_budget_ms")
    dp.add_argument("--queue-budget", type=int, default=8, dest="queue_budget")
    dp.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar on stderr")
    rp = sub.add_parser("replay-spool", help="deliver what webhook sinks could not deliver yet (their spools)")
    rp.add_argument("sinks", nargs="*", metavar="SINK", help="webhook sinks as given to --sink "
                    "(webhook:URL or webhook,spool=PATH:URL); default: those in --config")
    rp.add_argument("--config", help="the agent's TOML or YAML file: replay its webhook sinks")
    rp.add_argument("--spool-dir", dest="spool_dir", help="as given to run (default: $EDGE_AGENT_SPOOL_DIR or "
                    "~/.local/state/edge-agent/spool)")
    rp.add_argument("--drain-s", type=float, default=60.0, dest="drain_s",
                    help="give up (leaving the rest spooled) after this many seconds (default 60)")
    rp.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = BarSafeHandler()  # log lines above a running progress bar, never inside its line
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    if args.cmd == "simulate" and not args.verbose:  # thousands of simulated devices' endpoint warnings say nothing
        logging.getLogger("edge_agent").setLevel(logging.ERROR)
    try:
        if args.cmd == "run":
            summary = run(config_from_args(args), summary_json=args.summary_json)
            delivery, code = Delivery(summary["delivery"]), exit_code(summary)
            if delivery is not Delivery.COMPLETE:
                print(f"edge-agent: not every result was delivered ({delivery.value}): see the sink lines above; "
                      f"exit {code}", file=sys.stderr)
            elif code:
                names = ", ".join(e["endpoint"] for e in summary["cloud_unreachable"])
                print(f"edge-agent: the cloud ({names}) could not be reached during the whole run: every frame ran "
                      f"locally or was dropped (see the summary); exit {code}", file=sys.stderr)
            return code
        elif args.cmd == "replay-spool":
            return replay_cmd(args).exit_code
        elif args.cmd == "simulate":
            simulate_cmd(args)
        else:
            demo_cmd(args)
    except (YoloEdgeError, ValueError) as exc:
        print_error("edge-agent: error", exc, verbose=args.verbose)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
