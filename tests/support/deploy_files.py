"""Reading the deploy files: the metric names the alert rules and the dashboard use, and the
names the workers and dramatiq export."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from workers.runtime import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def rule_expressions() -> dict[str, str]:
    """Alert name (or recording rule name) → PromQL expression, from rules.yml."""
    (doc,) = yaml_documents(RULES)
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in doc["groups"]
        for rule in group["rules"]
    }


def dashboard_expressions() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", [])]


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0).lower() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or an operator keyword
        names.add(match.group(0))
    return names


def used_metric_names() -> set[str]:
    """Every metric name in the alert rules and the dashboard."""
    exprs = [*rule_expressions().values(), *dashboard_expressions()]
    return set().union(*(promql_metric_names(e) for e in exprs))


def our_sample_names() -> set[str]:
    """Sample names the workers export (every series exists from process start)."""
    return {s.name for family in metrics.REGISTRY.collect() for s in family.samples}


def dramatiq_sample_names() -> set[str]:
    """Sample names of dramatiq's Prometheus middleware, read from its source.

    (Importing that module creates its multiprocess directory, so it is only read.)
    """
    spec = importlib.util.find_spec("dramatiq.middleware.prometheus")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    names = set()
    for kind, name in re.findall(r'prom\.(Counter|Gauge|Histogram)\(\s*"(\w+)"', source):
        if kind == "Counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "Histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names
