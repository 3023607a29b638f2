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

from kubemill.operator.settings import Settings
from kubemill_testenv.controlplane import REPO_ROOT, binary_dir
from kubemill_testenv.helm import CHART, helm_binary
from tests import hack_scripts

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


def refusal(*argv: str | Path) -> str:
    """What a helm command that must fail says (helm lint reports on stdout)."""
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0, f"{' '.join(map(str, argv))} succeeded:\n{done.stdout[:2000]}"
    return done.stdout + done.stderr


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


#: Values the operator refuses or misreads, each with what helm's refusal must say: the value's
#: path (values.schema.json) or its name and the reason (the start timeout's minimum, which only
#: the template can check).
BAD_VALUES = [
    # The TTL: "1d" was rendered as "0" (every Job deleted as it finishes); -5 and 2^31 make
    # every Job's creation fail (ttlSecondsAfterFinished is a non-negative int32).
    ("settings.defaultTtlSeconds=1d", "at '/settings/defaultTtlSeconds': got string"),
    ("settings.defaultTtlSeconds=-5", "at '/settings/defaultTtlSeconds': minimum"),
    ("settings.defaultTtlSeconds=2147483648", "at '/settings/defaultTtlSeconds': maximum"),
    # null leaves the key out of the values; it was rendered "<nil>" and the operator refused
    # to start (after the Recreate rollout had stopped the old one).
    ("settings.startTimeout=null", "at '/settings': missing property 'startTimeout'"),
    ("settings.startTimeout=10d", "at '/settings/startTimeout': '10d' does not match"),
    ("settings.startTimeout=600", "at '/settings/startTimeout': value must be 0"),
    ("settings.startTimeout=1234567h1234567h1234s", "at '/settings/startTimeout': maxLength"),
    ("settings.startTimeout=500ms", "settings.startTimeout: 500ms is shorter than 1s"),
    ("settings.startTimeout=0.5s", "settings.startTimeout: 0.5s is shorter than 1s"),
    ("settings.logLevel=null", "at '/settings': missing property 'logLevel'"),
    ("settings.logLevel=debug", "at '/settings/logLevel': value must be one of"),
    ("settings.terminationGraceSeconds=0", "at '/settings/terminationGraceSeconds': minimum"),
    ("settings.outputPrefix=results/runs/", "at '/settings/outputPrefix'"),
    ("settings.viewerUrl=https://viewer.example", "at '/settings/viewerRoot': minLength"),
    ("settings.viewerRoot=s3://results/", "at '/settings/viewerUrl': minLength"),
    ("settings.s3CredentialsSecret=My_Secret", "at '/settings/s3CredentialsSecret'"),
    ("settings.outputprefix=s3://results/", "additional properties 'outputprefix' not allowed"),
    ("operator.replicas=2", "at '/operator/replicas': maximum"),
    ("image.digest=sha256:abc", "at '/image/digest'"),
    ("runnerImage.digest=latest", "at '/runnerImage/digest'"),
    ("runnerImage.repository=ghcr.io/kubemill/kubemill-runner:1.0", "at '/runnerImage/repository'"),
    ("image.pullPolicy=always", "at '/image/pullPolicy'"),
    ("watchNamespaces={Team-A}", "at '/watchNamespaces/0'"),
    ("extraSettings.PATH=/bin", "at '/extraSettings': additional properties 'PATH'"),
    ("crds.install=maybe", "at '/crds/install': got string, want boolean"),
    ("setings.logLevel=DEBUG", "additional properties 'setings' not allowed"),
]


