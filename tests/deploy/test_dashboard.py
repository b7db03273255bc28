"""The shipped Grafana dashboard is built on exactly the metric names Cortado exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cortado._metrics import BUILTIN_METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "cortado.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def test_every_metric_the_dashboard_queries_is_one_cortado_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bcortado_[a-z_]+", expr)}
    unknown = [
        name
        for name in used
        if name not in BUILTIN_METRICS and not any(name.removesuffix(s) in BUILTIN_METRICS for s in HISTOGRAM_SUFFIXES)
    ]
    assert unknown == []


def test_every_built_in_metric_has_a_panel() -> None:
    text = DASHBOARD.read_text()
    assert [name for name in BUILTIN_METRICS if name not in text] == []


def test_panels_do_not_overlap_and_have_unique_ids() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)
