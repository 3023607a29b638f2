"""The Job for a NotebookRun: a pure function of the run and the operator's settings."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.meta import (
    JOB_FINALIZER,
    POD_FINALIZER,
    child_labels,
    copied_annotations,
    copied_labels,
    job_name,
    owner_reference,
)
from kubemill.operator.settings import Settings
from kubemill.operator.spec import NOTEBOOK_MOUNT, notebook_input, output_folder, parse_duration
from kubemill.runner.contract import ENV_RUN_IDENTITY, ENV_SECRET_PARAMS, ExitCode

__all__ = ["CONTAINER", "RUNNER_UID", "build_job", "runner_timeout"]

CONTAINER = "runner"
#: The runner image's user (Dockerfile.runner); numeric so runAsNonRoot can be verified.
RUNNER_UID = 10001
TERMINATION_LOG = "/dev/termination-log"


def runner_timeout(deadline: float) -> float:
    """The runner's own --timeout, shorter than the Job's deadline so that the runner, not the
    job controller, stops the notebook and saves it with reason RunTimeout. The margin covers
    pod start-up, which the deadline counts and the runner does not: a quarter of the deadline,
    at least 5 s, at most 60 s."""
    margin = min(60.0, max(5.0, deadline * 0.25))
    return max(1.0, deadline - margin)


def _seconds(value: float) -> str:
    return f"{value:g}"


def _runner_args(run: Mapping[str, Any], settings: Settings) -> list[str]:
    spec = run["spec"]
    meta = run["metadata"]
    args = [
        "run",
        notebook_input(spec),
        output_folder(spec, meta["namespace"], meta["name"], settings),
        "--termination-message-path",
        TERMINATION_LOG,
    ]
    parameters = spec.get("parameters") or {}
    if parameters:
        args += ["--parameters-json", json.dumps(parameters, sort_keys=True, allow_nan=False)]
    if spec.get("kernel"):
        args += ["--kernel", spec["kernel"]]
    if spec.get("cellTimeout"):
        args += ["--cell-timeout", _seconds(parse_duration(spec["cellTimeout"], "cellTimeout"))]
    if spec.get("timeout"):
        deadline = parse_duration(spec["timeout"], "timeout")
        args += ["--timeout", _seconds(runner_timeout(deadline))]
    if spec.get("allowUnknownParameters"):
        args.append("--allow-unknown-parameters")
    if spec.get("html"):
        args.append("--html")
    return args


def _environment(run: Mapping[str, Any], job: str, settings: Settings) -> list[dict[str, Any]]:
    meta = run["metadata"]
    values = {
        ENV_RUN_IDENTITY["run"]: meta["name"],
        ENV_RUN_IDENTITY["runUid"]: meta["uid"],
        ENV_RUN_IDENTITY["job"]: job,
        # The root filesystem is read-only: everything a kernel writes goes to /tmp.
        "HOME": "/tmp",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "IPYTHONDIR": "/tmp/ipython",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.s3_endpoint_url:
        values["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    for key, path in (
        ("pod", "metadata.name"),
        ("namespace", "metadata.namespace"),
        ("node", "spec.nodeName"),
    ):
        env.append({"name": ENV_RUN_IDENTITY[key], "valueFrom": {"fieldRef": {"fieldPath": path}}})
    secrets: list[str] = []
    for index, item in enumerate(run["spec"].get("parametersFrom") or []):
        ref = item.get("secretKeyRef")
        if not ref:
            raise InvalidSpec(
                f"spec.parametersFrom[{index}] ({item.get('name')!r}) needs a secretKeyRef"
            )
        variable = f"KUBEMILL_SECRET_{index}"
        # The value goes from the Secret straight into the pod: the operator never reads it.
        env.append({"name": variable, "valueFrom": {"secretKeyRef": dict(ref)}})
        secrets.append(f"{item['name']}={variable}")
    if secrets:
        env.append({"name": ENV_SECRET_PARAMS, "value": ",".join(secrets)})
    return env + [dict(e) for e in run["spec"].get("env") or []]


def build_job(run: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The batch/v1 Job that executes `run`; raises InvalidSpec when it cannot be built."""
    meta = run["metadata"]
    spec = run["spec"]
    name = job_name(meta["name"], meta["uid"])
    labels = child_labels(run)
    annotations = copied_annotations(meta.get("annotations"))
    template_meta = spec.get("podTemplate", {}).get("metadata", {})
    pod_labels = {**copied_labels(template_meta.get("labels")), **labels}
    pod_annotations = {**annotations, **copied_annotations(template_meta.get("annotations"))}

    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    source = (spec.get("notebookFrom") or {}).get("configMapKeyRef")
    if source:
        volumes.append(
            {
                "name": "notebook",
                "configMap": {
                    "name": source["name"],
                    "items": [{"key": source["key"], "path": source["key"]}],
                },
            }
        )
        mounts.append({"name": "notebook", "mountPath": NOTEBOOK_MOUNT, "readOnly": True})

    env_from: list[dict[str, Any]] = []
    if settings.s3_credentials_secret:
        env_from.append({"secretRef": {"name": settings.s3_credentials_secret}})
    env_from += [dict(e) for e in spec.get("envFrom") or []]

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.get("image") or settings.runner_image,
        "command": [settings.runner_command],
        "args": _runner_args(run, settings),
        "env": _environment(run, name, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    if spec.get("resources"):
        container["resources"] = dict(spec["resources"])

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = spec["serviceAccountName"]
    else:
        # The runner never talks to the Kubernetes API: no token in its pod.
        pod_spec["automountServiceAccountToken"] = False
    for field in ("nodeSelector", "tolerations", "affinity"):
        if spec.get(field):
            pod_spec[field] = spec[field]

    job_spec: dict[str, Any] = {
        "backoffLimit": int(spec.get("retries", 0)),
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {
            "rules": [
                {
                    # Bad input fails the same way every time: retrying only wastes the budget.
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [int(ExitCode.BAD_INPUT)],
                    },
                },
                {
                    # An evicted or preempted pod did nothing wrong: do not count it.
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": pod_annotations,
                "finalizers": [POD_FINALIZER],
            },
            "spec": pod_spec,
        },
    }
    if spec.get("timeout"):
        job_spec["activeDeadlineSeconds"] = math.ceil(parse_duration(spec["timeout"], "timeout"))
    ttl = spec.get("ttlSecondsAfterFinished", settings.default_ttl_seconds)
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = int(ttl)

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(run)],
            "finalizers": [JOB_FINALIZER],
        },
        "spec": job_spec,
    }
