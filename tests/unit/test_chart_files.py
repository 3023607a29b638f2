"""The Helm chart's copies of crds/ are the files themselves (hack/sync_chart_crds.py, run by
`make crds`), and the chart's appVersion, the default tag of both images, is kubemill's version.
The chart's rendering is compared with the kustomize manifests in
tests/integration/test_helm_chart.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from tests import hack_scripts

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kubemill"

sync = hack_scripts.load("sync_chart_crds")


def test_the_chart_carries_crds_as_they_are() -> None:
    sources = {p.name: p.read_bytes() for p in sync.sources()}
    copies = {p.name: p.read_bytes() for p in sync.TARGET.glob("*")}
    assert len(sources) == 6
    stale = sorted(n for n in sources.keys() | copies.keys() if sources.get(n) != copies.get(n))
    assert stale == [], f"the chart's copies of crds/ are stale ({stale}): run make crds"


def test_the_chart_installs_this_version_of_kubemill() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
