"""How a sink spec quotes an option value: ``KIND[,NAME=VALUE...][:TARGET]``.

Options end at the first colon outside double quotes and are separated by commas outside
them, so a value holding a comma or a colon (a spool path) is written in double quotes,
with a double quote inside it written twice, as in CSV:

>>> split_spec('webhook,spool="/data/cam 1,2/a:b.jsonl",timeout_s=2:http://127.0.0.1:9000/in')
(['webhook', 'spool="/data/cam 1,2/a:b.jsonl"', 'timeout_s=2'], 'http://127.0.0.1:9000/in')
>>> unquote("spec", '"/data/cam 1,2/a:b.jsonl"')
'/data/cam 1,2/a:b.jsonl'
>>> quote_value('/data/say "hi",2.jsonl')
'"/data/say ""hi"",2.jsonl"'
>>> quote_value("/var/spool/hook.jsonl")  # nothing to protect: as it is
'/var/spool/hook.jsonl'
"""

from __future__ import annotations

from yolo_edge.errors import ConfigError

__all__ = ["split_spec", "unquote", "quote_value"]

_HOW = 'quote a value like spool="/path/with,comma.jsonl" and write a quote inside it as ""'


def split_spec(spec: str) -> tuple[list[str], str]:
    """``KIND,OPT=V,...`` split at commas outside quotes, and the target after the first colon outside them."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for i, ch in enumerate(spec):
        if ch == '"':
            quoted = not quoted  # a doubled quote inside a value toggles twice: kept for unquote()
        elif not quoted and ch == ",":
            parts.append("".join(current))
            current = []
            continue
        elif not quoted and ch == ":":
            parts.append("".join(current))
            return parts, spec[i + 1:]
        current.append(ch)
    if quoted:
        raise ConfigError(f"bad sink {spec!r}: a double quote is not closed; {_HOW}")
    parts.append("".join(current))
    return parts, ""


def unquote(spec: str, value: str) -> str:
    """``"a,b"`` -> ``a,b`` and ``""`` inside the quotes -> ``"``; an unquoted value is taken as it is."""
    if not value.startswith('"'):
        if '"' in value:
            raise ConfigError(f"bad sink {spec!r}: quote a whole option value, not part of it; {_HOW}")
        return value
    if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1].replace('""', ""):
        raise ConfigError(f"bad sink {spec!r}: a quoted value runs from its opening quote to its closing one; {_HOW}")
    return value[1:-1].replace('""', '"')


def quote_value(value: str) -> str:
    """``value`` as an option value of a spec: quoted only when it holds a comma, colon or quote."""
    if any(c in value for c in ',:"'):
        return '"' + value.replace('"', '""') + '"'
    return value
