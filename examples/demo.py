"""`make demo`: kubemill the way a cluster user meets it.

Brings up the local sandbox (a real control plane built from the Kubernetes Go modules, a node
agent playing the kubelet, and S3), installs crds/ and deploy/ with kubectl (the operator runs
as a pod of its Deployment), applies examples/daily-report-run.yaml, watches it until it ends
either way, and prints its status, results and where the output is. Then it previews and
applies examples/daily-report-schedule.yaml, triggers it by hand, waits for a run on its own
slot, and suspends it. Last, the example workflow examples/sales-workflow.yaml (extract, a
transform per region with `forEach`, a report, and a test step that checks the report's totals
against the raw data): first on this machine with `kubemill workflow run`, its notebooks read
from the sandbox's S3 at the URLs the cluster uses (as a user tries a workflow before applying
it), then applied to the cluster; each prints its step table, and the two reports' totals must
agree. The sandbox keeps running afterwards for kubectl; `make sandbox-down` stops it.

Every stage runs inside a `Step`: when anything in it fails (a command exits non-zero, a wait
times out, an exception), the demo prints what failed, the state and Events of the objects the
step was about, the run's pods and their logs, and the operator's pods and logs, then exits
non-zero naming the step. A failure in the sandbox then explains itself without a second run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from kubemill.cli.workflow_report import table_lines
from kubemill.operator.meta import LABEL_ORIGIN, LABEL_RUN, LABEL_SCHEDULE
from kubemill_testenv.s3server import READER_KEY, WRITER_KEY

ROOT = Path(__file__).resolve().parents[1]

NAMESPACE = "kubemill-demo"
RUN = "daily-report"
SCHEDULE = "report"
WORKFLOW = "sales"
WORKFLOW_MANIFEST = ROOT / "examples" / "sales-workflow.yaml"
OPERATOR_NAMESPACE = "kubemill-system"
OPERATOR = "deployment/kubemill-operator"
OPERATOR_PODS = "app.kubernetes.io/name=kubemill-operator"
VIEWER = "deployment/kubemill-viewer"
# The sandbox's pods share this machine's network: the viewer's pod, bound to loopback, is
# reached from here as `kubemill view` would be (no login: loopback only). On a real cluster,
# `kubectl -n kubemill-system port-forward deployment/kubemill-viewer 8866` does the same.
VIEWER_URL = "http://127.0.0.1:8866/"
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))
SANDBOX = Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill")) / "sandbox"
OUT = ROOT / "out" / "demo"
#: Longer than the Deployment's progressDeadlineSeconds (120) plus the old pod's shutdown (up to
#: its 30 s grace period; the old pod going away counts as progress under Recreate), so that an
#: operator that never becomes Ready is reported by the Deployment controller
#: (ProgressDeadlineExceeded) rather than by this timeout, which only bounds the wait.
ROLLOUT_TIMEOUT = "180s"
#: Lines of each container's log shown when a step fails: enough for a Python traceback.
LOG_LINES = 40


class CommandFailed(Exception):
    """A command of the demo exited non-zero; it keeps what the command said on stderr."""

    def __init__(self, command: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{command} exited with status {returncode}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class Unsuccessful(Exception):
    """Something the demo waited for ended badly or not at all; the message says it all."""


class DemoFailed(Exception):
    """A step failed and its failure has been explained; only the last line is left to say."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


