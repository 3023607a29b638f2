"""The Helm chart (deploy/helm/kubemill) against the kustomize manifests, with the real tools: helm
built from its Go module (hack/helm/build.sh) and the kubectl the control-plane build provides.

With no value changed, the chart renders exactly what crds/ and deploy/base apply, object for
object and field for field, but for Helm's own labels (and annotations that only Helm acts on),
the release namespace (which Helm does not create from a chart: `--create-namespace`), and a
hash of the settings on the operator's pod template. One truth, two ways to install it: a change
to either side fails here until the other follows.
"""

from __future__ import annotations

import copy
import difflib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemill_testenv.controlplane import REPO_ROOT, binary_dir
from kubemill_testenv.helm import CHART, helm_binary

pytestmark = pytest.mark.integration

NAMESPACE = "kubemill-system"
SETTINGS = REPO_ROOT / "operator" / "settings.py"
#: What Helm puts on objects and deploy/base does not.
HELM_LABELS = frozenset(
    {
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "helm.sh/chart",
    }
)
HELM_ANNOTATIONS = frozenset({"helm.sh/resource-policy"})
SETTINGS_HASH = "kubemill.dev/settings-hash"
#: Kinds without a namespace. kustomize sets its `namespace:` on the admission policies as well
#: (it knows no ValidatingAdmissionPolicy); kubectl and the API server drop it there.
CLUSTER_SCOPED = frozenset(
    {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Namespace",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
)

#: For the tests of values that do not touch the CRDs: they are most of what helm renders.
NO_CRDS = "crds.install=false"

Key = tuple[str, str, str]
Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return helm_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return binary_dir(build=True) / "kubectl"


def run(*argv: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stderr}"
    return done.stdout


def documents(text: str) -> list[dict[str, Any]]:
    # libyaml's loader: the three CRDs are 700 kB of YAML, seconds for the pure-Python one.
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d]


@pytest.fixture(scope="module")
def render(helm: Path) -> Render:
    """`helm template` of a chart (this one unless given), with `--set` values."""

    def render(*sets: str, chart: Path = CHART) -> list[dict[str, Any]]:
        argv: list[str | Path] = [helm, "template", "kubemill", chart, "--namespace", NAMESPACE]
        for value in sets:
            argv += ["--set", value]
        return documents(run(*argv))

    return render


@pytest.fixture(scope="module")
def kustomize(kubectl: Path) -> list[dict[str, Any]]:
    """crds/ and deploy/base as `kubectl apply -k` applies them."""
    return [
        *documents(run(kubectl, "kustomize", REPO_ROOT / "crds")),
        *documents(run(kubectl, "kustomize", REPO_ROOT / "deploy" / "base")),
    ]


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    namespace = "" if obj["kind"] in CLUSTER_SCOPED else meta.get("namespace", "")
    return (obj["kind"], namespace, meta["name"])


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what only Helm adds."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    if obj["kind"] in CLUSTER_SCOPED:
        meta.pop("namespace", None)
    for field, helm_only in (("labels", HELM_LABELS), ("annotations", HELM_ANNOTATIONS)):
        kept = {k: v for k, v in meta.get(field, {}).items() if k not in helm_only}
        if kept:
            meta[field] = kept
        else:
            meta.pop(field, None)
    if obj["kind"] == "Deployment":
        template = obj["spec"]["template"]["metadata"]
        annotations = template.get("annotations", {})
        annotations.pop(SETTINGS_HASH, None)
        if not annotations:
            template.pop("annotations", None)
    return obj


