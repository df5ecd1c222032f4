"""A run's summary as ``edge-agent run`` prints and writes it: the agent's own figures, the
baseline (local alone on the same frames, :mod:`edge_agent.baseline`), any cloud endpoint that
could not be reached (:mod:`edge_agent.reach`), and the exit code they make.
"""

from __future__ import annotations

from yolo_edge.errors import YoloEdgeError

from .baseline import METHOD, RunRecorder, baseline_of
from .config import AgentConfig
from .core.delivery import Delivery
from .reach import ReachWatch

__all__ = ["summarize", "exit_code"]


def summarize(stats, cfg: AgentConfig, recorder: RunRecorder, watch: ReachWatch | None) -> tuple[dict, list[str]]:
    """The run's summary (JSON-ready) with its baseline and any unreachable cloud, and the lines to print for them."""
    summary = stats.as_dict()
    lines: list[str] = []
    if not cfg.endpoints:
        summary["baseline"] = {"method": "this run used no cloud: it is local alone", "frames": stats.frames,
                               "within_budget": stats.within_budget,
                               "within_budget_share": summary["within_budget_share"], "gain_frames": 0,
                               "gain_points": 0.0}
        lines.append("  local alone: this run (no cloud configured)")
    else:
        try:
            base = baseline_of(recorder.recording, cfg.core(), stats)
        except YoloEdgeError as exc:  # e.g. --mode cloud: the local worker never ran, nothing to replay
            summary["baseline"] = {"method": METHOD, "unavailable": str(exc)}
            lines.append(f"  local alone: not known ({exc})")
        else:
            summary["baseline"] = base.as_dict()
            lines += base.render(stats.within_budget)
    summary["cloud_unreachable"] = watch.state.summary(at=watch.clock()) if watch is not None else []
    summary["cloud_never_reached"] = watch is not None and watch.state.never_reached()
    if watch is not None:
        lines += watch.state.render(at=watch.clock())
    return summary, lines


def exit_code(summary: dict) -> int:
    """0 all delivered; 3 some spooled; 4 some lost; 5 all delivered, but no cloud endpoint was ever reached."""
    delivery = Delivery(summary["delivery"])
    if delivery is not Delivery.COMPLETE:
        return delivery.exit_code
    return 5 if summary.get("cloud_never_reached") else 0
