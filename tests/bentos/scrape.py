"""A service's /metrics, parsed by prometheus_client, for the tests that read counters."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def metrics(url: str) -> dict[str, dict[tuple, float]]:
    """/metrics parsed by prometheus_client: {sample name: {labels: value}}."""
    out: dict[str, dict[tuple, float]] = {}
    text = requests.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(m: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in m.get(name, {}).items() if want <= set(k))