def differences(base: Iterable[dict[str, Any]], chart: Iterable[dict[str, Any]]) -> list[str]:
    """What tells the chart's objects from the kustomize ones, one entry per object; the
    release namespace is Helm's to create, not the chart's."""
    ours = {key(o): normalized(o) for o in base if key(o) != ("Namespace", "", NAMESPACE)}
    theirs = {key(o): normalized(o) for o in chart}
    found = [f"only in the kustomize manifests: {k}" for k in sorted(ours.keys() - theirs)]
    found += [f"only in the chart: {k}" for k in sorted(theirs.keys() - ours)]
    for k in sorted(ours.keys() & theirs):
        if ours[k] != theirs[k]:
            diff = difflib.unified_diff(
                yaml.safe_dump(ours[k], sort_keys=True).splitlines(),
                yaml.safe_dump(theirs[k], sort_keys=True).splitlines(),
                "kustomize",
                "helm",
                lineterm="",
            )
            found.append(f"{k} differs:\n" + "\n".join(diff))
    return found


@pytest.mark.parametrize(
    "sets",
    [[], ["rbac.namespaced=true", "watchNamespaces={team-a,team-b}"]],
    ids=["default", "namespaced"],
)
def test_helm_lint_passes(helm: Path, sets: list[str]) -> None:
    out = run(helm, "lint", "--strict", CHART, *(a for s in sets for a in ("--set", s)))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_default_chart_is_the_kustomize_manifests(
    render: Render, kustomize: list[dict[str, Any]]
) -> None:
    chart = render()
    found = differences(kustomize, chart)
    assert not found, "\n\n".join(found)
    # Nothing slipped through twice (two templates rendering one object).
    assert len({key(o) for o in chart}) == len(chart)
    # The CRDs survive an uninstall; nothing else the chart renders does.
    kept = {key(o) for o in chart if o["metadata"].get("annotations", {}).get(
        "helm.sh/resource-policy") == "keep"}  # fmt: skip
    assert kept == {key(o) for o in chart if o["kind"] == "CustomResourceDefinition"}
    assert len(kept) == 3


def test_the_packaged_chart_is_whole(helm: Path, render: Render, tmp_path: Path) -> None:
    """`helm package` takes only the chart's folder: the copies of crds/ travel with it."""
    run(helm, "package", CHART, "--destination", tmp_path)
    (package,) = tmp_path.glob("kubemill-*.tgz")
    assert render(chart=package) == render()


