"""The backup metrics (core/metrics.py) in Prometheus' text exposition format, through the
``prometheus-client`` library: a registry of our own (no process or platform metrics of
whoever renders them), rendered once per call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgbackups.core.metrics import Family

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families(Collector):
    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            labels = sorted({key for sample, _ in family.samples for key in sample})
            built: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "counter":
                # The library adds "_total" to a counter's samples itself.
                base = family.name.removesuffix("_total")
                built = CounterMetricFamily(base, family.help, labels=labels)
            else:
                built = GaugeMetricFamily(family.name, family.help, labels=labels)
            for sample, value in family.samples:
                built.add_metric([sample.get(key, "") for key in labels], value)
            yield built


def exposition(families: Sequence[Family]) -> str:
    """The text exposition of ``families`` (version 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()
