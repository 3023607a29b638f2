"""The Job for a NotebookRun: a pure function of the run and the operator's settings."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from kubemill.runner.contract import ENV_RUN_IDENTITY, ENV_SECRET_PARAMS, ExitCode
from kubemill.runner.links import ENV_VIEWER_ROOT, ENV_VIEWER_URL

from .errors import InvalidSpec
from .meta import (
    JOB_FINALIZER,
    LABEL_SCHEDULE,
    LABEL_STEP,
    LABEL_WORKFLOW,
    POD_FINALIZER,
    child_labels,
    copied_annotations,
    copied_labels,
    job_name,
    owner_reference,
)
from .references import Resolution
from .settings import Settings
from .spec import NOTEBOOK_MOUNT, notebook_input, output_folder, parse_duration

__all__ = [
    "CONTAINER",
    "PARAMETERS_CHUNK_BYTES",
    "PARAMETERS_MOUNT",
    "RUNNER_UID",
    "build_job",
    "build_parameter_config_maps",
    "literal",
    "parameter_chunks",
    "runner_timeout",
    "split_utf8",
]

CONTAINER = "runner"
#: The runner image's user (Dockerfile.runner); numeric so runAsNonRoot can be verified.
RUNNER_UID = 10001
TERMINATION_LOG = "/dev/termination-log"
#: A shell's exit code for a command it did not find.
COMMAND_NOT_FOUND = 127
# What every runner container gets, whatever its image (`kubemill image check` runs its checks
# under the same): a read-only root file system, so everything a kernel writes goes to /tmp, an
# emptyDir; a numeric non-root uid, so runAsNonRoot is verified without the image's passwd.
RUNNER_HOME = {
    "HOME": "/tmp",
    "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
    "IPYTHONDIR": "/tmp/ipython",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "PYTHONUNBUFFERED": "1",
}
RUNNER_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
RUNNER_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUNNER_UID,
    "runAsGroup": RUNNER_UID,
    "fsGroup": RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: Where the run's parameter ConfigMaps appear inside the runner pod, one file per part.
PARAMETERS_MOUNT = "/var/run/kubemill/parameters"
#: The key holding a part of the parameters' JSON text in each parameter ConfigMap.
PARAMETERS_KEY = "parameters.json"
#: The key (and the file in PARAMETERS_MOUNT) of the runner's --upstream-file: the runs this
#: run takes values from, and the results it fetches from their results.json.
UPSTREAM_KEY = "upstream.json"
#: UTF-8 bytes of parameter JSON per ConfigMap. The API server refuses a ConfigMap whose data
#: values add up to more than 1 MiB (1,048,576 bytes); 1,000,000 stays under that with room for
#: the metadata within etcd's 1.5 MiB per object. A NotebookRun itself can be about 1.5 MB, so a
#: parameter set needs two ConfigMaps in practice; the builder makes as many as needed.
PARAMETERS_CHUNK_BYTES = 1_000_000


def literal(text: str) -> str:
    """`text` spelt so that Kubernetes passes it on unchanged from a container's command, args
    or env value. Those fields are expanded: `$(NAME)` becomes the value of a variable NAME
    the container has, and `$$` becomes `$`. Doubling every `$` makes the expansion give back
    exactly `text`, whatever variables exist (third_party/forked/golang/expansion).

    Every string the operator puts into those fields goes through here; only a user's own
    spec.env values do not, since users write `$(VAR)` there on purpose."""
    return text.replace("$", "$$")


def split_utf8(data: bytes, limit: int) -> list[str]:
    """UTF-8 `data` cut into texts of at most `limit` bytes each, never inside a character
    (a ConfigMap's data values must be valid UTF-8); joined, they are `data` again."""
    if limit < 4:
        raise ValueError("a part must have room for one UTF-8 character (4 bytes)")
    parts: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        parts.append(data[start:end].decode("utf-8"))
        start = end
    return parts


def _compact(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )


def run_parameters(spec: Mapping[str, Any], resolved: Resolution | None = None) -> dict[str, Any]:
    """The parameters the runner gets: the spec's, and the values taken from other runs."""
    return {**(spec.get("parameters") or {}), **(resolved.inline if resolved else {})}


def parameter_chunks(
    parameters: Mapping[str, Any], limit: int = PARAMETERS_CHUNK_BYTES
) -> list[str]:
    """`parameters` as compact JSON text, in parts of at most `limit` bytes; none without
    parameters. Sorted keys make the text, and so each part, the same on every attempt."""
    if not parameters:
        return []
    text = _compact(parameters)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, which no JSON decoder should produce
        raise InvalidSpec(f"spec.parameters holds text that is not valid Unicode: {exc}") from None
    return split_utf8(data, limit)


def _parameter_config_map_name(job: str, index: int) -> str:
    # Job names have at most 63 characters; ConfigMap names may have 253.
    return f"{job}-parameters-{index}"


def _upstream_config_map_name(job: str) -> str:
    return f"{job}-upstream"


def build_parameter_config_maps(
    run: Mapping[str, Any],
    resolved: Resolution | None = None,
    limit: int = PARAMETERS_CHUNK_BYTES,
) -> list[dict[str, Any]]:
    """The immutable ConfigMaps that carry the run's parameters to the runner, to create
    before its Job (whose pod mounts them all); none without parameters.

    Parameters never travel in the container's args or env: Kubernetes expands `$(VAR)` and
    `$$` there, and Linux refuses any one argument or environment string over 128 KiB. Owned
    by the run, they go when it goes; their names follow from the Job's, so creating them
    again answers 409 and they are adopted, like the Job."""
    meta = run["metadata"]
    job = job_name(meta["name"], meta["uid"])

    def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": child_labels(run),
                "ownerReferences": [owner_reference(run)],
            },
            "immutable": True,
            "data": data,
        }

    chunks = parameter_chunks(run_parameters(run["spec"], resolved), limit)
    parts: dict[str, dict[str, str]] = {
        _parameter_config_map_name(job, index): {PARAMETERS_KEY: chunk}
        for index, chunk in enumerate(chunks)
    }
    upstream = _upstream_text(resolved)
    if upstream is not None:
        parts.setdefault(_upstream_home(job, chunks, upstream, limit), {})[UPSTREAM_KEY] = upstream
    return [config_map(name, data) for name, data in parts.items()]


