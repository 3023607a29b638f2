"""A NotebookWorkflow on one machine: the operator's decisions, carried out by local processes.

Nothing here decides what a workflow does: `workflows.plan` says which runs to create and
delete and what the workflow's status is, `references.resolve` says when a run may start and
with which values, `jobs.run_parameters` what parameters it gets and `status.derive_status`
what its status becomes when it ends. This module keeps the runs as the cluster would hold them
(the same dicts: metadata, spec, status) and turns what those functions say into commands, so a
workflow that passes here behaves the same as a NotebookWorkflow.

Pure: no process is started and no file is read or written here (kubemill/cli/workflow.py
does that), so each rule is a table test.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.jobs import CONTAINER, run_parameters
from kubemill.operator.meta import LABEL_STEP, LABEL_WORKFLOW
from kubemill.operator.references import Resolution, resolve
from kubemill.operator.spec import parse_duration
from kubemill.operator.status import TERMINAL, derive_status
from kubemill.operator.workflows import ENDED, RETRY, WorkflowPlan, parse_steps, plan
from kubemill.runner.contract import ENV_RUN_IDENTITY, parse_summary
from kubemill.runner.links import ENV_VIEWER_ROOT, ENV_VIEWER_URL

from .schedule import UsageError

__all__ = [
    "KIND",
    "Local",
    "Start",
    "advance",
    "definitions",
    "ended_status",
    "ended_without_start",
    "interrupted",
    "load_workflow",
    "only",
    "override",
    "retry",
    "run_folder",
    "runner_args",
    "started_status",
    "stranded",
]

KIND = "NotebookWorkflow"
#: The name the status gives a local run's "Job": a run with a jobName has started, so the
#: planner never deletes it (as on a cluster, where a run whose Job exists ends on its own).
LOCAL_JOB = "local"
#: The job controller's reason for a Job whose pod failed; the run's own reason comes from the
#: runner's summary, as on a cluster.
_JOB_FAILED = "Failed"
#: The reason of a run stopped, and of a step not started, because `workflow run` itself was
#: stopped (Ctrl-C, SIGTERM, a crash): nothing about the step says it would fail, and
#: `workflow retry` runs it again.
INTERRUPTED = "Interrupted"
#: Planning is repeated while it changes something (a run that cannot start fails at once,
#: which may skip others); a workflow of 100 steps and 200 items settles far sooner.
_MAX_ROUNDS = 1000


@dataclass
class Local:
    """A workflow and its runs as this machine holds them: what the API server holds on a
    cluster, and what the state file keeps between `workflow run` and `workflow retry`."""

    workflow: dict[str, Any]
    #: The runs by name, each a NotebookRun dict with its status.
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Runs the planner created that a cluster would refuse (name: message); none locally so
    #: far, kept so that `plan` gets what it gets on a cluster.
    refused: dict[str, str] = field(default_factory=dict)
    #: Each step's definition digest (`definitions`) when its runs were made: `--only`
    #: reuses a step's runs only while it is unchanged.
    digests: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {"workflow": self.workflow, "runs": list(self.runs.values())}
        return data | ({"digests": self.digests} if self.digests else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Local:
        workflow = data.get("workflow")
        runs = data.get("runs")
        if not isinstance(workflow, dict) or not isinstance(runs, list):
            raise UsageError("not a kubemill workflow state file (no workflow and runs)")
        try:
            digests = {str(k): str(v) for k, v in (data.get("digests") or {}).items()}
            return cls(
                dict(workflow), {r["metadata"]["name"]: dict(r) for r in runs}, digests=digests
            )
        except (KeyError, TypeError):
            raise UsageError("not a kubemill workflow state file (a run has no name)") from None

    @property
    def phase(self) -> str:
        return str((self.workflow.get("status") or {}).get("phase") or "Pending")


@dataclass(frozen=True)
class Start:
    """A run whose references allow it to start now, with what they resolved to."""

    run: Mapping[str, Any]
    resolution: Resolution
    step: str


def load_workflow(documents: Sequence[Any], source: str) -> dict[str, Any]:
    """The one NotebookWorkflow among a manifest's documents, with what the API server would
    add (namespace, uid, generation); UsageError for a manifest that is not one."""
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(found) != 1:
        kinds = [str(d.get("kind")) for d in documents if isinstance(d, dict)]
        raise UsageError(
            f"{source} holds {len(found)} NotebookWorkflows (kinds: {', '.join(kinds) or 'none'});"
            " `workflow run` needs exactly one"
        )
    workflow = copy.deepcopy(found[0])
    meta = workflow.setdefault("metadata", {})
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise UsageError(f"{source}: the NotebookWorkflow has no metadata.name")
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("generation", 1)
    workflow.pop("status", None)
    return workflow


def _steps(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    spec = workflow.get("spec") or {}
    return {str(s.get("name")): s for s in [*spec.get("steps", []), *spec.get("finally", [])]}


def override(workflow: dict[str, Any], values: Sequence[tuple[str, Any]]) -> None:
    """Set `-p STEP.NAME VALUE` parameters in the steps' run templates; UsageError, before any
    is set, for an unknown step or a parameter the step takes from elsewhere."""
    steps = _steps(workflow)
    checked = []
    for key, value in values:
        step, dot, name = key.partition(".")
        if not dot or not name:
            raise UsageError(f"-p {key}: name a step's parameter as STEP.NAME")
        if step not in steps:
            raise UsageError(
                f"-p {key}: the workflow has no step {step!r} (its steps: {', '.join(steps)})"
            )
        taken = _taken(steps[step], name)
        if taken is not None:
            # The operator's words for the same clash (references.resolve): "set by … and
            # by …: keep one"; here the fix is on the command line, so the message names it.
            raise UsageError(
                f"-p {key}: parameter {name!r} of step {step!r} is set by -p and by {taken}: "
                f"keep one (drop -p {key}, or change the step in the manifest)"
            )
        checked.append((step, name, value))
    for step, name, value in checked:
        spec = steps[step].setdefault("runTemplate", {}).setdefault("spec", {})
        spec.setdefault("parameters", {})[name] = value


def _taken(step: Mapping[str, Any], name: str) -> str | None:
    """What else gives a step's parameter `name` its value (a reference, the forEach item),
    in the manifest's terms; None when only spec.parameters may. A -p value for such a
    parameter would be replaced, or would fail the run, after its upstream steps ran."""
    loop = step.get("forEach") or {}
    if loop.get("parameter") == name:
        return f"forEach.parameter (each item of step {step.get('name')!r} is passed as it)"
    spec = (step.get("runTemplate") or {}).get("spec") or {}
    for index, item in enumerate(spec.get("parametersFrom") or []):
        if item.get("name") != name:
            continue
        source = next((k for k in item if k != "name"), "a reference")
        ref = item.get("stepRef") or {}
        what = f"stepRef to step {ref.get('name')!r}" if ref else source
        return f"runTemplate.spec.parametersFrom[{index}] ({what})"
    return None


def _needed(workflow: Mapping[str, Any], wanted: Sequence[str]) -> list[str]:
    """The steps `wanted` need, directly or not, with them; in spec order."""
    try:
        steps = {s.name: s for s in parse_steps(workflow.get("spec") or {})}
    except InvalidSpec:
        return list(wanted)  # the planner reports it
    unknown = [w for w in wanted if w not in steps]
    if unknown:
        raise UsageError(
            f"--only {unknown[0]}: the workflow has no step {unknown[0]!r} "
            f"(its steps: {', '.join(steps)})"
        )
    closure: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += steps[name].needs
    return [name for name in steps if name in closure]


def definitions(workflow: Mapping[str, Any], notebooks: Mapping[str, str]) -> dict[str, str]:
    """A digest of each step's definition, as given (after -p): the whole step (notebook,
    parameters, references, forEach, dependsOn) and, where `notebooks` has it, a digest of its
    notebook's contents (the driver reads the local files; a URL counts as written)."""
    digests = {}
    for name, step in _steps(workflow).items():
        notebook = ((step.get("runTemplate") or {}).get("spec") or {}).get("notebook")
        text = json.dumps(
            {"step": step, "notebook": notebooks.get(str(notebook))},
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def only(
    workflow: dict[str, Any],
    wanted: Sequence[str],
    earlier: Local | None,
    digests: Mapping[str, str] | None = None,
) -> tuple[Local, list[str]]:
    """The workflow cut down to `wanted` and the steps they need (no finally steps); a needed
    step whose runs succeeded in `earlier` (the same workflow, run here before) keeps them
    and so its outputs, as a retry keeps a succeeded step's, unless its definition changed
    since (its digest in `digests` differs from the one `earlier` recorded, or `earlier`
    recorded none) or a step it needs runs again: as make re-runs a target whose inputs
    changed. Also the steps that succeeded before but run again for that."""
    digests = dict(digests or {})
    keep = set(_needed(workflow, wanted))
    try:
        needs = {s.name: s.needs for s in parse_steps(workflow.get("spec") or {})}
    except InvalidSpec:
        needs = {}  # the planner reports it
    spec = workflow.setdefault("spec", {})
    spec["steps"] = [s for s in spec.get("steps", []) if s.get("name") in keep]
    spec.pop("finally", None)
    local = Local(workflow, digests={k: v for k, v in digests.items() if k in keep})
    if earlier is None:
        return local, []
    old = earlier.workflow.get("status") or {}
    succeeded = set()
    for name in keep - set(wanted):
        mine = [e for e in old.get("steps") or [] if e.get("name") == name]
        if mine and all(e.get("phase") == "Succeeded" for e in mine):
            succeeded.add(name)
    reused: dict[str, bool] = {}

    def reusable(name: str) -> bool:
        if name not in reused:
            reused[name] = (
                name in succeeded
                and name in digests
                and earlier.digests.get(name) == digests[name]
                and all(reusable(n) for n in needs.get(name, ()))
            )
        return reused[name]

    entries = []
    for name in sorted(succeeded):
        if not reusable(name):
            continue
        for entry in (e for e in old.get("steps") or [] if e.get("name") == name):
            run = earlier.runs.get(str(entry.get("runName")))
            if run is not None:
                entries.append(entry)
                local.runs[run["metadata"]["name"]] = copy.deepcopy(run)
    if entries:
        local.workflow["status"] = {"steps": entries}
    changed = [n for n in _needed(workflow, wanted) if n in succeeded and not reusable(n)]
    return local, changed


def retry(local: Local, token: str) -> None:
    """Ask for the next attempt, as `kubemill retry` asks the operator: the planner re-runs the
    failed and skipped steps and the finally steps, and keeps what succeeded."""
    if local.phase != "Failed":
        raise UsageError(
            f"workflow {local.workflow['metadata']['name']} is {local.phase}; only a failed "
            "workflow is retried"
        )
    local.workflow["metadata"].setdefault("annotations", {})[RETRY] = token


def run_folder(root: str, namespace: str, name: str) -> str:
    """A run's folder under a local folder or an S3 prefix: `<root><namespace>/<name>/`, as the
    operator names it under its output prefix (operator/spec.py, output_folder)."""
    return f"{root.rstrip('/')}/{namespace}/{name}/"


def _lookup(local: Local) -> Any:
    return lambda name: local.runs.get(name)


def _apply(local: Local, decided: WorkflowPlan) -> bool:
    """Carry a plan out on the local runs; whether anything changed."""
    changed = False
    for name, _why in decided.delete:
        # Only runs that never started are deleted: no process to stop.
        changed |= local.runs.pop(name, None) is not None
    for body, _step in decided.create:
        name = body["metadata"]["name"]
        if name not in local.runs:
            created = copy.deepcopy(body)
            created["metadata"]["uid"] = str(uuid.uuid4())
            created["metadata"]["generation"] = 1
            local.runs[name] = created
            changed = True
    if decided.status != local.workflow.get("status"):
        local.workflow["status"] = decided.status
        changed = True
    return changed


def _unsupported(spec: Mapping[str, Any]) -> str | None:
    """What a run spec asks that a laptop cannot give (the cluster's Secrets, ConfigMaps)."""
    for index, item in enumerate(spec.get("parametersFrom") or []):
        if item.get("secretKeyRef") is not None:
            return (
                f"spec.parametersFrom[{index}] ({item.get('name')!r}) takes a value from a "
                "Secret, which a local run cannot read; pass it with --secret-param "
                f"{item.get('name')}=ENV_VAR"
            )
    if spec.get("notebookFrom") is not None:
        return (
            "spec.notebookFrom reads a ConfigMap, which a local run cannot; "
            "set spec.notebook to a local path, s3:// or https:// URL"
        )
    if not spec.get("notebook"):
        return "spec.notebook is not set"
    return None


def ended_without_start(run: dict[str, Any], reason: str, message: str, now: str) -> None:
    """Fail a run that cannot start, as the run controller does: no Job, a final status."""
    old = run.get("status") or {}
    failed = {**old, "phase": "Failed", "reason": reason, "message": message}
    failed["completionTime"] = now
    run["status"] = derive_status({**run, "status": failed}, None, [], now)


def interrupted(local: Local, stopped: Collection[str], why: str, now: str) -> None:
    """End a workflow whose `workflow run` stopped before it did (`why` says how), so that
    `workflow retry` takes it up: the runs in `stopped` (whose processes it stopped) and every
    run that started and has not ended (its process died with the driver) fail, a run that
    never started is dropped (no process to stop, as the planner deletes a waiting run on
    failFast), the steps not ended are skipped, and the workflow fails, each with the reason
    Interrupted. A workflow that ended is left as it is."""
    if local.phase in TERMINAL:
        return
    message = f"{why}; `kubemill workflow retry` runs it again"
    for name, run in list(local.runs.items()):
        status = run.get("status") or {}
        if status.get("reason") == INTERRUPTED:
            continue
        if name in stopped or (status.get("jobName") and status.get("phase") not in TERMINAL):
            ended_without_start(run, INTERRUPTED, message, now)
        elif status.get("phase") not in TERMINAL:
            del local.runs[name]
    # Plan once for the steps' entries as the runs now are, mark those not ended Skipped,
    # and plan again from that: the planner keeps an ended entry, and says what failed.
    status = plan(local.workflow, list(local.runs.values()), now, local.refused).status
    for entry in status.get("steps") or []:
        if entry.get("phase") not in ENDED:
            entry.update(phase="Skipped", reason=INTERRUPTED, message=message)
            if entry.get("runName") not in local.runs:
                entry.pop("runName", None)
    local.workflow["status"] = status
    status = plan(local.workflow, list(local.runs.values()), now, local.refused).status
    if status.get("phase") == "Failed":
        said = f"{why}; `kubemill workflow retry` runs the failed and skipped steps again"
        status.update(reason=INTERRUPTED, message=said)
        for found in status.get("conditions") or []:
            found.update(reason=INTERRUPTED, message=said)
    local.workflow["status"] = status


def _waiting(run: dict[str, Any], message: str, now: str) -> bool:
    old = run.get("status") or {}
    if old.get("phase") == "Waiting" and old.get("message") == message:
        return False
    waiting = {**old, "phase": "Waiting", "reason": "Waiting", "message": message}
    run["status"] = derive_status({**run, "status": waiting}, None, [], now)
    return True


def advance(
    local: Local, now: str, running: Sequence[str], secrets: Mapping[str, str] = {}
) -> list[Start]:
    """Plan until nothing changes, and the runs that may start now (none of `running`, the
    runs whose processes are still going). A run that cannot start fails here, as the run
    controller fails it; `secrets` are the parameters given with --secret-param."""
    for _ in range(_MAX_ROUNDS):
        changed = _apply(local, plan(local.workflow, list(local.runs.values()), now, local.refused))
        ready: list[Start] = []
        for name, run in local.runs.items():
            status = run.get("status") or {}
            if status.get("phase") in TERMINAL or status.get("jobName") or name in running:
                continue
            problem = _unsupported(
                {
                    **run["spec"],
                    "parametersFrom": [
                        p
                        for p in run["spec"].get("parametersFrom") or []
                        if p.get("name") not in secrets
                    ],
                }
            )
            if problem is not None:
                ended_without_start(run, "InvalidSpec", problem, now)
                changed = True
                continue
            try:
                resolved = resolve(run, _lookup(local))
            except InvalidSpec as exc:
                resolved = Resolution(failed=(exc.reason, exc.message))
            if resolved.failed is not None:
                ended_without_start(run, *resolved.failed, now)
                changed = True
            elif resolved.waiting is not None:
                changed |= _waiting(run, resolved.waiting, now)
            else:
                step = run["metadata"].get("labels", {}).get(LABEL_STEP, "")
                ready.append(Start(run, resolved, step))
        if not changed:
            return ready
    raise RuntimeError("the workflow's plan did not settle")  # a bug: plans converge


def stranded(local: Local, now: str) -> None:
    """Fail the runs that wait for what will never come here: a `notebookRunRef` to a run
    this workflow does not make. On a cluster such a run waits until someone creates that
    run; here nothing else can, and waiting would never end."""
    for run in local.runs.values():
        status = run.get("status") or {}
        if status.get("phase") == "Waiting" and not status.get("jobName"):
            message = (
                f"{status.get('message')}, which nothing creates when the workflow runs here; "
                "take values from this workflow's steps with stepRef"
            )
            ended_without_start(run, "InvalidSpec", message, now)


def _job(start: str, end: str | None, code: int | None) -> dict[str, Any]:
    """The Job a cluster would show for a local run: active, complete or failed."""
    status: dict[str, Any] = {"startTime": start}
    if end is None:
        status["active"] = 1
    elif code == 0:
        status.update(succeeded=1, completionTime=end)
        status["conditions"] = [{"type": "Complete", "status": "True"}]
    else:
        status["failed"] = 1
        status["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": _JOB_FAILED,
                "message": "the runner failed",
                "lastTransitionTime": end,
            }
        ]
    return {"metadata": {"name": LOCAL_JOB}, "status": status}


