"""The metrics that `cluster/metrics.py`, the README and the Grafana dashboard name are one set, and the code records
every one of them. That each receives a value in a real run is checked by tests/test_cluster_e2e.py, which reads
them all from the metrics endpoint of its smoke run (`promised_metrics`)."""
from __future__ import annotations

import re

from cluster.metrics import DEFINITIONS
from tests.conftest import REPO_ROOT
from tests.test_imports import project_modules


def dashboard_metrics() -> set[str]:
    text = (REPO_ROOT / "cluster" / "grafana_dashboard.json").read_text()
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"ray_(rltf_\w+)", text)}


def readme_metrics() -> set[str]:
    return set(re.findall(r"`(rltf_\w+)`", (REPO_ROOT / "README.md").read_text()))


def promised_metrics() -> set[str]:
    """Every metric named anywhere, as the metrics endpoint spells it (Ray adds ``ray_``)."""
    return {f"ray_{name}" for name in set(DEFINITIONS) | dashboard_metrics() | readme_metrics()}


def test_readme_and_dashboard_name_the_defined_metrics():
    assert dashboard_metrics() <= set(DEFINITIONS), dashboard_metrics() - set(DEFINITIONS)
    assert readme_metrics() == set(DEFINITIONS)


def test_the_code_records_every_defined_metric():
    recorded = set()
    for path in project_modules().values():
        recorded |= set(re.findall(r"""record\(\s*["'](rltf_\w+)["']""", path.read_text()))
    assert recorded == set(DEFINITIONS), f"defined but never recorded: {set(DEFINITIONS) - recorded}"
