"""Metric names referred to by a PromQL expression, and metric names a scrape exposes.

A small PromQL lexer rather than a regex over identifiers: label names (in ``{...}``,
``by (...)``, ``on (...)``), functions and aggregations, keywords, strings, durations and
Grafana's ``$variables`` are not metric names; ``{__name__="x"}`` is.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric_names", "scraped_names", "grafana_to_promql"]

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}
#: keywords followed by a parenthesised list of label names
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?)([smhdwy]|ms)?")
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(["'`])([A-Za-z_:][A-Za-z0-9_:]*)\1""")


def _skip_string(s: str, i: int) -> int:
    quote, i = s[i], i + 1
    while i < len(s) and s[i] != quote:
        i += 2 if s[i] == "\\" and quote != "`" else 1
    if i >= len(s):
        raise ValueError(f"unterminated string in {s!r}")
    return i + 1


def _skip_group(s: str, i: int, open_: str, close: str) -> tuple[int, str]:
    """From ``s[i] == open_`` to just past its matching ``close``; also the text inside."""
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c in "\"'`":
            j = _skip_string(s, j)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j + 1, s[i + 1:j]
        j += 1
    raise ValueError(f"unbalanced {open_!r} in {s!r}")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects.

    >>> sorted(metric_names('sum by (le, route) (rate(a_bucket{job="x", b=~"y"}[$__rate_interval])) / on(job) b'))
    ['a_bucket', 'b']
    >>> sorted(metric_names('max by (instance) (s{state="ready"} * 4 or s{state="cold"}) > bool 1 offset 5m'))
    ['s']
    """
    names: set[str] = set()
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "#":  # a comment runs to the end of the line
            end = expr.find("\n", i)
            i = n if end < 0 else end
        elif c == "{":
            i, inside = _skip_group(expr, i, "{", "}")
            names.update(m.group(2) for m in _NAME_MATCHER.finditer(inside))
        elif c == "[":  # range or subquery: durations and Grafana variables only
            i, _ = _skip_group(expr, i, "[", "]")
        elif c == "$":  # Grafana variable: $name or ${name}
            i += 1
            if i < n and expr[i] == "{":
                i, _ = _skip_group(expr, i, "{", "}")
            else:
                m = _IDENT.match(expr, i)
                i = m.end() if m else i
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = _NUMBER.match(expr, i)
            i = m.end() if m and m.end() > i else i + 1
        elif c.isalpha() or c in "_:":
            m = _IDENT.match(expr, i)
            word, i = m.group(0), m.end()
            j = i
            while j < n and expr[j].isspace():
                j += 1
            follows = expr[j] if j < n else ""
            low = word.lower()
            if low in LABEL_LISTS:
                if follows == "(":
                    i, _ = _skip_group(expr, j, "(", ")")
            elif low in KEYWORDS or low in AGGREGATIONS or follows == "(":
                continue  # a keyword, an aggregation or a function call
            else:
                names.add(word)
        else:
            i += 1
    return names


def grafana_to_promql(expr: str, *, rate_interval: str = "5m") -> str:
    """A Grafana panel's expression as plain PromQL (its variables replaced), for promtool."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = re.sub(r"\$\{?(instance|endpoint)\}?", ".*", expr)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def scraped_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers, by its families' types.

    A family that has no sample yet (a labelled counter never incremented) still names
    its series: ``edge_agent_dropped_frames`` of type counter gives ``..._total``.
    """
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
                "info": ("_info",), "stateset": ("",), "gauge": ("",), "unknown": ("",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