def run(
    argv: Sequence[str],
    *,
    shown: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
) -> str:
    """Run `argv` and return its stdout; a non-zero exit raises `CommandFailed` with the
    command as `shown` (without the long paths) and its stderr, for `explain_failure`."""
    done = subprocess.run(
        list(argv), env=env, input=stdin, text=True, capture_output=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise CommandFailed(shown, done.returncode, done.stderr)
    return done.stdout


@dataclass(frozen=True)
class Cluster:
    """The sandbox's API server as the demo reaches it: its kubectl and kubeconfig."""

    kubectl_path: str
    env: dict[str, str]

    def kubectl(self, *args: str, show: bool = True, stdin: str | None = None) -> str:
        command = "kubectl " + shlex.join(args)
        if show:
            print(f"$ {command}", flush=True)
        return run([self.kubectl_path, *args], shown=command, env=self.env, stdin=stdin)

    def kubemill(self, *args: str) -> str:
        command = "kubemill " + shlex.join(args)
        print(f"$ {command}", flush=True)
        return run([KUBEMILL, *args], shown=command, env=self.env)

    def wait_for_run(self, namespace: str, reference: str, timeout: float = 300) -> None:
        """Wait until the run ends, either way, and raise `Unsuccessful` unless it succeeded.

        `kubectl wait --for=condition=Succeeded` cannot also stop on Failed, so it would sit
        out its whole timeout on a notebook that failed in its first second; a watch of the
        phase stops on both, and a timer ends the watch if neither comes."""
        args = ("-n", namespace, "get", reference, "--watch",
                "-o", 'jsonpath={.status.phase}{"\\n"}')  # fmt: skip
        command = "kubectl " + shlex.join(args)
        print(f"$ {command}   # until Succeeded or Failed, at most {timeout:.0f}s", flush=True)
        with subprocess.Popen(
            [self.kubectl_path, *args], env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ) as watch:  # fmt: skip
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                watch.kill()

            timer = threading.Timer(timeout, expire)
            timer.start()
            try:
                assert watch.stdout is not None
                phases = (line.strip() for line in watch.stdout)
                phase = next((p for p in phases if p in ("Succeeded", "Failed")), None)
            finally:
                timer.cancel()
                watch.kill()
            _, stderr = watch.communicate()
        if phase == "Succeeded":
            return
        if phase == "Failed":
            raise Unsuccessful(f"{reference} ended Failed (its status and pods below say why)")
        if expired.is_set():
            raise Unsuccessful(f"{reference} had not finished after {timeout:.0f}s")
        raise CommandFailed(command, watch.returncode, stderr)

    def ask(self, *args: str) -> str:
        """kubectl for diagnostics: bounded in time, so that a dead API server cannot hang the
        explanation of a failure (which is most likely when the failure is the API server)."""
        command = "kubectl " + shlex.join(args)
        argv = [self.kubectl_path, "--request-timeout=10s", *args]
        return run(argv, shown=command, env=self.env, timeout=30).rstrip()

    def ask_json(self, *args: str) -> Any:
        return json.loads(self.ask(*args, "-o", "json"))


@dataclass(frozen=True)
class Subject:
    """An object a step acts on, described (status, Events, a run's pods) if the step fails."""

    resource: str  # as kubectl names it: nbrun, deployment, notebookrun.kubemill.dev
    name: str
    namespace: str

    @classmethod
    def parse(cls, reference: str, namespace: str) -> Subject:
        """From kubectl's `kind/name` (what `-o name` and `kubemill trigger` print)."""
        resource, _, name = reference.partition("/")
        return cls(resource, name, namespace)

    @property
    def is_run(self) -> bool:
        return self.resource.split(".")[0] in ("nbrun", "nbruns", "notebookrun", "notebookruns")

    def __str__(self) -> str:
        return f"{self.resource}/{self.name} (namespace {self.namespace})"


@dataclass(frozen=True)
class Failure:
    """What `explain_failure` needs: the step, the error, and where to look."""

    step: str
    error: BaseException
    cluster: Cluster | None  # None until the sandbox is up: nothing to ask then
    subjects: tuple[Subject, ...]


class Step:
    """One stage of the demo. Used as `with Step(title, cluster, *subjects) as step:`; objects
    named only once the step is under way (a triggered run) are added with `step.about(...)`.
    If the body fails, the failure is explained and `DemoFailed` raised in its place."""

    def __init__(self, title: str, cluster: Cluster | None, *subjects: Subject) -> None:
        self.title = title
        self.cluster = cluster
        self.subjects = list(subjects)

    def about(self, subject: Subject) -> None:
        self.subjects.append(subject)

    def __enter__(self) -> Step:
        print(f"\n== {self.title}", flush=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        # A Ctrl-C during a long wait is explained too: that is usually why it was pressed.
        if error is None or not isinstance(error, Exception | KeyboardInterrupt):
            return
        if isinstance(error, DemoFailed):
            return
        explain_failure(Failure(self.title, error, self.cluster, tuple(self.subjects)))
        raise DemoFailed(self.title) from error


Probe = tuple[str, Callable[[], str]]


def explain_failure(failure: Failure) -> None:
    """Print why a step failed. It never raises: it runs while an error is in flight, and each
    probe that cannot answer (API server down, pod gone) says so inline in place of its answer,
    so one dead end does not hide the rest."""
    print(f"\n!! step failed: {failure.step}", flush=True)
    for heading, probe in probes(failure):
        print(f"\n--- {heading}\n{best_effort(probe)}", flush=True)


def best_effort(probe: Callable[..., str], *args: Any) -> str:
    """`probe(*args)`, or why it has no answer."""
    try:
        return probe(*args)
    except CommandFailed as exc:
        return f"({exc.command}: exit status {exc.returncode}: {exc.stderr.strip()})"
    except Exception as exc:  # a diagnostic must never replace the failure it explains
        return f"(could not find out: {type(exc).__name__}: {exc})"


def probes(failure: Failure) -> list[Probe]:
    """What to look at, in the order a person would: the error, the objects the step was
    about (for a run, its Job's pods too), then the operator, which acts on all of them."""
    found: list[Probe] = [("what failed", partial(describe_error, failure.error))]
    cluster = failure.cluster
    if cluster is None:  # the sandbox did not come up: its own log says why
        found.append((f"end of {SANDBOX / 'sandbox.log'}", sandbox_log))
        return found
    for subject in failure.subjects:
        found.append((f"status of {subject}", partial(object_status, cluster, subject)))
        found.append((f"events of {subject}", partial(events, cluster, subject)))
        if subject.is_run:
            selector = f"{LABEL_RUN}={subject.name}"
            found.append(
                (f"pods of {subject}", partial(describe_pods, cluster, subject.namespace, selector))
            )
    operator = Subject.parse(OPERATOR, OPERATOR_NAMESPACE)
    found.append((f"status of {operator}", partial(object_status, cluster, operator)))
    # The whole namespace's: a ReplicaSet that cannot create the pod (admission, quota) says
    # so on itself, under a name the demo does not know.
    found.append(
        (
            f"recent events in {OPERATOR_NAMESPACE}",
            partial(recent_events, cluster, OPERATOR_NAMESPACE),
        )
    )
    found.append(
        ("the operator's pods", partial(describe_pods, cluster, OPERATOR_NAMESPACE, OPERATOR_PODS))
    )
    return found


def describe_error(error: BaseException) -> str:
    if isinstance(error, CommandFailed):
        return f"$ {error.command}\nexit status {error.returncode}\n{error.stderr.rstrip()}"
    if isinstance(error, Unsuccessful):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return "".join(traceback.format_exception(error, limit=-3)).rstrip()


def object_status(cluster: Cluster, subject: Subject) -> str:
    """The object's status as YAML, the part of `kubectl get -o yaml` that says what happened."""
    body = cluster.ask_json("-n", subject.namespace, "get", subject.resource, subject.name)
    status = body.get("status") or {}
    return yaml.safe_dump({"status": status}, sort_keys=False).rstrip()


def events(cluster: Cluster, subject: Subject) -> str:
    """The subject's Events, by uid where it still exists: a run deleted and applied again by
    a second `make demo` keeps its name, and the old run's Events would read as this one's."""
    selector = f"involvedObject.name={subject.name}"
    try:
        uid = cluster.ask(
            "-n", subject.namespace, "get", subject.resource, subject.name,
            "-o", "jsonpath={.metadata.uid}",
        )  # fmt: skip
    except CommandFailed:
        uid = ""  # gone: the Events of whatever had its name are all there is
    if uid:
        selector += f",involvedObject.uid={uid}"
    return events_matching(cluster, subject.namespace, selector)


def events_matching(cluster: Cluster, namespace: str, selector: str) -> str:
    # Sorted by creationTimestamp, not lastTimestamp: events.k8s.io Events leave that empty.
    sort = "--sort-by=.metadata.creationTimestamp"
    found = cluster.ask("-n", namespace, "get", "events", "--field-selector", selector, sort)
    return found or "(no events)"


def recent_events(cluster: Cluster, namespace: str) -> str:
    sort = "--sort-by=.metadata.creationTimestamp"
    found = cluster.ask("-n", namespace, "get", "events", sort).splitlines()
    return "\n".join(found[:1] + found[1:][-20:]) or "(no events)"


def sandbox_log() -> str:
    lines = (SANDBOX / "sandbox.log").read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_LINES:]) or "(empty)"