def test_a_drifted_rule_is_found(
    render: Render, kustomize: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The comparison sees a verb the chart adds to one RBAC rule (so it can fail)."""
    chart = tmp_path / "kubemill"
    shutil.copytree(CHART, chart)
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    drifted = text.replace(
        "verbs: [list, watch, create, patch, delete]",
        "verbs: [list, watch, create, patch, delete, update]",
    )
    assert drifted != text
    helpers.write_text(drifted)
    found = differences(kustomize, render(chart=chart))
    assert len(found) == 1
    assert found[0].startswith("('ClusterRole', '', 'kubemill-operator') differs")
    assert "+  - update" in found[0]


def test_every_operator_setting_is_documented_in_the_values(helm: Path) -> None:
    names = set(re.findall(r"\"(KUBEMILL_[A-Z0-9_]+)\"", SETTINGS.read_text()))
    # The liveness endpoint is the Deployment's own (its probes ask it), not a user's setting.
    names.discard("KUBEMILL_LIVENESS_ENDPOINT")
    assert len(names) >= 12
    values = run(helm, "show", "values", CHART)
    comments = "\n".join(line for line in values.splitlines() if line.lstrip().startswith("#"))
    assert sorted(n for n in names if n not in comments) == []


def _configmap(objects: list[dict[str, Any]]) -> dict[str, str]:
    (found,) = [o for o in objects if key(o) == ("ConfigMap", NAMESPACE, "kubemill-operator")]
    data: dict[str, str] = found["data"]
    return data


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "Deployment"]
    return found


def test_values_reach_the_settings_and_a_changed_one_rolls_the_operator(render: Render) -> None:
    default = render(NO_CRDS)
    changed = render(
        NO_CRDS,
        "settings.outputPrefix=s3://results/runs/",
        "settings.startTimeout=0",
        "settings.defaultTtlSeconds=1000000",
        "settings.terminationGraceSeconds=45",
        "settings.runnerCommand=/opt/bin/kubemill",
        "runnerImage.tag=0.2.0",
        "watchNamespaces={team-a,team-b}",
        "extraSettings.KUBEMILL_NEWER=yes",
    )
    assert _configmap(changed) == {
        **_configmap(default),
        "KUBEMILL_OUTPUT_PREFIX": "s3://results/runs/",
        "KUBEMILL_START_TIMEOUT": "0",
        "KUBEMILL_DEFAULT_TTL_SECONDS": "1000000",
        "KUBEMILL_TERMINATION_GRACE_SECONDS": "45",
        "KUBEMILL_RUNNER_COMMAND": "/opt/bin/kubemill",
        "KUBEMILL_RUNNER_IMAGE": "ghcr.io/kubemill/kubemill-runner:0.2.0",
        "KUBEMILL_NAMESPACES": "team-a,team-b",
        "KUBEMILL_NEWER": "yes",
    }
    hashes = [
        _deployment(objects)["spec"]["template"]["metadata"]["annotations"][SETTINGS_HASH]
        for objects in (default, render(NO_CRDS), changed)
    ]
    assert hashes[0] == hashes[1] != hashes[2]


def test_a_null_setting_is_left_to_the_operator(render: Render) -> None:
    # Not written as "0" (for the TTL: delete every Job as it finishes) or "".
    data = _configmap(render(NO_CRDS, "settings.defaultTtlSeconds=null"))
    assert "KUBEMILL_DEFAULT_TTL_SECONDS" not in data
    assert "KUBEMILL_TERMINATION_GRACE_SECONDS" not in data
    assert "KUBEMILL_RUNNER_COMMAND" not in data


def test_the_operator_image_follows_the_values(render: Render) -> None:
    (container,) = _deployment(render(NO_CRDS, "image.tag=dev", "image.pullPolicy=Always"))["spec"][
        "template"]["spec"]["containers"]  # fmt: skip
    assert container["image"] == "ghcr.io/kubemill/kubemill-operator:dev"
    assert container["imagePullPolicy"] == "Always"


def test_a_namespaced_install_grants_rights_only_in_its_namespaces(render: Render) -> None:
    default = render(NO_CRDS)
    objects = render(NO_CRDS, "rbac.namespaced=true", "watchNamespaces={team-a,team-b}")
    (cluster_role,) = [o for o in default if key(o) == ("ClusterRole", "", "kubemill-operator")]
    kinds = {key(o) for o in objects}
    assert ("ClusterRole", "", "kubemill-operator") not in kinds
    assert ("ClusterRoleBinding", "", "kubemill-operator") not in kinds
    for namespace in ("team-a", "team-b"):
        (role,) = [o for o in objects if key(o) == ("Role", namespace, "kubemill-operator")]
        assert role["rules"] == cluster_role["rules"]
        (binding,) = [
            o for o in objects if key(o) == ("RoleBinding", namespace, "kubemill-operator")
        ]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubemill-operator"
        }  # fmt: skip
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubemill-operator", "namespace": NAMESPACE}
        ]
    assert _configmap(objects)["KUBEMILL_NAMESPACES"] == "team-a,team-b"


def test_a_namespaced_install_without_namespaces_is_refused(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "kubemill", str(CHART), "--set", "rbac.namespaced=true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "rbac.namespaced needs watchNamespaces" in done.stderr


def test_parts_can_be_left_out(render: Render) -> None:
    objects = render(
        "crds.install=false", "operatorPolicies.install=false", "userRoles.install=false"
    )
    assert {o["kind"] for o in objects} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment"
    }  # fmt: skip
    kept = render("crds.keep=false")
    assert any(o["kind"] == "CustomResourceDefinition" for o in kept)
    assert not any(
        o["metadata"].get("annotations", {}).get("helm.sh/resource-policy") for o in kept
    )
