"""A service's /metrics, parsed with prometheus_client's own parser, and the metric names the alert rules and the
Grafana dashboard (deploy/) read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

# What a family of each type exposes, by sample name.
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@dataclass(frozen=True)
class Scrape:
    content_type: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: dict[str, str]  # name -> type, families without samples (no labels seen yet) included

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there are none)."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in self.samples.items() if n == name and wanted <= have)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(have)[label] for (n, have) in self.samples if n == name and label in dict(have)}

    def sample_names(self) -> set[str]:
        """Every sample name the families can expose, whether or not they have samples yet."""
        return {name + suffix for name, kind in self.families.items() for suffix in _SUFFIXES.get(kind, ("",))}


def parse(text: str, content_type: str = "") -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(content_type, samples, families)


def scrape(base_url: str) -> Scrape:
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text, response.headers["content-type"])


def metric_names_in(expression: str) -> set[str]:
    """The Refundflow metric names a PromQL expression reads."""
    return set(re.findall(r"\brefundflow_[a-z0-9_]+", expression))


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "refundflow.json"


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rule_metrics() -> set[str]:
    return set().union(*(metric_names_in(rule["expr"]) for rule in alert_rules()))


def dashboard_metrics() -> set[str]:
    return set().union(*(metric_names_in(expr) for expr in dashboard_expressions()))