def logs(cluster: Cluster, namespace: str, pod: str, container: str, *more: str) -> str:
    tail = f"--tail={LOG_LINES}"
    return cluster.ask("-n", namespace, "logs", pod, "-c", container, tail, *more) or "(empty)"


def describe_pods(cluster: Cluster, namespace: str, selector: str) -> str:
    """Each selected pod: a `get -o wide` line, its containers' states, its Events and the end
    of its log (and of the previous container's, after a restart: that is the crash)."""
    listed = cluster.ask("-n", namespace, "get", "pods", "-l", selector, "-o", "wide")
    blocks = [listed or f"(no pods with {selector})"]
    for pod in cluster.ask_json("-n", namespace, "get", "pods", "-l", selector)["items"]:
        name = pod["metadata"]["name"]
        blocks.append(f"\npod {name}:\n" + "\n".join(container_states(pod)))
        blocks.append(
            f"events of pod {name}:\n"
            + best_effort(events, cluster, Subject("pod", name, namespace))
        )
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            container = status["name"]
            blocks.append(
                f"log of {name}/{container} (last {LOG_LINES} lines):\n"
                + best_effort(logs, cluster, namespace, name, container)
            )
            if status.get("restartCount", 0) > 0:
                blocks.append(
                    f"log of {name}/{container} before its last restart:\n"
                    + best_effort(logs, cluster, namespace, name, container, "--previous")
                )
    return "\n".join(blocks)


