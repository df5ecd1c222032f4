"""Sinks lose nothing silently: JSON Lines appends and writes through; the webhook retries, spools
what it cannot deliver and replays it; every result is counted (report, /metrics, summary, exit code).

Receivers are real HTTP servers on 127.0.0.1 (free ports). Nothing here asserts a duration:
where time matters the tests only check a lower bound (a Retry-After honoured) or wait
generously for an outcome.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.cli import main
from edge_agent.cloudserve import free_port
from edge_agent.config import AgentConfig
from edge_agent.core.delivery import Delivery
from edge_agent.metrics import AgentMetrics
from edge_agent.core.frames import FrameResult
from edge_agent.runner import Agent
from edge_agent.sinks import JsonlSink, SinkSpec, WebhookOptions, WebhookSink, make_sink
from edge_agent.spool import Spool, read_pending
from yolo_edge import Detections
from yolo_edge.errors import ConfigError

from agent_fakes import SlowDetector
from webhook_receiver import Receiver, wait_for


def result(seq: int) -> FrameResult:
    dets = Detections([[1, 2, 3, 4]], [0.5], [0], {0: "person"})
    return FrameResult(seq=seq, outcome="local", route="local", captured_at=1.0, deadline=1.5, released_at=1.1,
                       detections=dets)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def webhook(url: str, spool, **options) -> WebhookSink:
    return WebhookSink(url, WebhookOptions(spool=str(spool), **options))


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there: connection refused


# -- JSON Lines ----------------------------------------------------------------------------
def test_jsonl_appends_writes_through_and_overwrites_only_when_asked(tmp_path):
    path = tmp_path / "out" / "results.jsonl"
    first = JsonlSink(path)
    for seq in range(3):
        first.emit(result(seq))
    assert [x["seq"] for x in lines(path)] == [0, 1, 2]  # on disk before close: a SIGKILL would keep them
    assert first.close().delivered == 3
    with path.open("a") as f:  # an earlier run cut off mid-line (power loss)
        f.write('{"seq": 99, "outco')
    second = make_sink(f"jsonl:{path}")
    second.emit(result(0))
    second.emit(result(1))
    report = second.close()
    assert (report.received, report.delivered, report.lost, report.delivery) == (2, 2, 0, Delivery.COMPLETE)
    raw = path.read_text().splitlines()
    assert len(raw) == 6 and raw[3] == '{"seq": 99, "outco'  # kept, on a line of its own
    assert [json.loads(x)["seq"] for x in raw[:3] + raw[4:]] == [0, 1, 2, 0, 1]
    fresh = make_sink(f"jsonl,overwrite:{path}")
    fresh.emit(result(5))
    fresh.close()
    assert [x["seq"] for x in lines(path)] == [5]


def test_jsonl_write_errors_are_counted_as_lost(tmp_path, caplog):
    sink = JsonlSink(tmp_path / "r.jsonl")
    sink.close()
    with caplog.at_level(logging.ERROR, logger="edge_agent.sinks"):
        sink.emit(result(0))  # after close: nowhere to write
    report = sink.report()
    assert (report.received, report.lost, report.delivery) == (1, 1, Delivery.FAILED)
    assert "LOST" in caplog.text


def test_results_json_cannot_hold_are_counted_lost_and_annotated_skips_dropped_frames(tmp_path):
    odd = FrameResult(seq=1, outcome="local", route="local", meta={"when": object()})
    jsonl, hook = JsonlSink(tmp_path / "r.jsonl"), webhook(down_url(), tmp_path / "hook.jsonl", drain_s=0)
    for sink in (jsonl, hook):
        sink.emit(result(0))
        sink.emit(odd)
    assert jsonl.close().lost == 1 and [x["seq"] for x in lines(tmp_path / "r.jsonl")] == [0]
    hooked = hook.close()
    assert (hooked.lost, hooked.spooled, hooked.delivery) == (1, 1, Delivery.FAILED)
    annotated = make_sink(f"annotated:{tmp_path / 'frames'}")
    answered = result(2)
    answered.image = np.zeros((48, 64, 3), np.uint8)
    annotated.emit(answered)
    annotated.emit(FrameResult(seq=3, outcome="dropped", reason="expired"))
    report = annotated.close()
    assert (report.delivered, report.skipped, report.delivery) == (1, 1, Delivery.COMPLETE)
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["000002.jpg"]


def test_sink_specs_are_parsed_into_typed_options(tmp_path):
    spec = SinkSpec.parse("webhook,spool=/tmp/h.jsonl,timeout_s=2.5,drain_s=0:http://127.0.0.1:9/in")
    opts = spec.typed(WebhookOptions)
    assert (opts.spool, opts.timeout_s, opts.drain_s, opts.backoff_s) == ("/tmp/h.jsonl", 2.5, 0.0, 0.5)
    with pytest.raises(ConfigError, match="unknown webhook sink option 'timeout'.*timeout_s"):
        make_sink("webhook,timeout=3:http://127.0.0.1:9/in", spool_dir=tmp_path)
    with pytest.raises(ConfigError, match="timeout_s takes a number"):
        make_sink("webhook,timeout_s=soon:http://127.0.0.1:9/in", spool_dir=tmp_path)
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        make_sink("webhook,timeout_s=0:http://127.0.0.1:9/in", spool_dir=tmp_path)
    with pytest.raises(ConfigError, match="overwrite takes true or false"):
        make_sink(f"jsonl,overwrite=maybe:{tmp_path}/r.jsonl")
    with pytest.raises(ConfigError, match="needs a spool"):
        make_sink("webhook:http://127.0.0.1:9/in")
    with pytest.raises(ConfigError, match="bad sink"):
        make_sink("annotated,fast:dir")
    sink = make_sink("webhook:https://user:secret@127.0.0.1:9/in?token=abc", spool_dir=tmp_path / "spools")
    try:
        assert sink.name == "webhook:https://127.0.0.1:9/in"  # no credentials in logs or metrics labels
        assert sink.report().spool.startswith(str(tmp_path / "spools" / "webhook-127.0.0.1-9-"))
    finally:
        sink.close()


# -- the webhook sink --------------------------------------------------------------------
@pytest.mark.integration  # a slow real receiver, seconds of real time
def test_slow_receiver_everything_delivered_or_spooled_then_replayed_first_by_the_next_run(tmp_path):
    spool = tmp_path / "hook.jsonl"
    with Receiver(delay_s=0.2) as rx:
        sink = webhook(rx.url, spool, drain_s=1.0, timeout_s=60)
        for seq in range(189):
            sink.emit(result(seq))
        first = sink.close()
        # 189 POSTs at 0.2 s each cannot fit in the drain time: the rest is spooled, not dropped
        assert first.received == 189 and first.spooled > 0 and first.lost == first.rejected == 0
        assert first.delivered + first.spooled == 189 and first.delivery is Delivery.SPOOLED
        assert rx.seqs == list(range(first.delivered))
        assert [r["result"]["seq"] for r in read_pending(spool)] == list(range(first.delivered, 189))

        rx.delay_s = 0.0  # the receiver keeps up now; the next run delivers the backlog first
        sink = webhook(rx.url, spool, drain_s=120)
        for seq in range(11):
            sink.emit(result(seq))
        second = sink.close()
    assert (second.received, second.delivered, second.replayed, second.spooled) == (11, 11 + first.spooled,
                                                                                    first.spooled, 0)
    assert second.delivery is Delivery.COMPLETE
    assert rx.seqs == list(range(189)) + list(range(11))  # each once, the older run first
    assert len(set(rx.keys)) == 200 and not spool.exists()


def test_receiver_down_everything_spooled_then_replay_spool_delivers_it(tmp_path, caplog, capsys):
    url, spool = down_url(), tmp_path / "hook.jsonl"
    with caplog.at_level(logging.WARNING, logger="edge_agent.webhook"):
        sink = webhook(url, spool, backoff_s=0.05, max_backoff_s=0.2, drain_s=0.5)
        for seq in range(189):
            sink.emit(result(seq))
        wait_for(lambda: sink.report().retries >= 1, what="a failed delivery")
        report = sink.close()
    assert (report.received, report.delivered, report.spooled, report.lost) == (189, 0, 189, 0)
    assert report.retries >= 1 and report.delivery is Delivery.SPOOLED
    assert [r["result"]["seq"] for r in read_pending(spool)] == list(range(189))
    assert "delivery failed" in caplog.text and "replay-spool" in caplog.text and str(spool) in caplog.text

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with Receiver(port) as rx:  # the receiver comes back
        assert main(["replay-spool", f"webhook,spool={spool}:{url}"]) == 0
        assert rx.seqs == list(range(189)) and not spool.exists()
        out, err = capsys.readouterr()
        assert "delivered 189 (of them 189 from an earlier run)" in out
        assert "replay: 100%" in err and "189/189" in err  # its bar, on stderr, ending on all of them
        assert main(["replay-spool", f"webhook,spool={spool}:{url}"]) == 0  # nothing left: nothing sent
        assert "nothing waiting" in capsys.readouterr().out and len(rx.got) == 189


def test_a_spool_path_with_commas_colons_and_quotes_is_written_quoted(tmp_path, caplog, capsys):
    """`webhook,spool="...":URL`: a quoted value may hold commas and colons; a quote in it is doubled."""
    folder = tmp_path / 'cam 1,2:front "north"'
    spool = folder / "hook.jsonl"
    quoted = '"' + str(spool).replace('"', '""') + '"'
    url = down_url()
    spec = f"webhook,spool={quoted},drain_s=0.2,backoff_s=0.05:{url}"
    assert SinkSpec.parse(spec).options == (("spool", str(spool)), ("drain_s", "0.2"), ("backoff_s", "0.05"))
    assert SinkSpec.parse(spec).target == url
    with caplog.at_level(logging.WARNING, logger="edge_agent.webhook"):
        sink = make_sink(spec, spool_dir=tmp_path / "unused")
        sink.emit(result(0))
        report = sink.close()
    assert report.spool == str(spool) and report.spooled == 1 and spool.is_file()
    hint = caplog.text.split("replay-spool ", 1)[1].splitlines()[0]
    replay = shlex.split(hint)  # the command the warning suggests, as a shell would pass it
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with Receiver(port) as rx:
        assert main(["replay-spool", *replay]) == 0
    assert rx.seqs == [0] and not spool.exists()
    for bad in ('webhook,spool="/a,b:http://h/in', 'webhook,spool=/a"b":http://h/in', 'webhook,spool="a"b":http://h'):
        with pytest.raises(ConfigError, match="quote"):
            SinkSpec.parse(bad)


def test_blank_lines_in_a_spool_are_no_results(tmp_path, capsys):
    """An edited spool (blank lines, a trailing newline or two) replays with nothing rejected or lost: exit 0."""
    url, spool = down_url(), tmp_path / "hook.jsonl"
    sink = webhook(url, spool, drain_s=0.0)
    for seq in range(3):
        sink.emit(result(seq))
    assert sink.close().spooled == 3
    records = spool.read_text().splitlines()
    spool.write_text("\n" + records[0] + "\n\n   \n" + records[1] + "\n" + records[2] + "\n\n")
    reopened = Spool(spool)
    assert reopened.pending == 3
    reopened.close()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with Receiver(port) as rx:
        assert main(["replay-spool", f"webhook,spool={spool}:{url}"]) == 0
    out = capsys.readouterr().out
    assert rx.seqs == [0, 1, 2] and "rejected" not in out and not spool.exists()


def test_receiver_coming_back_mid_run_gets_everything_in_order(tmp_path):
    url, spool = down_url(), tmp_path / "hook.jsonl"
    sink = webhook(url, spool, backoff_s=0.05, max_backoff_s=0.2, drain_s=120)
    for seq in range(50):
        sink.emit(result(seq))
    wait_for(lambda: sink.report().retries >= 2, what="failed deliveries while the receiver is down")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with Receiver(port) as rx:
        for seq in range(50, 100):
            sink.emit(result(seq))
        report = sink.close()
    assert (report.delivered, report.spooled, report.lost) == (100, 0, 0) and report.retries >= 2
    assert rx.seqs == list(range(100)) and not spool.exists()


@pytest.mark.integration  # real Retry-After waits
def test_retry_after_is_honoured_and_refused_results_are_kept_apart(tmp_path):
    def answer(body, attempt):
        if body["seq"] == 0 and attempt == 1:
            return 429, {"Retry-After": "1"}
        if body["seq"] == 0 and attempt == 2:
            return 503, {"Retry-After": "1"}
        if body["seq"] == 2:
            return 400, {}
        return 204, {}

    spool = tmp_path / "hook.jsonl"
    with Receiver(answer=answer) as rx:
        sink = webhook(rx.url, spool, backoff_s=0.01, drain_s=120)
        for seq in range(4):
            sink.emit(result(seq))
        report = sink.close()
    assert (report.delivered, report.rejected, report.retries, report.spooled) == (3, 1, 2, 0)
    assert report.delivery is Delivery.FAILED and rx.seqs == [0, 1, 3]
    tries = [t for t, seq, _ in rx.hits if seq == 0]
    assert tries[1] - tries[0] >= 0.9 and tries[2] - tries[1] >= 0.9  # waited as told, not the 0.01 s backoff
    (refused,) = lines(tmp_path / "hook.rejected.jsonl")
    assert refused["result"]["seq"] == 2 and refused["status"] == 400 and report.rejected_file.endswith(
        "hook.rejected.jsonl")


def test_a_full_spool_loses_results_loudly_and_counts_them(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="edge_agent.webhook"):
        sink = webhook(down_url(), tmp_path / "hook.jsonl", max_spool_mb=0.002, drain_s=0)  # about 2 KB
        for seq in range(50):
            sink.emit(result(seq))
        report = sink.close()
    assert report.lost > 0 and report.spooled > 0 and report.spooled + report.lost == 50
    assert report.delivery is Delivery.FAILED and "LOST" in caplog.text


def test_one_spool_one_process(tmp_path):
    sink = webhook(down_url(), tmp_path / "hook.jsonl", drain_s=0)
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            webhook(down_url(), tmp_path / "hook.jsonl")
    finally:
        sink.close()


# -- the spool ---------------------------------------------------------------------------
def test_spool_resumes_after_a_sigkill_at_the_first_unacknowledged_record(tmp_path):
    path = tmp_path / "s.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from edge_agent.spool import Spool
        s = Spool({str(path)!r})
        for n in range(10):
            s.append({{"n": n}})
        for _ in range(4):
            s.ack(s.peek())
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert [r["n"] for r in read_pending(path)] == list(range(4, 10))
    spool = Spool(path)  # the dead process's lock went with it
    assert spool.pending == 6 and spool.peek().record == {"n": 4}
    assert spool.close() == 6


def test_spool_compaction_keeps_order_and_bounds_the_file(tmp_path, monkeypatch):
    import edge_agent.spool as spool_mod

    monkeypatch.setattr(spool_mod, "COMPACT_AT_BYTES", 256)
    path = tmp_path / "s.jsonl"
    spool = Spool(path)
    taken, n = [], 0
    for _ in range(40):
        for _ in range(3):
            assert spool.append({"n": n, "pad": "x" * 20})
            n += 1
        for _ in range(2):
            entry = spool.peek()
            taken.append(entry.record["n"])
            spool.ack(entry)
            spool.compact()
    assert taken == list(range(80)) and spool.pending == 40
    assert path.stat().st_size < 2 * 40 * 40  # the acknowledged prefix was dropped along the way
    assert spool.close() == 40
    assert [r["n"] for r in read_pending(path)] == list(range(80, 120))
    again = Spool(path)
    assert again.pending == 40 and again.peek().record["n"] == 80
    again.close()


def test_spool_rewrites_while_another_thread_appends(tmp_path, monkeypatch):
    import threading

    import edge_agent.spool as spool_mod

    monkeypatch.setattr(spool_mod, "COMPACT_AT_BYTES", 4096)
    rewrites = []
    real = Spool._rewrite_locked
    monkeypatch.setattr(Spool, "_rewrite_locked", lambda self: rewrites.append(1) or real(self))
    spool = Spool(tmp_path / "s.jsonl")
    for n in range(1000):  # a backlog: the prefix is large and then larger than what is left before any catch-up
        spool.append({"n": n})
    producer = threading.Thread(target=lambda: [spool.append({"n": n}) for n in range(1000, 5000)])
    producer.start()
    taken = []
    while len(taken) < 5000:
        entry = spool.peek()
        if entry is None:
            continue
        taken.append(entry.record["n"])
        spool.ack(entry)
        spool.compact()
    producer.join()
    assert taken == list(range(5000)) and spool.close() == 0 and rewrites


def test_spool_state_from_before_a_truncation_is_not_trusted(tmp_path):
    path = tmp_path / "s.jsonl"
    spool = Spool(path)
    for n in range(3):
        spool.append({"n": n})
    spool.ack(spool.peek())
    spool.close()
    state = path.with_name(path.name + ".state")
    cursor, inode = state.read_text().split()
    state.write_text(f"{10 ** 6} {inode}\n")  # points past the end: offer everything again rather than lose any
    assert [r["n"] for r in read_pending(path)] == [1, 2]
    again = Spool(path)
    assert again.pending == 2 and again.peek().record == {"n": 1}
    again.ack(again.peek())
    again.append({"n": 3})
    again.close()
    # a crash between swapping in a rewritten file and recording it: the state names the old inode
    state.write_text(f"{path.stat().st_size} {path.stat().st_ino}\n")
    tmp = path.with_name("rewritten")
    tmp.write_bytes(path.read_bytes())
    tmp.replace(path)
    assert [r["n"] for r in read_pending(path)] == [2, 3]
    again = Spool(path)
    assert again.pending == 2 and again.peek().record == {"n": 2}
    again.close()


# -- the agent: /metrics, summary, exit code ---------------------------------------------
def _samples(metrics: AgentMetrics) -> dict:
    out = {}
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            out[(s.name, s.labels.get("sink"))] = s.value
    return out


def test_agent_counts_sink_delivery_in_metrics_and_summary(tmp_path):
    url = down_url()
    hook = webhook(url, tmp_path / "hook.jsonl", backoff_s=0.05, max_backoff_s=0.2, drain_s=0.5)
    jsonl = JsonlSink(tmp_path / "r.jsonl")
    metrics = AgentMetrics()
    agent = Agent(AgentConfig(latency_budget_ms=2000), detector=SlowDetector(0.001), sinks=[jsonl, hook],
                  metrics=metrics)
    with agent:
        for _ in range(5):
            agent.submit(np.zeros((8, 8, 3), np.uint8))
    summary = agent.stats.as_dict()
    m = _samples(metrics)
    name = f"webhook:{url}"
    assert m[("edge_agent_sink_received_total", name)] == 5 and m[("edge_agent_sink_spooled", name)] == 5
    assert m[("edge_agent_sink_delivered_total", name)] == 0 and m[("edge_agent_sink_lost_total", name)] == 0
    assert m[("edge_agent_sink_delivered_total", jsonl.name)] == 5
    assert summary["delivery"] == "spooled" and Delivery(summary["delivery"]).exit_code == 3
    by_name = {s["name"]: s for s in summary["sinks"]}
    assert by_name[name]["spooled"] == 5 and by_name[jsonl.name]["delivered"] == 5
    assert "spooled 5" in agent.stats.render()


@pytest.mark.integration  # two CLI runs on real photos
def test_cli_exit_code_says_results_wait_and_the_next_run_delivers_them_first(tmp_path, capsys, sample_photos,
                                                                            default_model_path):
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for p in sample_photos:
        shutil.copy(p, src / p.name)
    url, spool = down_url(), tmp_path / "spools" / "hook.jsonl"
    def argv(drain_s):
        return ["run", "--source", str(src), "--fps", "5", "--max-frames", "4", "--loop", "--latency-budget-ms",
                "5000", "--sink", f"jsonl:{tmp_path / 'r.jsonl'}", "--sink",
                f"webhook,spool={spool},backoff_s=0.05,max_backoff_s=0.2,drain_s={drain_s}:{url}",
                "--summary-json", str(tmp_path / "s.json")]

    assert main(argv(drain_s=0.5)) == 3
    out, err = capsys.readouterr()
    summary = json.loads((tmp_path / "s.json").read_text())
    hook = next(s for s in summary["sinks"] if s["name"].startswith("webhook:"))
    assert summary["delivery"] == "spooled" and (hook["spooled"], hook["delivered"]) == (4, 0)
    assert "spooled 4" in out and "exit 3" in err

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with Receiver(port) as rx:
        assert main(argv(drain_s=120)) == 0  # close returns as soon as all is delivered
    summary = json.loads((tmp_path / "s.json").read_text())
    hook = next(s for s in summary["sinks"] if s["name"].startswith("webhook:"))
    assert (hook["delivered"], hook["replayed"], hook["spooled"]) == (8, 4, 0) and summary["delivery"] == "complete"
    assert rx.seqs == [0, 1, 2, 3, 0, 1, 2, 3] and len(set(rx.keys)) == 8  # the first run's first
    assert [x["seq"] for x in lines(tmp_path / "r.jsonl")] == [0, 1, 2, 3, 0, 1, 2, 3]  # appended


@pytest.mark.integration  # a subprocess killed mid-run
def test_sigkill_mid_run_every_counted_result_is_in_the_sink_or_the_spool(tmp_path, sample_photos,
                                                                          default_model_path, capsys):
    import shutil
    from pathlib import Path

    import requests

    src = tmp_path / "src"
    src.mkdir()
    for p in sample_photos:
        shutil.copy(p, src / p.name)
    out, spool, port = tmp_path / "r.jsonl", tmp_path / "hook.jsonl", free_port()
    with Receiver(delay_s=0.2) as rx:
        spec = f"webhook,spool={spool},timeout_s=60:{rx.url}"
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--source", str(src), "--loop", "--fps",
                                 "20", "--latency-budget-ms", "3000", "--sink", f"jsonl:{out}", "--sink", spec,
                                 "--metrics-port", str(port)],
                                cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(rx.got) >= 3 and out.exists() and len(out.read_text().splitlines()) >= 20
                     or proc.poll() is not None, what="the agent to deliver some results")
            assert proc.poll() is None, proc.stderr.read()
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            proc.kill()  # SIGKILL: no drain, no close, no summary
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        counted = 0
        scraped = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                counted += s.value if s.name == "edge_agent_frames_total" else 0
                scraped[(s.name, s.labels.get("sink"))] = s.value
        counted = int(counted)
        hook_name = f"webhook:{rx.url}"
        assert counted >= 10 and scraped[("edge_agent_sink_received_total", hook_name)] >= counted
        assert scraped[("edge_agent_sink_delivered_total", hook_name)] <= len(rx.got)

        written = [x["seq"] for x in lines(out)]
        assert written == list(range(len(written))) and len(written) >= counted  # every counted result is on disk
        pending = [r["result"]["seq"] for r in read_pending(spool)]
        assert pending == sorted(pending) and pending  # the slow receiver left a backlog, in order
        assert set(range(counted)) <= set(rx.seqs) | set(pending)  # in the receiver or in the spool

        rx.delay_s = 0.0
        assert main(["replay-spool", spec]) == 0
        assert "from an earlier run" in capsys.readouterr().out
    assert set(range(counted)) <= set(rx.seqs) and not spool.exists()
    assert len(rx.keys) - len(set(rx.keys)) <= 1  # at most the one POST under way at the kill, sent again
    assert rx.seqs == sorted(rx.seqs)  # in order, the spooled ones after what was delivered before the kill