def _upstream_text(resolved: Resolution | None) -> str | None:
    """The runner's --upstream-file, for a run that takes values from other runs."""
    if resolved is None or resolved.upstream is None:
        return None
    return _compact(resolved.upstream)


def _upstream_home(job: str, chunks: list[str], upstream: str, limit: int) -> str:
    """The ConfigMap that carries the upstream file: the last parameters part when both fit in
    one ConfigMap (one API write fewer per run: a fan-out creates many at once), else its own."""
    if chunks and len(chunks[-1].encode()) + len(upstream.encode()) <= limit:
        return _parameter_config_map_name(job, len(chunks) - 1)
    return _upstream_config_map_name(job)


def _parameter_volume(job: str, parts: int, upstream: str | None) -> dict[str, Any]:
    """One read-only volume with a file per part, in order, and the upstream file; a
    ConfigMap or key that is missing keeps the pod from starting (the kubelet reports
    FailedMount), never runs it with part of the parameters."""
    sources = [
        {
            "configMap": {
                "name": _parameter_config_map_name(job, index),
                "items": [{"key": PARAMETERS_KEY, "path": _parameter_file(index)}],
            }
        }
        for index in range(parts)
    ]
    if upstream is not None:  # the ConfigMap that carries it
        sources.append(
            {
                "configMap": {
                    "name": upstream,
                    "items": [{"key": UPSTREAM_KEY, "path": UPSTREAM_KEY}],
                }
            }
        )
    return {"name": "parameters", "projected": {"sources": sources}}


def _parameter_file(index: int) -> str:
    return f"parameters-{index}.json"


def runner_timeout(deadline: float) -> float:
    """The runner's own --timeout, shorter than the Job's deadline so that the runner, not the
    job controller, stops the notebook and saves it with reason RunTimeout. The margin covers
    pod start-up, which the deadline counts and the runner does not: a quarter of the deadline,
    at least 5 s, at most 60 s."""
    margin = min(60.0, max(5.0, deadline * 0.25))
    return max(1.0, deadline - margin)


def _seconds(value: float) -> str:
    return f"{value:g}"


