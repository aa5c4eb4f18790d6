"""A strict parser of the Prometheus text exposition format 0.0.4 for the tests of ``/metrics``
(prometheus_client is not a dependency). It refuses what a Prometheus server would refuse – and a little more
that the format allows but our page must not do: a sample before its family's ``# TYPE``, a family without
``# HELP``, families split across the page, a counter not named ``*_total``, a repeated series, a bad value."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    name: str
    type: str = ""
    help: str = ""
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def value(self, **labels: str) -> float:
        return self.samples[tuple(sorted(labels.items()))]

    def values(self, label: str) -> dict[str, float]:
        """label value → sample value, for a family with that one label."""
        return {dict(k)[label]: v for k, v in self.samples.items()}


class ParseError(ValueError):
    pass


def _value(text: str) -> float:
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", text):
        raise ParseError(f"bad value {text!r}")
    return float(text)


def _labels(text: str, lineno: int) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = LABEL.match(text, i)
        if not m or text[m.end():m.end() + 2] != '="':
            raise ParseError(f"line {lineno}: bad label at {text[i:]!r}")
        name, i = m.group(), m.end() + 2
        value = []
        while True:
            if i >= len(text):
                raise ParseError(f"line {lineno}: unterminated label value")
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ParseError(f"line {lineno}: bad escape \\{nxt}")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ParseError(f"line {lineno}: newline in a label value")
            else:
                value.append(ch)
                i += 1
        if name in dict(out):
            raise ParseError(f"line {lineno}: label {name} repeated")
        out.append((name, "".join(value)))
        if i < len(text):
            if text[i] != ",":
                raise ParseError(f"line {lineno}: expected ',' at {text[i:]!r}")
            i += 1
    return tuple(sorted(out))


def parse(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise ParseError("the page must end with a newline")
    families: dict[str, Family] = {}
    closed: set[str] = set()
    current = ""
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ParseError(f"line {lineno}: bad metric name {name!r}")
                if name in closed:
                    raise ParseError(f"line {lineno}: family {name} split across the page")
                if name != current:
                    if current:
                        closed.add(current)
                    current = name
                fam = families.setdefault(name, Family(name))
                rest = parts[3] if len(parts) == 4 else ""
                if parts[1] == "TYPE":
                    if fam.type or rest not in TYPES:
                        raise ParseError(f"line {lineno}: bad or repeated TYPE for {name}")
                    if fam.samples:
                        raise ParseError(f"line {lineno}: TYPE after samples of {name}")
                    fam.type = rest
                else:
                    if fam.help:
                        raise ParseError(f"line {lineno}: repeated HELP for {name}")
                    fam.help = rest
            continue
        m = NAME.match(line)
        if not m:
            raise ParseError(f"line {lineno}: bad sample {line!r}")
        name, rest = m.group(), line[m.end():]
        labels: tuple[tuple[str, str], ...] = ()
        if rest.startswith("{"):
            end = rest.rfind("}")
            if end < 0:
                raise ParseError(f"line {lineno}: unterminated labels")
            labels, rest = _labels(rest[1:end], lineno), rest[end + 1:]
        if not rest.startswith(" "):
            raise ParseError(f"line {lineno}: expected a space before the value")
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise ParseError(f"line {lineno}: bad sample {line!r}")
        if name != current or name not in families or not families[name].type:
            raise ParseError(f"line {lineno}: sample of {name} outside its family (TYPE first)")
        fam = families[name]
        if labels in fam.samples:
            raise ParseError(f"line {lineno}: repeated series {name}{dict(labels)}")
        fam.samples[labels] = _value(fields[0])
    for fam in families.values():
        if not fam.type or not fam.help:
            raise ParseError(f"{fam.name}: needs # HELP and # TYPE")
        if fam.type == "counter" and not fam.name.endswith("_total"):
            raise ParseError(f"counter {fam.name} must end in _total")
        if fam.type == "counter" and any(v < 0 or math.isnan(v) for v in fam.samples.values()):
            raise ParseError(f"counter {fam.name} has a negative or NaN value")
    return families
