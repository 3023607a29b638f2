"""hack/release.py: pyproject.toml's version is the one source of truth for every place that
names it (manifests, the operator's default runner image, the README), checked on every commit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests import hack_scripts

ROOT = Path(__file__).resolve().parents[2]
release = hack_scripts.load("release")

#: SemVer 2.0.0's own regular expression (semver.org), which a Helm chart's version must match.
_PRERELEASE = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER = (
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-{_PRERELEASE}(?:\.{_PRERELEASE})*)?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)


def _copy_sites(target: Path) -> None:
    for site in release.SITES:
        (target / site.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / site.path, target / site.path)


def test_every_site_in_this_commit_names_pyprojects_version() -> None:
    assert release.check(ROOT) == []


def test_set_rewrites_every_site_and_check_then_agrees(tmp_path: Path) -> None:
    _copy_sites(tmp_path)
    before = release.find(tmp_path)[0]

    changed = release.set_version(tmp_path, "9.8.10")

    assert sorted(changed) == sorted(site.path for site in release.SITES)
    assert release.check(tmp_path, tag="v9.8.10") == []
    after = release.find(tmp_path)[0]
    # The same places, each with the new version: nothing found twice, nothing lost.
    assert [(f.path, f.line) for f in after] == [(f.path, f.line) for f in before]
    assert {f.version for f in after} == {"9.8.10"}
    assert (
        "KUBEMILL_RUNNER_IMAGE: ghcr.io/kubemill/kubemill-runner:9.8.10"
        in (tmp_path / "deploy/base/settings.yaml").read_text()
    )
    # helm refuses a chart whose version is not SemVer (tests/integration/test_helm_chart.py
    # lints a chart set this way).
    chart = yaml.safe_load((tmp_path / "deploy/helm/kubemill/Chart.yaml").read_text())
    assert re.fullmatch(SEMVER, chart["version"]), chart["version"]
    assert chart["version"] == chart["appVersion"] == "9.8.10"


def test_one_site_left_behind_is_named_with_its_line(tmp_path: Path) -> None:
    _copy_sites(tmp_path)
    release.set_version(tmp_path, "1.2.3")
    deployment = tmp_path / "deploy/base/deployment.yaml"
    deployment.write_text(deployment.read_text().replace("operator:1.2.3", "operator:1.2.2"))
    lines = deployment.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "operator:1.2.2" in text)

    assert release.check(tmp_path) == [
        f"deploy/base/deployment.yaml:{line}: names 1.2.2, but the version is 1.2.3"
    ]


def test_a_site_whose_version_vanished_is_a_disagreement_too(tmp_path: Path) -> None:
    _copy_sites(tmp_path)
    settings = tmp_path / "operator/settings.py"
    settings.write_text(settings.read_text().replace(":0.1.0", ":latest"))

    (problem,) = release.check(tmp_path)
    assert problem.startswith("operator/settings.py: 0 versions found where 1 were expected")


def test_a_tag_that_is_not_v_and_the_version_is_refused_with_what_to_do() -> None:
    version = release.source_version(ROOT)
    assert release.check(ROOT, tag=f"v{version}") == []
    (problem,) = release.check(ROOT, tag="v99.0.0")
    assert "tag v99.0.0 does not match" in problem
    assert "hack/release.py set 99.0.0" in problem


# 1.3.0rc1 is PEP 440 but not SemVer, 1.3.0-rc.1 the reverse (PyPI rewrites it as 1.3.0rc1), and
# 01.2.3 neither (PEP 440 reads it as 1.2.3): no one string would name the version everywhere.
@pytest.mark.parametrize(
    "bad", ["1.2", "v1.2.3", "1.2.3-beta", "1.3.0rc1", "1.3.0-rc.1", "01.2.3", "latest", "1.2.3\n"]
)
def test_set_refuses_what_is_not_a_release_version(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="is not a release version"):
        release.set_version(tmp_path, bad)