def _runner_args(
    run: Mapping[str, Any], settings: Settings, parameter_parts: int, upstream: bool
) -> list[str]:
    """The runner's arguments, unescaped (build_job passes each through `literal`)."""
    spec = run["spec"]
    meta = run["metadata"]
    args = [
        "run",
        notebook_input(spec),
        output_folder(spec, meta["namespace"], meta["name"], settings),
        "--termination-message-path",
        TERMINATION_LOG,
    ]
    if parameter_parts:
        args.append("--parameters-json-file")
        args += [f"{PARAMETERS_MOUNT}/{_parameter_file(i)}" for i in range(parameter_parts)]
    if upstream:
        args += ["--upstream-file", f"{PARAMETERS_MOUNT}/{UPSTREAM_KEY}"]
    if spec.get("kernel"):
        # One argument, so a kernel name that starts with "-" is never read as an option.
        args.append(f"--kernel={spec['kernel']}")
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
        **RUNNER_HOME,
    }
    labels = meta.get("labels") or {}
    for key, label in (
        ("schedule", LABEL_SCHEDULE), ("workflow", LABEL_WORKFLOW), ("step", LABEL_STEP),
    ):  # fmt: skip
        if labels.get(label):
            values[ENV_RUN_IDENTITY[key]] = labels[label]
    if settings.s3_endpoint_url:
        values["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.viewer_url:
        # The runner's log and summary name the viewer's page of the output.
        values[ENV_VIEWER_URL] = settings.viewer_url
        values[ENV_VIEWER_ROOT] = settings.viewer_root
    env: list[dict[str, Any]] = [{"name": k, "value": literal(v)} for k, v in values.items()]
    for key, path in (
        ("pod", "metadata.name"),
        ("namespace", "metadata.namespace"),
        ("node", "spec.nodeName"),
    ):
        env.append({"name": ENV_RUN_IDENTITY[key], "valueFrom": {"fieldRef": {"fieldPath": path}}})
    secrets: list[str] = []
    for index, item in enumerate(run["spec"].get("parametersFrom") or []):
        ref = item.get("secretKeyRef")
        if item.get("notebookRunRef") is not None:
            continue  # a value from another run: in the parameters or the upstream file
        if not ref:
            raise InvalidSpec(
                f"spec.parametersFrom[{index}] ({item.get('name')!r}) needs a secretKeyRef or "
                "a notebookRunRef"
            )
        variable = f"KUBEMILL_SECRET_{index}"
        # The value goes from the Secret straight into the pod: the operator never reads it.
        env.append({"name": variable, "valueFrom": {"secretKeyRef": dict(ref)}})
        secrets.append(f"{item['name']}={variable}")
    if secrets:
        env.append({"name": ENV_SECRET_PARAMS, "value": literal(",".join(secrets))})
    # The user's own variables keep Kubernetes' meaning: `$(VAR)` there is written on purpose.
    return env + [dict(e) for e in run["spec"].get("env") or []]


def build_job(
    run: Mapping[str, Any], settings: Settings, resolved: Resolution | None = None
) -> dict[str, Any]:
    """The batch/v1 Job that executes `run`, with the values `resolved` from the runs it
    references; raises InvalidSpec when it cannot be built."""
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
    chunks = parameter_chunks(run_parameters(spec, resolved))
    parameter_parts = len(chunks)
    text = _upstream_text(resolved)
    home = None if text is None else _upstream_home(name, chunks, text, PARAMETERS_CHUNK_BYTES)
    upstream = home is not None
    if parameter_parts or upstream:
        volumes.append(_parameter_volume(name, parameter_parts, home))
        mounts.append({"name": "parameters", "mountPath": PARAMETERS_MOUNT, "readOnly": True})
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
        "command": [literal(settings.runner_command)],
        "args": [literal(arg) for arg in _runner_args(run, settings, parameter_parts, upstream)],
        "env": _environment(run, name, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": copy.deepcopy(RUNNER_CONTAINER_SECURITY),
    }
    if env_from:
        container["envFrom"] = env_from
    if spec.get("resources"):
        container["resources"] = dict(spec["resources"])

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": copy.deepcopy(RUNNER_POD_SECURITY),
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
                    # So does a shell's 127, a command the image does not have (RunnerNotInImage).
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [int(ExitCode.BAD_INPUT), COMMAND_NOT_FOUND],
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
    if spec.get("startTimeout"):
        # The operator, not the Job, holds the run to it (status.start_deadline); checked here
        # so that a value the CRD let through fails the run before its Job exists.
        parse_duration(spec["startTimeout"], "spec.startTimeout")
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
