"""The Helm chart's copies of crds/ are the files themselves (hack/sync_chart_crds.py, run by
`make crds`). The chart's rendering is compared with the kustomize manifests in
tests/integration/test_helm_chart.py; its versions are checked by hack/release.py."""

from __future__ import annotations

from tests import hack_scripts

sync = hack_scripts.load("sync_chart_crds")


def test_the_chart_carries_crds_as_they_are() -> None:
    sources = {p.name: p.read_bytes() for p in sync.sources()}
    copies = {p.name: p.read_bytes() for p in sync.TARGET.glob("*")}
    assert len(sources) == 6
    stale = sorted(n for n in sources.keys() | copies.keys() if sources.get(n) != copies.get(n))
    assert stale == [], f"the chart's copies of crds/ are stale ({stale}): run make crds"
