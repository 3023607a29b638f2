"""The Job built for a NotebookRun: a pure function, tested with tables and no cluster."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.jobs import build_job, runner_timeout
from kubemill.operator.meta import copied_annotations, job_name
from kubemill.operator.settings import Settings
from kubemill.operator.spec import notebook_input, output_folder, parse_duration

SETTINGS = Settings(
    runner_image="registry.example/kubemill-runner:1",
    output_prefix="s3://results/runs/",
    s3_endpoint_url="http://s3.local:8333",
    s3_credentials_secret="kubemill-s3",
)


def make_run(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {
            "name": "daily-report",
            "namespace": "analytics",
            "uid": "0b6e4c1a-1111-2222-3333-444455556666",
            "generation": 1,
            "labels": {"team": "reports", "kopf.zalando.org/x": "no"},
            "annotations": {
                "note": "keep",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "kubemill.dev/last-handled-configuration": "{...}",
            },
        },
        "spec": {"notebook": "s3://notebooks/daily.ipynb", **spec},
    }


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_minimal_run() -> None:
    job = build_job(make_run(), SETTINGS)
    assert job["metadata"]["name"] == job_name("daily-report", make_run()["metadata"]["uid"])
    assert job["metadata"]["namespace"] == "analytics"
    assert job["metadata"]["finalizers"] == ["kubemill.dev/status-recorded"]
    # The job controller copies the template's finalizers onto each pod it creates
    # (controller.GetPodFromTemplate), so the pods, and their summary, outlive a TTL deletion.
    assert job["spec"]["template"]["metadata"]["finalizers"] == ["kubemill.dev/status-recorded"]
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "name": "daily-report",
        "uid": "0b6e4c1a-1111-2222-3333-444455556666",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    main = container(job)
    assert main["image"] == "registry.example/kubemill-runner:1"
    assert main["command"] == ["kubemill"]
    assert main["args"] == [
        "run",
        "s3://notebooks/daily.ipynb",
        "s3://results/runs/analytics/daily-report/",
        "--termination-message-path",
        "/dev/termination-log",
    ]
    assert main["envFrom"] == [{"secretRef": {"name": "kubemill-s3"}}]
    assert env_of(job)["AWS_ENDPOINT_URL"] == "http://s3.local:8333"
    assert job["spec"]["backoffLimit"] == 0
    assert "activeDeadlineSeconds" not in job["spec"]
    assert job["spec"]["ttlSecondsAfterFinished"] == SETTINGS.default_ttl_seconds


def test_a_viewer_the_operator_knows_is_passed_to_the_runner() -> None:
    viewer = replace(SETTINGS, viewer_url="https://nb.example", viewer_root="s3://results/")
    env = env_of(build_job(make_run(), viewer))
    assert (env["KUBEMILL_VIEWER_URL"], env["KUBEMILL_VIEWER_ROOT"]) == (
        "https://nb.example", "s3://results/",
    )  # fmt: skip
    assert "KUBEMILL_VIEWER_URL" not in env_of(build_job(make_run(), SETTINGS))


def test_the_schedule_workflow_and_step_of_a_run_reach_its_lineage() -> None:
    run = make_run()
    run["metadata"]["labels"] = {"kubemill.dev/workflow": "nightly", "kubemill.dev/step": "load"}
    env = env_of(build_job(run, SETTINGS))
    assert (env["KUBEMILL_WORKFLOW_NAME"], env["KUBEMILL_STEP_NAME"]) == ("nightly", "load")
    assert "KUBEMILL_SCHEDULE_NAME" not in env


def test_labels_and_annotations_are_copied_without_tool_bookkeeping() -> None:
    job = build_job(make_run(), SETTINGS)
    labels = job["metadata"]["labels"]
    assert labels["team"] == "reports"
    assert labels["kubemill.dev/run"] == "daily-report"
    assert labels["app.kubernetes.io/managed-by"] == "kubemill"
    assert not any(k.startswith("kopf.zalando.org") for k in labels)
    assert job["metadata"]["annotations"] == {"note": "keep"}
    pod_meta = job["spec"]["template"]["metadata"]
    assert pod_meta["labels"]["kubemill.dev/run"] == "daily-report"
    assert pod_meta["annotations"] == {"note": "keep"}


def test_pod_is_restricted() -> None:
    pod = build_job(make_run(), SETTINGS)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_everything_a_run_can_say() -> None:
    run = make_run(
        output="s3://elsewhere/out",
        parameters={"region": "eu", "alpha": 0.1, "nested": {"a": [1, None]}},
        parametersFrom=[{"name": "db_password", "secretKeyRef": {"name": "db", "key": "pw"}}],
        kernel="python3",
        image="custom:2",
        timeout="2h",
        cellTimeout="10m",
        retries=2,
        ttlSecondsAfterFinished=60,
        html=True,
        allowUnknownParameters=True,
        resources={"limits": {"memory": "2Gi"}},
        env=[{"name": "EXTRA", "value": "1"}],
        envFrom=[{"configMapRef": {"name": "settings"}}],
        serviceAccountName="reports",
        nodeSelector={"pool": "batch"},
        tolerations=[{"key": "batch", "operator": "Exists"}],
        affinity={"nodeAffinity": {}},
        podTemplate={"metadata": {"labels": {"cost": "b"}, "annotations": {"a": "b"}}},
    )
    job = build_job(run, SETTINGS)
    main = container(job)
    args = main["args"]
    assert args[2] == "s3://elsewhere/out/analytics/daily-report/"
    # Parameters travel in a mounted ConfigMap, never in args (see test_operator_parameters).
    assert args[args.index("--parameters-json-file") + 1] == (
        "/var/run/kubemill/parameters/parameters-0.json"
    )
    assert "eu" not in args and "--parameters-json" not in args
    assert "--kernel=python3" in args
    assert args[args.index("--cell-timeout") + 1] == "600"
    assert args[args.index("--timeout") + 1] == "7140"  # the runner stops first
    assert "--html" in args and "--allow-unknown-parameters" in args
    assert main["image"] == "custom:2"
    assert main["resources"] == {"limits": {"memory": "2Gi"}}
    assert main["envFrom"][-1] == {"configMapRef": {"name": "settings"}}
    env = env_of(job)
    assert env["KUBEMILL_SECRET_0"] == {"secretKeyRef": {"name": "db", "key": "pw"}}
    assert env["KUBEMILL_SECRET_PARAMS"] == "db_password=KUBEMILL_SECRET_0"
    assert env["EXTRA"] == "1"
    assert env["KUBEMILL_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "pw" not in json.dumps(args)
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] == 60
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "reports"
    assert "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert spec["template"]["metadata"]["labels"]["cost"] == "b"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [2, 127] and rules[0]["action"] == "FailJob"


def test_notebook_from_a_config_map_is_mounted() -> None:
    run = make_run()
    del run["spec"]["notebook"]
    run["spec"]["notebookFrom"] = {"configMapKeyRef": {"name": "nb", "key": "report.ipynb"}}
    job = build_job(run, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["args"][1] == "/var/run/kubemill/notebook/report.ipynb"
    assert {
        "name": "notebook",
        "configMap": {"name": "nb", "items": [{"key": "report.ipynb", "path": "report.ipynb"}]},
    } in pod["volumes"]


def test_the_builder_does_not_modify_the_run() -> None:
    run = make_run(parameters={"a": 1}, env=[{"name": "X", "value": "1"}])
    before = copy.deepcopy(run)
    build_job(run, SETTINGS)
    assert run == before


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"notebook": None}, "exactly one of spec.notebook"),
        ({"notebook": "ftp://x/y.ipynb"}, "must be an s3://BUCKET/KEY or https:// URL"),
        ({"timeout": "soon"}, "is not a duration"),
        ({"cellTimeout": "10 minutes"}, "is not a duration"),
        ({"startTimeout": "0s"}, r"spec\.startTimeout '0s' is not a duration"),
        ({"output": "/local/path"}, "must start with s3://"),
        ({"parametersFrom": [{"name": "x"}]}, "needs a secretKeyRef"),
    ],
)
def test_invalid_specs_say_what_to_change(spec: dict[str, Any], message: str) -> None:
    run = make_run(**spec)
    run["spec"] = {k: v for k, v in run["spec"].items() if v is not None}
    with pytest.raises(InvalidSpec, match=message):
        build_job(run, SETTINGS)


def test_no_output_anywhere_is_invalid() -> None:
    with pytest.raises(InvalidSpec, match="KUBEMILL_OUTPUT_PREFIX"):
        output_folder({}, "ns", "run", Settings())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1250ms", 1.25), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "timeout") == seconds


def test_runner_timeout_leaves_room_before_the_deadline() -> None:
    assert runner_timeout(7200) == 7140
    assert runner_timeout(60) == 45
    assert runner_timeout(8) == 3
    assert runner_timeout(1) == 1


def test_job_names_are_deterministic_short_and_distinct_per_uid() -> None:
    long = "r" * 250
    assert job_name(long, "uid-1") == job_name(long, "uid-1")
    assert len(job_name(long, "uid-1")) <= 63
    assert job_name("run", "uid-1") != job_name("run", "uid-2")
    # A cut that ends on a hyphen or dot does not leave it before the hash.
    stem = job_name("x" * 53 + "-y" * 10, "u").rsplit("-", 1)[0]
    assert not stem.endswith(("-", ".")) and len(stem) <= 54


def test_https_notebooks_and_annotation_filtering() -> None:
    assert notebook_input({"notebook": "https://example.org/n.ipynb"}).startswith("https://")
    assert copied_annotations({"kubemill.dev/x": "1", "y": "2"}) == {"y": "2"}


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {
            "KUBEMILL_OUTPUT_PREFIX": "s3://bucket/prefix",
            "KUBEMILL_NAMESPACES": "a, b,,",
            "KUBEMILL_DEFAULT_TTL_SECONDS": "60",
            "KUBEMILL_LOG_LEVEL": "debug",
        }
    )
    assert settings.output_prefix == "s3://bucket/prefix/"
    assert settings.namespaces == ("a", "b")
    assert settings.default_ttl_seconds == 60
    assert settings.log_level == "DEBUG"
    with pytest.raises(ValueError, match="must start with s3://"):
        Settings.from_env({"KUBEMILL_OUTPUT_PREFIX": "/tmp"})
    with pytest.raises(ValueError, match="not a whole number"):
        Settings.from_env({"KUBEMILL_DEFAULT_TTL_SECONDS": "soon"})
    viewer = {"KUBEMILL_VIEWER_URL": "https://nb.example/", "KUBEMILL_VIEWER_ROOT": "s3://r/"}
    assert Settings.from_env(viewer).viewer_root == "s3://r/"
    with pytest.raises(ValueError, match="go together: set both"):
        Settings.from_env({"KUBEMILL_VIEWER_URL": "https://nb.example/"})
    with pytest.raises(ValueError, match="must start with https://"):
        Settings.from_env({**viewer, "KUBEMILL_VIEWER_URL": "nb.example"})
