"""`kubemill image check`: does an image have what kubemill needs to run notebooks in it?

The checks (kubemill.runner.imagecheck) run inside the image, as a run would: in the cluster, a
pod with the runner's security context (uid 10001, read-only root, /tmp an emptyDir) runs the
image's `python3` on the checks' source, which needs nothing but the standard library, so an
image without kubemill says so instead of failing to start. `--here` runs them in this Python (a
Dockerfile's `RUN kubemill image check --here` fails the build early), and `--script` prints
them for any other runtime (`kubemill image check --script | docker run -i IMAGE python3 -`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import sys
import time
import uuid
from typing import Any, TextIO

from kubemill.runner import __version__, imagecheck

from .schedule import UsageError, usage_errors

__all__ = ["declare_image"]

#: Exit codes: 0 everything is there, 1 something is missing (or the check could not run).
MISSING = 1
CONTAINER = "check"


def declare_image(parser: argparse.ArgumentParser) -> None:
    parser.description = "Check a runner image against kubemill's runtime-image contract."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="say what an image lacks to run notebooks, one line each",
        description="Run kubemill's image checks inside IMAGE, in a pod like a run's (needs "
        "rights to create pods and read their logs in the namespace), or --here, or print them "
        "with --script for another runtime. Exit code 1 when anything is missing.",
    )
    check.set_defaults(handler=usage_errors(cmd_check))
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("image", nargs="?", help="the image, as a NotebookRun's spec.image names it")
    where.add_argument("--here", action="store_true", help="check this Python environment")
    where.add_argument("--script", action="store_true", help="print the checks' Python source")
    check.add_argument(
        "--kernel", default="python3", help="the kernel runs will name (default python3)"
    )
    check.add_argument("-n", "--namespace", help="where the pod runs (default: kubeconfig's)")
    check.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    check.add_argument("--context", help="kubeconfig context (default: the current one)")
    check.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the pod, its image pull included (default 300)",
    )


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    if args.script:
        out.write(inspect.getsource(imagecheck))
        return 0
    if args.here:
        found = imagecheck.check(args.kernel, __version__)
        out.write(imagecheck.report(found))
        return MISSING if any(status == "missing" for status, _ in found) else 0
    return _in_cluster(args, out)


def check_pod(image: str, kernel: str, name: str) -> dict[str, Any]:
    """The pod that runs the checks in `image`, with a run's security context and variables."""
    from kubemill.operator.jobs import (
        RUNNER_CONTAINER_SECURITY,
        RUNNER_HOME,
        RUNNER_POD_SECURITY,
        literal,
    )

    command = ["python3", "-c", inspect.getsource(imagecheck), f"--kernel={kernel}"]
    command.append(f"--version={__version__}")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubemill-image-check"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": copy.deepcopy(RUNNER_POD_SECURITY),
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "command": [literal(part) for part in command],
                    "env": [{"name": k, "value": v} for k, v in RUNNER_HOME.items()],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "securityContext": copy.deepcopy(RUNNER_CONTAINER_SECURITY),
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


#: Waiting reasons after which the container will not start by itself.
_STUCK = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


def _outcome(pod: Any) -> tuple[str, str] | None:
    """('done', '') once the container ended; ('stuck', why) when it never will; else None."""
    for state in (pod.status.container_statuses or []) if pod.status else []:
        if state.state and state.state.terminated:
            return ("done", "")
        waiting = state.state.waiting if state.state else None
        if waiting and waiting.reason in _STUCK:
            return ("stuck", f"{waiting.reason}: {waiting.message or ''}".rstrip(": "))
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return ("done", "")
    return None


def _in_cluster(args: argparse.Namespace, out: TextIO) -> int:
    from kubernetes import client

    from kubemill.operator.client import NoCluster, connect, describe

    try:
        connection = connect(args.kubeconfig, args.context)
    except NoCluster as exc:
        raise UsageError(str(exc)) from None
    namespace = args.namespace or connection.namespace
    core = client.CoreV1Api(client.ApiClient(connection.configuration))
    name = f"kubemill-image-check-{uuid.uuid4().hex[:8]}"
    created = False
    try:
        core.create_namespaced_pod(namespace, check_pod(args.image, args.kernel, name))
        created = True
        return _await_check(core, namespace, name, args, out)
    except Exception as exc:
        # A refusal (RBAC: create, get, list and watch pods, get pods/log), or no API server.
        problem = describe(exc)
        if problem is None:
            raise
        print(f"kubemill image check: pod {namespace}/{name}: {problem}", file=sys.stderr)
        return MISSING
    finally:
        if created:
            # Gone already, or no right to delete it: it ended anyway.
            with contextlib.suppress(Exception):
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def _await_check(
    core: Any, namespace: str, name: str, args: argparse.Namespace, out: TextIO
) -> int:
    from kubernetes import watch

    deadline = time.monotonic() + args.timeout
    outcome = None
    while outcome is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(
                f"kubemill image check: pod {namespace}/{name} did not finish in "
                f"{args.timeout:.0f} s; see kubectl describe pod",
                file=sys.stderr,
            )
            return MISSING
        for event in watch.Watch().stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(remaining)),
        ):
            outcome = _outcome(event["object"])
            if outcome is not None:
                break
    state, why = outcome
    if state == "stuck":
        out.write(f"missing: a container of {args.image} could not start: {why}\n")
        return MISSING
    pod = core.read_namespaced_pod(name, namespace)
    statuses = pod.status.container_statuses or []
    terminated = statuses[0].state.terminated if statuses and statuses[0].state else None
    # Unparsed: the client would turn the bytes into their repr (b"...").
    response = core.read_namespaced_pod_log(
        name, namespace, container=CONTAINER, _preload_content=False
    )
    log = response.data.decode(errors="replace")
    if terminated is None:
        said = pod.status.message or pod.status.reason or pod.status.phase
        out.write(f"missing: a container of {args.image} that runs (the pod says: {said})\n")
        return MISSING
    if terminated.reason == "StartError" or (not log.strip() and terminated.exit_code):
        said = (terminated.message or terminated.reason or "").strip()
        out.write(
            f"missing: python3 on the image's PATH (the runtime said: {said}): a runner "
            "image needs a Python >= 3.11 with kubemill installed\n"
        )
        return MISSING
    out.write(log if log.endswith("\n") or not log else log + "\n")
    return MISSING if terminated.exit_code else 0