def container_states(pod: dict[str, Any]) -> list[str]:
    """One line per container: its state with reason, exit code and message, its restarts,
    and how the previous container ended (where a crash-looping container's cause shows)."""
    status = pod.get("status") or {}
    phase = f"  phase {status.get('phase')}"
    if status.get("reason"):
        phase += f" ({status['reason']}: {status.get('message', '')})"
    lines = [phase]
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in containers:
        line = f"  container {container['name']}: ready={container.get('ready')}"
        line += f" restarts={container.get('restartCount', 0)}"
        for state, detail in (container.get("state") or {}).items():
            line += f" {state} {_state_detail(detail)}"
        last = (container.get("lastState") or {}).get("terminated")
        if last:
            line += f"; before: terminated {_state_detail(last)}"
        lines.append(line)
    return lines


def _state_detail(detail: dict[str, Any]) -> str:
    keys = ("reason", "exitCode", "signal", "message", "startedAt", "finishedAt")
    return " ".join(f"{key}={detail[key]!r}" for key in keys if detail.get(key) not in (None, ""))


def start_sandbox() -> tuple[Cluster, dict[str, Any]]:
    """Bring up (or reuse) the sandbox; its state file says where everything is."""
    sandbox = [sys.executable, "-P", "-m", "kubemill_testenv.sandbox", "up"]
    run(sandbox, shown="python -P -m kubemill_testenv.sandbox up")
    state = json.loads((SANDBOX / "state.json").read_text())
    env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
    return Cluster(state["kubectl"], env), state


def s3_admin(s3: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name="us-east-1",
    )


