"""`make demo`: kubemill the way a cluster user meets it.

Brings up the local sandbox (a real control plane built from the Kubernetes Go modules, a node
agent that runs pods as local processes, and S3), installs crds/ and deploy/ with kubectl (the
operator runs as a pod of its Deployment), applies examples/daily-report-run.yaml, waits for it
with `kubectl wait`, and prints its status, results and where the output is. Then it previews
and applies examples/daily-report-schedule.yaml, triggers it by hand, waits for a run on its
own slot, and suspends it. The sandbox keeps running afterwards for kubectl; `make sandbox-down`
stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: its operator/ must not shadow the stdlib

from tests.s3server import WRITER_KEY  # noqa: E402

NAMESPACE = "kubemill-demo"
RUN = "daily-report"
SCHEDULE = "report"
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))
SANDBOX = Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill")) / "sandbox"
OUT = ROOT / "out" / "demo"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    step("starting the sandbox (control plane, node agent, S3)")
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "sandbox.py"), "up"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    state = json.loads((SANDBOX / "state.json").read_text())
    s3 = state["s3"]
    env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}

    def kubectl(*args: str, show: bool = True, stdin: str | None = None) -> str:
        if show:
            print("$ kubectl " + " ".join(args), flush=True)
        done = subprocess.run(
            [state["kubectl"], *args], env=env, input=stdin, text=True, capture_output=True
        )
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    import boto3

    admin = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name="us-east-1",
    )
    for bucket in ("notebooks", "results"):
        with contextlib.suppress(admin.exceptions.BucketAlreadyOwnedByYou):
            admin.create_bucket(Bucket=bucket)  # already there on a second `make demo`
    admin.upload_file(
        str(ROOT / "examples" / "daily_report.ipynb"), "notebooks", "daily_report.ipynb"
    )

    step("installing the CRDs and the operator")
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl(
        "wait", "--for=condition=Established",
        "crd/notebookruns.kubemill.dev", "crd/notebookschedules.kubemill.dev",
    )  # fmt: skip
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy" / "base"))
    settings = {
        "data": {
            "KUBEMILL_S3_ENDPOINT_URL": s3["endpoint_url"],
            "KUBEMILL_OUTPUT_PREFIX": "s3://results/",
        }
    }
    kubectl(
        "-n", "kubemill-system", "patch", "configmap", "kubemill-operator", "--type", "merge",
        "-p", json.dumps(settings),
    )  # fmt: skip
    kubectl("-n", "kubemill-system", "rollout", "restart", "deployment/kubemill-operator")
    kubectl("-n", "kubemill-system", "rollout", "status", "deployment/kubemill-operator")

    step(f"running {RUN} in namespace {NAMESPACE}")
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
    kubectl(
        "-n", NAMESPACE, "wait", "--for=condition=Succeeded", "--timeout=300s",
        f"nbrun/{RUN}",
    )  # fmt: skip

    step("the result")
    print(kubectl("-n", NAMESPACE, "get", "nbrun", RUN, "-o", "wide"))
    run = json.loads(kubectl("-n", NAMESPACE, "get", "nbrun", RUN, "-o", "json", show=False))
    status = run["status"]
    print(f"phase      {status['phase']} ({status['reason']}) in {status.get('duration')}")
    print(f"output     {status['outputUrl']}")
    for name, value in status.get("results", {}).items():
        print(f"recorded   {name} = {json.dumps(value)}")
    print(kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                  f"involvedObject.name={RUN}", show=False))  # fmt: skip

    OUT.mkdir(parents=True, exist_ok=True)
    prefix = status["outputUrl"].removeprefix("s3://results/").rsplit("/", 1)[0]
    for name in ("output.ipynb", "output.html", "results.json", "run.json"):
        admin.download_file("results", f"{prefix}/{name}", str(OUT / name))
    print(f"copied the run folder to {OUT}/ (open output.html in a browser)")

    step("a NotebookSchedule: preview, apply, trigger, a run on its own slot")
    manifest = str(ROOT / "examples" / "daily-report-schedule.yaml")

    def kubemill(*args: str) -> str:
        print("$ kubemill " + " ".join(args), flush=True)
        done = subprocess.run(
            [KUBEMILL, *args], env=env, text=True, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"kubemill {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    print(kubemill("schedule", "preview", "-f", manifest, "--count", "3"))
    kubectl("-n", NAMESPACE, "delete", "nbsched", SCHEDULE, "--ignore-not-found", "--wait")
    kubectl("-n", NAMESPACE, "apply", "-f", manifest)
    triggered = kubemill("trigger", SCHEDULE, "-n", NAMESPACE).split()[0]
    print(triggered)
    kubectl("-n", NAMESPACE, "wait", "--for=condition=Succeeded", "--timeout=300s", triggered)
    kubectl(
        "-n", NAMESPACE, "wait", "--for=jsonpath={.status.lastScheduleTime}", "--timeout=120s",
        f"nbsched/{SCHEDULE}",
    )  # fmt: skip
    scheduled = kubectl(
        "-n", NAMESPACE, "get", "nbrun", "-o", "name",
        "-l", f"kubemill.dev/schedule={SCHEDULE},kubemill.dev/origin=schedule",
    ).split()[0]  # fmt: skip
    kubectl("-n", NAMESPACE, "wait", "--for=condition=Succeeded", "--timeout=300s", scheduled)
    print(kubectl("-n", NAMESPACE, "get", "nbsched", SCHEDULE, "-o", "wide"))
    print(kubectl("-n", NAMESPACE, "get", "nbrun", "-l", f"kubemill.dev/schedule={SCHEDULE}",
                  "-L", "kubemill.dev/origin"))  # fmt: skip
    kubectl("-n", NAMESPACE, "patch", "nbsched", SCHEDULE, "--type=merge",
            "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    print(f"(suspended; resume with kubectl -n {NAMESPACE} patch nbsched {SCHEDULE} "
          "--type=merge -p '{\"spec\": {\"suspend\": false}}')")  # fmt: skip
    print(f"\nexplore:  export KUBECONFIG={state['kubeconfig']}")
    print(f"          export PATH={Path(state['kubectl']).parent}:$PATH")
    print(f"          kubectl -n {NAMESPACE} describe nbrun {RUN}")
    print("stop:     make sandbox-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
