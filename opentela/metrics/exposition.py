"""The Prometheus text format (0.0.4), written by hand for speed, and the families behind it.

Why not ``prometheus_client.generate_latest`` for the request series: it formats every sample
on every scrape (label escaping, float formatting, a few microseconds each). At 100 models a
node exports ~5,000 samples (three histograms of 12-14 buckets per model, counters by model,
route and status), and stock ``generate_latest`` took 52-141 ms per scrape here, against the
5 ms the issue allows. Here each series renders its label set once, when it is created, and a
histogram re-renders its lines only after it changed since the last scrape: a scrape is a join
over cached strings. prometheus_client still provides the process and platform collectors
(``collect.py``) and, in the tests, the parser that checks this output.

Families are not thread-safe; everything that touches them runs on the node's one event loop.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate

from .catalog import COUNTER, GAUGE, HISTOGRAM, MAX_MODELS, OTHER, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(names: Iterable[str], values: Iterable[str]) -> str:
    """``{a="x",b="y"}`` (empty when there are no labels)."""
    pairs = [f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def number(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def header(metric: Metric) -> str:
    help_ = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {metric.name} {help_}\n# TYPE {metric.name} {metric.kind}\n"


class Counter:
    """One series of a counter (or of a gauge that is pushed rather than read at scrape)."""

    __slots__ = ("prefix", "value")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.value: float = 0

    def inc(self, n: float = 1) -> None:
        self.value += n

    def render(self) -> str:
        return f"{self.prefix} {number(self.value)}\n"


class Histogram:
    """One series of a histogram: per-bucket counts, cumulated when rendered."""

    __slots__ = ("_text", "bounds", "count", "counts", "prefixes", "sum")

    def __init__(self, name: str, labels: str, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0
        inner = labels[1:-1] + "," if labels else ""
        les = [*(number(b) for b in bounds), "+Inf"]
        self.prefixes = (
            tuple(f'{name}_bucket{{{inner}le="{le}"}} ' for le in les),
            f"{name}_sum{labels} ",
            f"{name}_count{labels} ",
        )
        self._text: str | None = None

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1  # le: a value equal to a bound is in it
        self.sum += v
        self.count += 1
        self._text = None

    def render(self) -> str:
        if self._text is None:
            buckets, s, c = self.prefixes
            # One C-level pass (map/accumulate/join): a per-line Python loop was most of a
            # scrape's cost at 100 models with every histogram changed since the last one.
            lines = "\n".join(map(operator.add, buckets, map(str, accumulate(self.counts))))
            self._text = f"{lines}\n{s}{number(self.sum)}\n{c}{self.count}\n"
        return self._text


class Family:
    """A metric's series by label values, created on first use. ``labels(*values)`` gives the
    series (a :class:`Counter` or a :class:`Histogram`); the caller bounds the values."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.header = header(metric)
        self.series: dict[Labels, Counter | Histogram] = {}

    def labels(self, *values: str) -> Counter | Histogram:
        s = self.series.get(values)
        if s is None:
            m = self.metric
            text = label_text(m.labels, values)
            s = (
                Histogram(m.name, text, m.buckets)
                if m.kind == HISTOGRAM
                else Counter(m.name + text)
            )
            self.series[values] = s
        return s

    def counter(self, *values: str) -> Counter:
        s = self.labels(*values)
        assert isinstance(s, Counter)
        return s

    def histogram(self, *values: str) -> Histogram:
        s = self.labels(*values)
        assert isinstance(s, Histogram)
        return s

    def render(self) -> str:
        if not self.series:
            return ""
        return self.header + "".join(s.render() for s in self.series.values())


def render_values(metric: Metric, values: Mapping[Labels, float] | float | None) -> str:
    """A counter or gauge read at scrape time: one value (no labels) or values by label
    values; ``None`` or an empty mapping: the metric is left out (unknown here)."""
    assert metric.kind in (COUNTER, GAUGE)
    if values is None:
        return ""
    if not isinstance(values, Mapping):
        values = {(): values}
    if not values:
        return ""
    lines = [
        f"{metric.name}{label_text(metric.labels, k)} {number(v)}\n" for k, v in values.items()
    ]
    return header(metric) + "".join(lines)


class BoundedLabel:
    """Values of one label (a model id) kept as given up to ``limit`` distinct ones, then
    ``other``: a client that sends a thousand made-up names cannot grow the scrape."""

    def __init__(self, limit: int = MAX_MODELS) -> None:
        self.limit = limit
        self.known: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.known:
            return value
        if len(self.known) >= self.limit:
            return OTHER
        self.known.add(value)
        return value