def run_workflow_locally(s3: dict[str, str]) -> dict[str, Any]:
    """`kubemill workflow run` on the manifest the cluster gets, with the runs' identity (the
    writer's S3 key, as in the namespace's Secret) and the sandbox's endpoint; returns the
    workflow as its state file holds it. Its lines go straight to the terminal as runs end."""
    output = OUT / "sales-local"
    shutil.rmtree(output, ignore_errors=True)  # a fresh run, not a resumed one
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=s3["endpoint_url"],
        AWS_ACCESS_KEY_ID=WRITER_KEY[0],
        AWS_SECRET_ACCESS_KEY=WRITER_KEY[1],
        AWS_DEFAULT_REGION="us-east-1",
    )
    argv = ["workflow", "run", str(WORKFLOW_MANIFEST.relative_to(ROOT)), "--output-dir",
            str(output.relative_to(ROOT))]  # fmt: skip
    print(f"$ kubemill {shlex.join(argv)}", flush=True)
    done = subprocess.run([KUBEMILL, *argv], env=env, cwd=ROOT, timeout=600, check=False)
    state = output / "default" / f"{WORKFLOW}.workflow.json"
    if not state.exists():
        raise CommandFailed(f"kubemill {shlex.join(argv)}", done.returncode, "(said above)")
    workflow: dict[str, Any] = json.loads(state.read_text())["workflow"]
    print("\n".join(table_lines(workflow)))
    if done.returncode != 0:
        raise Unsuccessful(
            f"the workflow did not succeed here (exit status {done.returncode}), so it is not "
            f"applied to the cluster; each run's log is in {output / 'default' / WORKFLOW}.logs/"
        )
    print(f"grand total  {json.dumps(report_totals(workflow))}")
    print(f"report       {output / 'default' / f'{WORKFLOW}-report' / 'output.html'}")
    return workflow


def report_totals(workflow: dict[str, Any]) -> Any:
    """The grand total the report step recorded, from the workflow's step table."""
    entries = (workflow.get("status") or {}).get("steps") or []
    report: dict[str, Any] = next((e for e in entries if e["name"] == "report"), {})
    return (report.get("results") or {}).get("grand_total")


def main() -> int:
    try:
        demo()
    except DemoFailed as failed:
        print(
            f"\nmake demo: the step {failed.step!r} failed (explained above); sandbox logs: "
            f"{SANDBOX / 'sandbox.log'} and {SANDBOX / 'cluster' / 'logs'}/",
            file=sys.stderr,
        )
        return 1
    return 0