@pytest.mark.parametrize(("value", "said"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_it(helm: Path, value: str, said: str) -> None:
    """helm template, as install and upgrade do, checks the schema and then renders; the
    refusal comes before anything is applied or the running operator is replaced."""
    assert said in refusal(helm, "template", "kubemill", CHART, "--set", value)


def test_the_edges_of_each_checked_value_render(render: Render, helm: Path, tmp_path: Path) -> None:
    """What the operator accepts still renders, from --set (integers) and from a values file
    (YAML's numbers and strings), and reaches the ConfigMap as the operator reads it."""
    for sets, expected in [
        (["settings.startTimeout=1s", "settings.defaultTtlSeconds=0"],
         {"KUBEMILL_START_TIMEOUT": "1s", "KUBEMILL_DEFAULT_TTL_SECONDS": "0"}),
        (["settings.startTimeout=1000ms", "settings.defaultTtlSeconds=2147483647"],
         {"KUBEMILL_START_TIMEOUT": "1000ms", "KUBEMILL_DEFAULT_TTL_SECONDS": "2147483647"}),
        (["settings.startTimeout=0.5s0.5s", "settings.terminationGraceSeconds=1"],
         {"KUBEMILL_START_TIMEOUT": "0.5s0.5s", "KUBEMILL_TERMINATION_GRACE_SECONDS": "1"}),
        (["settings.startTimeout=1h30m", "settings.logLevel=DEBUG"],
         {"KUBEMILL_START_TIMEOUT": "1h30m", "KUBEMILL_LOG_LEVEL": "DEBUG"}),
        (["settings.viewerUrl=https://viewer.example/kubemill",
          "settings.viewerRoot=s3://results/", "settings.s3CredentialsSecret="],
         {"KUBEMILL_VIEWER_URL": "https://viewer.example/kubemill",
          "KUBEMILL_VIEWER_ROOT": "s3://results/", "KUBEMILL_S3_CREDENTIALS_SECRET": ""}),
    ]:  # fmt: skip
        data = _configmap(render(NO_CRDS, *sets))
        assert {k: data.get(k) for k in expected} == expected, sets
        Settings.from_env(data)
    values = tmp_path / "values.yaml"
    values.write_text(
        "settings:\n  startTimeout: '0'\n  defaultTtlSeconds: 3600\n"
        "  terminationGraceSeconds: null\noperator:\n  replicas: 0\n"
        "global: {}\n"
    )
    objects = documents(
        run(helm, "template", "kubemill", CHART, "--namespace", NAMESPACE, "-f", values,
            "--set", NO_CRDS)
    )  # fmt: skip
    data = _configmap(objects)
    assert data["KUBEMILL_START_TIMEOUT"] == "0"
    assert data["KUBEMILL_DEFAULT_TTL_SECONDS"] == "3600"
    assert "KUBEMILL_TERMINATION_GRACE_SECONDS" not in data
    assert _deployment(objects)["spec"]["replicas"] == 0
    Settings.from_env(data)


@pytest.mark.parametrize(
    "timeout", ["1s", "999ms", "1000ms", "0.5s", "0.5s0.5s", "0.0166m", "0.017m", "0.0002h", "0"]
)
def test_the_charts_start_timeout_is_what_the_operator_accepts(helm: Path, timeout: str) -> None:
    """The template's sum of a duration's parts, beside the operator's: a value the chart
    renders is one the operator starts with, and the other way round."""
    try:
        Settings.from_env({"KUBEMILL_START_TIMEOUT": timeout})
        operator_accepts = True
    except ValueError:
        operator_accepts = False
    done = subprocess.run(
        [str(helm), "template", "kubemill", str(CHART), "--namespace", NAMESPACE, "--set", NO_CRDS,
         "--set-string", f"settings.startTimeout={timeout}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode == 0) is operator_accepts, done.stderr
    if operator_accepts:
        assert _configmap(documents(done.stdout))["KUBEMILL_START_TIMEOUT"] == timeout


APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
OPERATOR_DIGEST = "sha256:" + "0123456789abcdef" * 4
RUNNER_DIGEST = "sha256:" + "fedcba9876543210" * 4


def test_images_pinned_by_digest_are_rendered_by_digest(render: Render) -> None:
    objects = render(
        NO_CRDS,
        f"image.digest={OPERATOR_DIGEST}",
        "image.tag=0.2.0",
        f"runnerImage.digest={RUNNER_DIGEST}",
        "runnerImage.repository=registry.example:5000/team/runner",
    )
    (container,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    # The digest alone names the image: a tag beside it would be one more thing to trust.
    assert container["image"] == f"ghcr.io/kubemill/kubemill-operator@{OPERATOR_DIGEST}"
    runner = _configmap(objects)["KUBEMILL_RUNNER_IMAGE"]
    assert runner == f"registry.example:5000/team/runner@{RUNNER_DIGEST}"
    # Without a digest, the tag: the chart's appVersion unless set (null is unset too).
    for sets in ([], ["image.tag=null", "image.digest=null", "runnerImage.tag=null"]):
        objects = render(NO_CRDS, *sets)
        (default,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
        assert default["image"] == f"ghcr.io/kubemill/kubemill-operator:{APP_VERSION}"
        runner = _configmap(objects)["KUBEMILL_RUNNER_IMAGE"]
        assert runner == f"ghcr.io/kubemill/kubemill-runner:{APP_VERSION}"


def test_a_chart_set_to_a_release_version_passes_helm_lint(helm: Path, tmp_path: Path) -> None:
    """hack/release.py set writes the version into Chart.yaml, whose version helm holds to
    SemVer: what `set` accepts must be a chart helm installs (1.3.0rc1 was not)."""
    release = hack_scripts.load("release")
    for site in release.SITES:
        (tmp_path / site.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / site.path, tmp_path / site.path)
    chart = tmp_path / CHART.relative_to(REPO_ROOT)
    shutil.copytree(CHART, chart, dirs_exist_ok=True)
    release.set_version(tmp_path, "9.8.10")
    assert "1 chart(s) linted, 0 chart(s) failed" in run(helm, "lint", "--strict", chart)
    shown = yaml.safe_load(run(helm, "show", "chart", chart))
    assert (shown["version"], shown["appVersion"]) == ("9.8.10", "9.8.10")
    # The lint can fail: a PEP 440 pre-release in Chart.yaml is what helm refused.
    metadata = chart / "Chart.yaml"
    metadata.write_text(metadata.read_text().replace("version: 9.8.10", "version: 1.3.0rc1"))
    out = refusal(helm, "lint", "--strict", chart)
    assert 'version "1.3.0rc1" is invalid' in out
