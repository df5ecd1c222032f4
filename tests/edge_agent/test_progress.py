"""Long agent commands show progress on stderr, also with ``--json`` (which owns stdout only),
and the bar never shares a line with a result or an error."""

from __future__ import annotations

import json

import pytest

from edge_agent.cli import main
from edge_agent.progress import along, say


def test_simulate_json_keeps_its_bar_on_stderr(capsys):
    assert main(["simulate", "--scenario", "steady", "--duration", "12", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)  # stdout is the JSON and nothing else
    assert {r["trace"] for r in rows} == {"steady"} and len(rows) >= 2
    assert "simulate: 100%" in err and f"{len(rows)}/{len(rows)}" in err
    assert main(["simulate", "--scenario", "steady", "--duration", "12", "--json", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_an_error_is_on_a_line_of_its_own_after_the_bar(capsys):
    assert main(["simulate", "--scenario", "steady", "--duration", "5"]) == 2  # shorter than its warm-up
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "edge-agent: error:" in line]
    assert errors and all(line.startswith("edge-agent: error: trace 'steady'") for line in errors), err


def test_simulate_help_names_the_scenarios(capsys):
    from edge_agent.sim.traces import SCENARIOS

    with pytest.raises(SystemExit) as done:
        main(["simulate", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and all(name in flat for name in SCENARIOS)


def test_lines_said_during_a_bar_are_lines_of_their_own(capsys):
    items = along(iter(range(5)), 5, "work", status=lambda: "so far so good")
    for i in items:
        if i == 2:
            say("something happened")
    err = capsys.readouterr().err
    # tqdm.write clears the bar's line, prints the message with its newline, then redraws the bar
    [line] = [x for x in err.replace("\r", "\n").splitlines() if "something happened" in x]
    assert line == "something happened"