def _pod(start: str, message: str | None, code: int | None) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"running": {"startedAt": start}}
        if code is None
        else {"terminated": {"exitCode": code, "message": message or "", "reason": "Error"}}
    )
    return {
        "metadata": {"name": f"{LOCAL_JOB}-pod", "creationTimestamp": start},
        "status": {
            "phase": "Running" if code is None else ("Succeeded" if code == 0 else "Failed"),
            "containerStatuses": [{"name": CONTAINER, "state": state}],
        },
    }


def started_status(run: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The status of a run whose runner has just started."""
    return derive_status(run, _job(now, None, None), [_pod(now, None, None)], now)


def ended_status(
    run: Mapping[str, Any], summary: str | None, exit_code: int, start: str, end: str
) -> dict[str, Any]:
    """The status of a run whose runner ended with `exit_code`, leaving `summary` (its
    termination message): what the run controller writes for a Job and pod that ended so."""
    if exit_code < 0:
        exit_code = 128 - exit_code  # killed by a signal: the code a container reports
    if exit_code == 0 and parse_summary(summary) is None:
        exit_code = 1  # (the runner always leaves one; without it nothing says what it did)
    job = _job(start, end, exit_code)
    return derive_status(run, job, [_pod(start, summary, exit_code)], end)


def _seconds(value: float) -> str:
    return f"{value:g}"


def runner_args(
    start: Start,
    notebook: str,
    folder: str,
    parameters_file: str | None,
    upstream_file: str | None,
    termination_file: str,
    secrets: Mapping[str, str],
    *,
    kernel: str | None = None,
    cell_timeout: float | None = None,
    timeout: float | None = None,
) -> list[str]:
    """`kubemill run`'s arguments for a run, as the operator's Job passes them
    (operator/jobs.py, _runner_args), with local files in place of the mounted ConfigMaps.
    spec.timeout is the runner's own limit here: there is no pod start-up to leave time for.
    `kernel`, `cell_timeout` and `timeout` (the command line's, in seconds) replace the
    spec's; InvalidSpec for a spec's duration that is not one."""
    spec = start.run["spec"]
    args = ["run", notebook, folder, "--termination-message-path", termination_file]
    if parameters_file is not None:
        args += ["--parameters-json-file", parameters_file]
    if upstream_file is not None:
        args += ["--upstream-file", upstream_file]
    kernel = kernel or spec.get("kernel")
    if kernel:
        args.append(f"--kernel={kernel}")
    if cell_timeout is None and spec.get("cellTimeout"):
        cell_timeout = parse_duration(spec["cellTimeout"], "cellTimeout")
    if cell_timeout is not None:
        args += ["--cell-timeout", _seconds(cell_timeout)]
    if timeout is None and spec.get("timeout"):
        timeout = parse_duration(spec["timeout"], "timeout")
    if timeout is not None:
        args += ["--timeout", _seconds(timeout)]
    if spec.get("allowUnknownParameters"):
        args.append("--allow-unknown-parameters")
    if spec.get("html"):
        args.append("--html")
    for item in spec.get("parametersFrom") or []:
        name = item.get("name")
        if item.get("secretKeyRef") is not None and name in secrets:
            args += ["--secret-param", f"{name}={secrets[name]}"]
    return args


#: The pod's own fields a local run can stand in for (spec.env's fieldRef).
_FIELDS = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}


def run_environment(run: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment for a local run, as the operator and the kubelet make it in
    the pod: this shell's (less any kubemill run identity it carries, say inside a pod; the
    viewer settings stay), the run's identity for its lineage, then spec.env with Kubernetes'
    `$(VAR)` expansion. A value from a Secret or a ConfigMap is this shell's variable of that
    name; InvalidSpec when the shell has none, or for a field a laptop has no stand-in for.
    spec.envFrom adds nothing: the shell's environment stands in for it."""
    meta = run["metadata"]
    kept = (ENV_VIEWER_URL, ENV_VIEWER_ROOT)
    env = {k: v for k, v in environ.items() if not k.startswith("KUBEMILL_") or k in kept}
    env[ENV_RUN_IDENTITY["run"]] = str(meta["name"])
    env[ENV_RUN_IDENTITY["runUid"]] = str(meta["uid"])
    env[ENV_RUN_IDENTITY["namespace"]] = str(meta["namespace"])
    labels = meta.get("labels") or {}
    for key, label in (("workflow", LABEL_WORKFLOW), ("step", LABEL_STEP)):
        if labels.get(label):
            env[ENV_RUN_IDENTITY[key]] = str(labels[label])
    for index, item in enumerate(run["spec"].get("env") or []):
        name, source = str(item.get("name")), item.get("valueFrom")
        where = f"spec.env[{index}] ({name})"
        if source is None:
            env[name] = expand(str(item.get("value") or ""), env)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            if name not in environ:
                kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
                raise InvalidSpec(
                    f"{where} takes its value from a {kind}, which a local run cannot read; "
                    f"export {name} in this shell to give it one"
                )
            env[name] = environ[name]
        elif (source.get("fieldRef") or {}).get("fieldPath") in _FIELDS:
            env[name] = str(meta[_FIELDS[source["fieldRef"]["fieldPath"]]])
        else:
            raise InvalidSpec(
                f"{where} takes its value from the pod ({', '.join(sorted(source))}), which a "
                "local run does not have; give the step a plain value to run it here"
            )
    return env


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of an env value: `$(VAR)` is an earlier variable's value (a
    reference to none stays as written), `$$` is `$`."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and value.find(")", i + 2) != -1:
            end = value.find(")", i + 2)
            out.append(env.get(value[i + 2 : end], value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parameters_text(start: Start) -> str | None:
    """The run's parameters as the operator passes them (spec's and resolved values), as the
    JSON text of --parameters-json-file; None without parameters."""
    values = run_parameters(start.run["spec"], start.resolution)
    return json.dumps(values, ensure_ascii=False) if values else None


def upstream_text(start: Start) -> str | None:
    """The runner's --upstream-file, None for a run that takes nothing from others."""
    if start.resolution.upstream is None:
        return None
    return json.dumps(start.resolution.upstream, ensure_ascii=False)