def demo() -> None:
    with Step("starting the sandbox (control plane, node agent, S3)", None):
        cluster, state = start_sandbox()
    kubectl = cluster.kubectl

    with Step("putting the notebook into S3", cluster):
        admin = s3_admin(state["s3"])
        for bucket in ("notebooks", "results"):
            with contextlib.suppress(admin.exceptions.BucketAlreadyOwnedByYou):
                admin.create_bucket(Bucket=bucket)  # already there on a second `make demo`
        for notebook in ("daily_report.ipynb", "check_report.ipynb"):
            admin.upload_file(str(ROOT / "examples" / notebook), "notebooks", notebook)
        # The sales workflow's, at the URLs its manifest names: s3://notebooks/sales/<name>.
        for path in sorted((ROOT / "examples" / "sales").glob("*.ipynb")):
            admin.upload_file(str(path), "notebooks", f"sales/{path.name}")
        # The README's sample for the example runner images, for a NotebookRun to try them with.
        chart = ROOT / "examples" / "images" / "revenue_chart.ipynb"
        admin.upload_file(str(chart), "notebooks", chart.name)

    with Step("installing the CRDs, the operator and the viewer", cluster):
        kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        kubectl(
            "wait", "--for=condition=Established",
            "crd/notebookruns.kubemill.dev", "crd/notebookschedules.kubemill.dev",
            "crd/notebookworkflows.kubemill.dev",
        )  # fmt: skip
        # The operator (deploy/base) and the viewer's component (deploy/components/viewer).
        overlay = ROOT / "deploy" / "overlays" / "viewer"
        kubectl("apply", "--server-side", "--force-conflicts", "-k", str(overlay))
        settings = {
            "data": {
                "KUBEMILL_S3_ENDPOINT_URL": state["s3"]["endpoint_url"],
                "KUBEMILL_OUTPUT_PREFIX": "s3://results/",
                # Each run's status.viewerUrl, the VIEWER column, the runner's log and summary.
                "KUBEMILL_VIEWER_URL": VIEWER_URL,
                "KUBEMILL_VIEWER_ROOT": "s3://results/",
            }
        }
        kubectl(
            "-n", OPERATOR_NAMESPACE, "patch", "configmap", "kubemill-operator", "--type",
            "merge", "-p", json.dumps(settings),
        )  # fmt: skip
        viewer = {
            "data": {
                "KUBEMILL_VIEWER_ROOT": "s3://results/",
                "AWS_ENDPOINT_URL": state["s3"]["endpoint_url"],
                "AWS_REGION": "us-east-1",
                "KUBEMILL_VIEWER_AUTH": "",
                "KUBEMILL_VIEWER_LISTEN": "127.0.0.1",
            }
        }
        kubectl(
            "-n", OPERATOR_NAMESPACE, "patch", "configmap", "kubemill-viewer", "--type",
            "merge", "-p", json.dumps(viewer),
        )  # fmt: skip
        # The viewer reads with the read-only key: it never writes to S3.
        secret = kubectl(
            "-n", OPERATOR_NAMESPACE, "create", "secret", "generic", "kubemill-viewer-s3",
            f"--from-literal=AWS_ACCESS_KEY_ID={READER_KEY[0]}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={READER_KEY[1]}",
            "--dry-run=client", "-o", "yaml", show=False,
        )  # fmt: skip
        kubectl("apply", "-f", "-", show=False, stdin=secret)
        for deployment in (OPERATOR, VIEWER):
            kubectl("-n", OPERATOR_NAMESPACE, "rollout", "restart", deployment)
        # Bounded: a pod that never becomes Ready (crash loop, failing probe) fails here, with
        # its logs, instead of as a NotebookRun that times out minutes later.
        for deployment in (OPERATOR, VIEWER):
            kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", deployment,
                    f"--timeout={ROLLOUT_TIMEOUT}")  # fmt: skip

    the_run = Subject("nbrun", RUN, NAMESPACE)
    with Step(f"running {RUN} in namespace {NAMESPACE}", cluster, the_run):
        kubectl(
            "apply", "-f", "-", show=False,
            stdin=kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml",
                          show=False),
        )  # fmt: skip
        secret = kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", "kubemill-s3",
            f"--from-literal=AWS_ACCESS_KEY_ID={WRITER_KEY[0]}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={WRITER_KEY[1]}",
            "--from-literal=AWS_DEFAULT_REGION=us-east-1", "--dry-run=client", "-o", "yaml",
            show=False,
        )  # fmt: skip
        kubectl("apply", "-f", "-", show=False, stdin=secret)
        kubectl("-n", NAMESPACE, "delete", "nbrun", RUN, "--ignore-not-found", "--wait")
        kubectl("-n", NAMESPACE, "apply", "-f", str(ROOT / "examples" / "daily-report-run.yaml"))
        cluster.wait_for_run(NAMESPACE, f"nbrun/{RUN}")

    with Step("the result", cluster, the_run):
        print(kubectl("-n", NAMESPACE, "get", "nbrun", RUN, "-o", "wide"))
        body = json.loads(kubectl("-n", NAMESPACE, "get", "nbrun", RUN, "-o", "json", show=False))
        status = body["status"]
        print(f"phase      {status['phase']} ({status['reason']}) in {status.get('duration')}")
        print(f"output     {status['outputUrl']}")
        for name, value in status.get("results", {}).items():
            print(f"recorded   {name} = {json.dumps(value)}")
        print(events(cluster, the_run))

        OUT.mkdir(parents=True, exist_ok=True)
        prefix = status["outputUrl"].removeprefix("s3://results/").rsplit("/", 1)[0]
        for name in ("output.ipynb", "output.html", "results.json", "run.json"):
            admin.download_file("results", f"{prefix}/{name}", str(OUT / name))
        print(f"copied the run folder to {OUT}/ (open output.html in a browser)")

    manifest = str(ROOT / "examples" / "daily-report-schedule.yaml")
    with Step("a NotebookSchedule: preview, apply, trigger, a run on its own slot", cluster,
              Subject("nbsched", SCHEDULE, NAMESPACE)) as step:  # fmt: skip
        print(cluster.kubemill("schedule", "preview", "-f", manifest, "--count", "3"))
        kubectl("-n", NAMESPACE, "delete", "nbsched", SCHEDULE, "--ignore-not-found", "--wait")
        kubectl("-n", NAMESPACE, "apply", "-f", manifest)
        triggered = cluster.kubemill("trigger", SCHEDULE, "-n", NAMESPACE).split()[0]
        print(triggered)
        step.about(Subject.parse(triggered, NAMESPACE))
        cluster.wait_for_run(NAMESPACE, triggered)
        kubectl(
            "-n", NAMESPACE, "wait", "--for=jsonpath={.status.lastScheduleTime}",
            "--timeout=120s", f"nbsched/{SCHEDULE}",
        )  # fmt: skip
        scheduled = kubectl(
            "-n", NAMESPACE, "get", "nbrun", "-o", "name",
            "-l", f"{LABEL_SCHEDULE}={SCHEDULE},{LABEL_ORIGIN}=schedule",
        ).split()[0]  # fmt: skip
        step.about(Subject.parse(scheduled, NAMESPACE))
        cluster.wait_for_run(NAMESPACE, scheduled)
        print(kubectl("-n", NAMESPACE, "get", "nbsched", SCHEDULE, "-o", "wide"))
        print(kubectl("-n", NAMESPACE, "get", "nbrun", "-l", f"{LABEL_SCHEDULE}={SCHEDULE}",
                      "-L", LABEL_ORIGIN))  # fmt: skip
        kubectl("-n", NAMESPACE, "patch", "nbsched", SCHEDULE, "--type=merge",
                "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    print(f"(suspended; resume with kubectl -n {NAMESPACE} patch nbsched {SCHEDULE} "
          "--type=merge -p '{\"spec\": {\"suspend\": false}}')")  # fmt: skip

    with Step("the sales workflow on this machine, notebooks from the sandbox's S3", cluster):
        local = run_workflow_locally(state["s3"])

    workflow = Subject("nbwf", WORKFLOW, NAMESPACE)
    with Step("the same workflow on the cluster", cluster, workflow):
        kubectl("-n", NAMESPACE, "delete", "nbwf", WORKFLOW, "--ignore-not-found", "--wait")
        kubectl("-n", NAMESPACE, "apply", "-f", str(WORKFLOW_MANIFEST))
        cluster.wait_for_run(NAMESPACE, f"nbwf/{WORKFLOW}", timeout=600)
        print(kubectl("-n", NAMESPACE, "get", "nbwf", WORKFLOW, "-o", "wide"))
        body = json.loads(kubectl("-n", NAMESPACE, "get", "nbwf", WORKFLOW, "-o", "json",
                                  show=False))  # fmt: skip
        print("\n".join(table_lines(body)))
        print(f"tests        {body['status']['tests']}")
        on_cluster = report_totals(body)
        print(f"grand total  {json.dumps(on_cluster)}")
        if on_cluster is None or on_cluster != report_totals(local):
            raise Unsuccessful(
                f"the cluster's report totals {on_cluster} differ from the local run's "
                f"{report_totals(local)}: the same notebooks and parameters must give the same data"
            )
        print("(the same totals as the local run)")
        print(events(cluster, workflow))
    with Step("every run in the viewer", cluster):
        runs = json.loads(kubectl("-n", NAMESPACE, "get", "nbrun", "-o", "json", show=False))
        for item in sorted(runs["items"], key=lambda r: r["metadata"]["name"]):
            status = item.get("status") or {}
            url = status.get("viewerUrl")
            if not url:
                raise Unsuccessful(f"nbrun/{item['metadata']['name']} has no status.viewerUrl")
            print(f"{item['metadata']['name']:<40} {status.get('phase', ''):<10} {url}")
        print(f"all runs, searchable: {VIEWER_URL}runs")
    print(f"\nexplore:  export KUBECONFIG={state['kubeconfig']}")
    print(f"          export PATH={Path(state['kubectl']).parent}:$PATH")
    print(f"          kubectl -n {NAMESPACE} describe nbrun {RUN}")
    print("stop:     make sandbox-down")


if __name__ == "__main__":
    sys.exit(main())
