"""`kubemill workflow run|retry` with a real kernel: a NotebookWorkflow manifest on one machine,
each step a `kubemill run` process, with the operator's rules, run names and run folders."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
import yaml

from tests.conftest import NOTEBOOKS, kubemill
from tests.integration.helpers import load, start, stop

pytestmark = pytest.mark.integration


def manifest(path: Path, steps: list[dict[str, Any]], final: Sequence[dict[str, Any]] = ()) -> str:
    spec: dict[str, Any] = {"steps": steps}
    if final:
        spec["finally"] = list(final)
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        "metadata": {"name": "sales", "namespace": "analytics"},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def step(name: str, notebook: str, **spec: Any) -> dict[str, Any]:
    extra = {k: spec.pop(k) for k in ("dependsOn", "forEach", "test") if k in spec}
    return {
        "name": name,
        "runTemplate": {"spec": {"notebook": str(NOTEBOOKS / notebook), **spec}},
        **extra,
    }


def ref(parameter: str, step_name: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "stepRef": {"name": step_name, **what}}


def diamond(expected_rows: int) -> list[dict[str, Any]]:
    """extract → by-region (forEach over what extract records) and totals → report; check
    tests extract's output notebook."""
    return [
        step("extract", "workflow_extract.ipynb", parameters={"regions": ["eu", "us", "apac"]}),
        step(
            "by-region",
            "values.ipynb",
            forEach={"parameter": "value", "fromStep": {"name": "extract", "result": "regions"}},
        ),
        step("totals", "values.ipynb", parametersFrom=[ref("value", "extract", result="rows")]),
        step(
            "report",
            "values.ipynb",
            dependsOn=["totals"],
            parametersFrom=[ref("value", "by-region", result="repr")],
        ),
        step(
            "check",
            "workflow_check.ipynb",
            test=True,
            parameters={"expected_rows": expected_rows},
            parametersFrom=[ref("notebook", "extract", output="notebook")],
        ),
    ]


#: The time format of Jenkins' JUnit schema (SUREFIRE_TIME).
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]{0,3})?")


def check_junit(path: Path) -> ET.Element:
    """The rules of the JUnit schema Jenkins reads (jenkinsci/xunit-plugin's junit-10.xsd, which
    pytest validates its xunit2 reports with), checked element by element with xml.etree, as
    no XSD validator is a dependency: testsuites holds testsuites; a testsuite (name, tests,
    failures, errors required) holds properties, testcases, system-out and system-err; a
    testcase (name required) holds skipped, failure, system-out or system-err, no properties.
    Also the Ant schema's (windyroad JUnit.xsd) required suite attributes, and counts that add
    up."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert set(root.attrib) <= {"name", "time", "tests", "failures", "errors"}
    assert SUREFIRE_TIME.fullmatch(root.get("time", ""))
    for suite in root:
        assert suite.tag == "testsuite"
        for key in ("name", "tests", "failures", "errors", "skipped", "time", "timestamp"):
            assert suite.get(key) is not None, key
        for key in ("hostname", "id", "package"):
            assert suite.get(key), key
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp", ""))
        assert SUREFIRE_TIME.fullmatch(suite.get("time", ""))
        assert {c.tag for c in suite} <= {"properties", "testcase", "system-out", "system-err"}
        for prop in suite.iter("property"):
            assert prop.get("name") and prop.get("value") is not None
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "")) == len(cases)
        for case in cases:
            assert case.get("name") and case.get("classname")
            assert SUREFIRE_TIME.fullmatch(case.get("time", ""))
            tags = [child.tag for child in case]
            assert set(tags) <= {"skipped", "failure", "system-out", "system-err"}
            assert tags.count("failure") + tags.count("skipped") <= 1
        failures = sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("failures", "")) == failures
        skipped = sum(1 for c in cases if c.find("skipped") is not None)
        assert int(suite.get("skipped", "")) == skipped
    return root


def test_a_diamond_with_for_each_and_a_passing_test(tmp_path: Path) -> None:
    wf = manifest(tmp_path / "wf.yaml", diamond(3), [step("notify", "values.ipynb")])
    out = tmp_path / "runs"
    junit = tmp_path / "junit.xml"
    done = kubemill(
        [
            "workflow",
            "run",
            wf,
            "--output-dir",
            str(out),
            "--parallel",
            "3",
            "--junit-xml",
            str(junit),
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workflow sales Succeeded: 8 runs succeeded" in done.stdout
    assert "tests: 1 passed, 0 failed" in done.stdout
    folders = sorted(p.name for p in (out / "analytics").iterdir() if p.is_dir())
    assert folders == [
        "sales-by-region-0",
        "sales-by-region-1",
        "sales-by-region-2",
        "sales-check",
        "sales-extract",
        "sales-notify",
        "sales-report",
        "sales-totals",
        "sales.logs",
    ]
    report = load(out / "analytics" / "sales-report" / "results.json")
    assert report == {"repr": repr(["'eu'", "'us'", "'apac'"]), "type": "list"}
    totals = load(out / "analytics" / "sales-totals" / "results.json")
    assert totals == {"repr": "3", "type": "int"}
    lineage = load(out / "analytics" / "sales-totals" / "run.json")
    assert "sales-extract" in json.dumps(lineage)
    identity = lineage["identity"]
    assert (identity["run"], identity["workflow"], identity["step"]) == (
        "sales-totals", "sales", "totals",
    )  # fmt: skip
    state = load(out / "analytics" / "sales.workflow.json")
    assert state["workflow"]["status"]["phase"] == "Succeeded"
    assert state["workflow"]["status"]["tests"] == {"total": 1, "passed": 1, "failed": 0}
    root = check_junit(junit)
    names = [c.get("name") for c in root.iter("testcase")]
    assert names[:4] == ["extract", "by-region[0]", "by-region[1]", "by-region[2]"]
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "0"


def test_a_failing_test_step_fails_the_run_and_junit_quotes_the_assertion(tmp_path: Path) -> None:
    wf = manifest(tmp_path / "wf.yaml", diamond(4)[:1] + diamond(4)[4:])
    junit = tmp_path / "junit.xml"
    done = kubemill(
        ["workflow", "run", wf, "--output-dir", str(tmp_path / "runs"), "--junit-xml", str(junit)],
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tests: 0 passed, 1 failed" in done.stdout
    assert "TestFailed" in (tmp_path / "runs/analytics/sales.workflow.json").read_text()
    failure = check_junit(junit).find(".//testcase[@name='check']/failure")
    assert failure is not None
    assert "rows is 3, expected 4" in (failure.text or "")
    assert "AssertionError" in failure.get("message", "")


def test_an_upstream_failure_skips_and_finally_runs(tmp_path: Path) -> None:
    steps = diamond(3)[:3]
    steps[0]["runTemplate"]["spec"]["parameters"]["fail"] = True
    outcome = {"name": "value", "workflowOutcome": {}}
    wf = manifest(
        tmp_path / "wf.yaml", steps, [step("notify", "values.ipynb", parametersFrom=[outcome])]
    )
    out = tmp_path / "runs"
    junit = tmp_path / "junit.xml"
    done = kubemill(
        ["workflow", "run", wf, "--output-dir", str(out), "--junit-xml", str(junit)], timeout=300
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "extract Failed" in done.stdout
    assert "totals Skipped  UpstreamFailed" in done.stdout
    status = load(out / "analytics/sales.workflow.json")["workflow"]["status"]
    entries = {e["name"]: e for e in status["steps"]}
    assert entries["by-region"]["phase"] == "Skipped"
    assert entries["notify"]["phase"] == "Succeeded"
    said = load(out / "analytics/sales-notify/results.json")["repr"]
    assert "'failed': ['extract']" in said and "'skipped': ['by-region', 'totals']" in said
    root = check_junit(junit)
    assert root.find(".//testcase[@name='totals']/skipped") is not None
    failure = root.find(".//testcase[@name='extract']/failure")
    assert failure is not None and "the source is broken" in (failure.text or "")


def test_retry_reruns_a_flaky_step_and_reuses_what_succeeded(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    steps = [
        step("extract", "workflow_extract.ipynb"),
        step("flaky", "fails_once_local.ipynb", parameters={"marker": str(marker)}),
        step("after", "values.ipynb", parametersFrom=[ref("value", "flaky", result="attempt")]),
        step(
            "check",
            "workflow_check.ipynb",
            test=True,
            parametersFrom=[ref("notebook", "extract", output="notebook")],
        ),
    ]
    wf = manifest(tmp_path / "wf.yaml", steps, [step("notify", "values.ipynb")])
    out = tmp_path / "runs"
    first = kubemill(["workflow", "run", wf, "--output-dir", str(out)], timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "flaky Failed" in first.stdout and "after Skipped" in first.stdout
    extract = out / "analytics/sales-extract/output.ipynb"
    written = extract.stat().st_mtime_ns
    again = kubemill(["workflow", "retry", str(out)], timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "workflow sales Succeeded" in again.stdout
    assert extract.stat().st_mtime_ns == written  # extract's output was reused, not re-run
    assert not (out / "analytics/sales-extract-r2").exists()
    assert load(out / "analytics/sales-after-r2/results.json")["repr"] == "'again'"
    status = load(out / "analytics/sales.workflow.json")["workflow"]["status"]
    assert status["attempt"] == 2
    # A workflow that succeeded is not retried.
    assert kubemill(["workflow", "retry", str(out)]).returncode == 2


def test_only_runs_a_step_with_what_it_needs(tmp_path: Path) -> None:
    wf = manifest(tmp_path / "wf.yaml", diamond(3))
    out = tmp_path / "runs"
    done = kubemill(
        [
            "workflow",
            "run",
            wf,
            "--output-dir",
            str(out),
            "--only",
            "totals",
            "-p",
            "totals.extra",
            "1",
        ],
        timeout=300,
    )
    # totals does not declare `extra`: that run fails (BadInput), after extract succeeded.
    assert done.returncode == 1
    assert "extract Succeeded" in done.stdout and "totals Failed" in done.stdout
    assert not (out / "analytics/sales-report").exists()
    written = (out / "analytics/sales-extract/output.ipynb").stat().st_mtime_ns
    done = kubemill(["workflow", "run", wf, "--output-dir", str(out), "--only", "totals"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "extract" not in done.stdout.split("workflow sales")[0]
    assert (out / "analytics/sales-extract/output.ipynb").stat().st_mtime_ns == written


def test_only_runs_again_a_needed_step_that_changed(tmp_path: Path) -> None:
    notebook = tmp_path / "extract.ipynb"
    shutil.copy(NOTEBOOKS / "workflow_extract.ipynb", notebook)
    steps = diamond(3)
    steps[0]["runTemplate"]["spec"]["notebook"] = "extract.ipynb"  # beside the manifest
    wf = manifest(tmp_path / "wf.yaml", steps)
    out = tmp_path / "runs"
    output = out / "analytics/sales-extract/output.ipynb"
    argv = ["workflow", "run", wf, "--output-dir", str(out), "--only", "totals"]
    written = []
    for extra, said in [
        ([], None),
        ([], None),  # unchanged: reused
        (["-p", "extract.regions", '["eu"]'], "running extract again"),  # its parameters
        (["-p", "extract.regions", '["eu"]'], None),
        (None, "running extract again"),  # its notebook
    ]:
        if extra is None:
            nb = nbformat.read(notebook, as_version=4)
            nb.cells.append(nbformat.v4.new_code_cell("print('edited')"))
            nbformat.write(nb, notebook)
            extra = ["-p", "extract.regions", '["eu"]']
        done = kubemill([*argv, *extra], timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (said is not None) == ("again" in done.stderr), done.stderr
        if said is not None:
            assert f"kubemill workflow: {said}: changed since its outputs were made" in done.stderr
        written.append(output.stat().st_mtime_ns)
    assert written[1] == written[0] and written[3] == written[2]
    assert len({written[0], written[2], written[4]}) == 3
    assert "edited" in output.read_text()


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ({"kind": "NotebookRun", "metadata": {"name": "x"}}, "holds 0 NotebookWorkflows"),
        (
            {
                "kind": "NotebookWorkflow",
                "metadata": {"name": "x"},
                "spec": {
                    "steps": [
                        {
                            "name": "a",
                            "dependsOn": ["b"],
                            "runTemplate": {"spec": {"notebook": "a"}},
                        },
                        {
                            "name": "b",
                            "dependsOn": ["a"],
                            "runTemplate": {"spec": {"notebook": "b"}},
                        },
                    ]
                },
            },
            "the steps make a cycle: a → b → a",
        ),
    ],
)
def test_bad_manifests_are_bad_input(tmp_path: Path, document: dict[str, Any], said: str) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(document))
    for argv in (["run", str(path), "--output-dir", str(tmp_path)], ["graph", str(path)]):
        done = kubemill(["workflow", *argv])
        assert done.returncode == 2, done.stdout + done.stderr
        assert said in done.stderr
    done = kubemill(["workflow", "run", str(tmp_path / "wf.yaml"), "-p", "nope.x", "1"])
    assert done.returncode == 2


def test_a_parameter_a_reference_sets_is_refused_before_anything_runs(tmp_path: Path) -> None:
    wf = manifest(tmp_path / "wf.yaml", diamond(3))
    out = tmp_path / "runs"
    done = kubemill(["workflow", "run", wf, "--output-dir", str(out), "-p", "totals.value", "1"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "parameter 'value' of step 'totals' is set by -p and by" in done.stderr
    assert "stepRef to step 'extract'" in done.stderr
    assert not out.exists()  # extract did not run


def test_run_folders_in_s3_as_on_the_cluster(
    tmp_path: Path, s3_admin: Any, bucket: str, s3_env: dict[str, str]
) -> None:
    wf = manifest(tmp_path / "wf.yaml", diamond(3))
    done = kubemill(
        ["workflow", "run", wf, "--output-dir", str(tmp_path / "state"),
         "--output", f"s3://{bucket}/runs/"],
        env=s3_env,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"outputs: s3://{bucket}/runs/analytics/" in done.stdout
    listed = s3_admin.list_objects_v2(Bucket=bucket, Prefix="runs/analytics/")
    keys = {item["Key"] for item in listed.get("Contents", [])}
    assert "runs/analytics/sales-by-region-2/results.json" in keys
    assert "runs/analytics/sales-check/output.ipynb" in keys
    state = load(tmp_path / "state/analytics/sales.workflow.json")
    urls = {e["name"]: e.get("outputUrl") for e in state["workflow"]["status"]["steps"]}
    assert urls["extract"] == f"s3://{bucket}/runs/analytics/sales-extract/output.ipynb"


def await_log(path: Path, line: str, timeout: float = 60) -> None:
    """Wait until a runner's log holds `line`: the notebook got there, its runner has its
    signal handlers."""
    deadline = time.monotonic() + timeout
    while line not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path} did not say {line!r}"
        time.sleep(0.1)  # polling a log file for a line: there is no event to wait on


def await_gone(processes: Sequence[psutil.Process], timeout: float = 30) -> None:
    """Wait until none of `processes` runs (a kernel notices its runner's end within a
    second or so); psutil compares start times, so a reused PID is not mistaken for one."""

    def living() -> list[psutil.Process]:
        found = []
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        return found

    deadline = time.monotonic() + timeout
    while living():
        assert time.monotonic() < deadline, f"still running: {living()}"
        time.sleep(0.1)  # other processes' ends: no child of ours to wait on


@contextlib.contextmanager
def driving(args: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """`kubemill workflow ARGS` running; killed with what it started if the test fails while
    it runs, so that a failing test leaves no notebook sleeping behind it."""
    process = start(["workflow", *args])
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                driver = psutil.Process(process.pid)
                for each in [driver, *driver.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        each.kill()
            process.communicate()


def napping(tmp_path: Path) -> tuple[str, Path]:
    """nap (sleeps while the test acts; quick when retried), then after; later, which
    --parallel 1 keeps from starting; a finally step."""
    marker = str(tmp_path / "slept")
    nap = step("nap", "sleeps_once.ipynb", parameters={"marker": marker})
    steps = [nap, step("after", "values.ipynb", dependsOn=["nap"]), step("later", "values.ipynb")]
    wf = manifest(tmp_path / "wf.yaml", steps, [step("notify", "values.ipynb")])
    return wf, tmp_path / "runs"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_stops_its_runners_and_retry_finishes_it(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    wf, out = napping(tmp_path)
    with driving(["run", wf, "--output-dir", str(out), "--parallel", "1"]) as process:
        await_log(out / "analytics/sales.logs/sales-nap.log", "started sleeping")
        children = psutil.Process(process.pid).children(recursive=True)
        assert children  # the runner and its kernel
        # While it runs, retry refuses, naming it.
        refused = kubemill(["workflow", "retry", str(out)])
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"still being run by `kubemill workflow run` (PID {process.pid})" in refused.stderr
        got, took, stderr = stop(process, signum)
    assert (got, took < 40) == (code, True), stderr
    assert f"interrupted ({signum.name}); stopped the runs sales-nap" in stderr
    await_gone(children)
    state = load(out / "analytics/sales.workflow.json")
    status = state["workflow"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Interrupted")
    assert f"interrupted ({signum.name})" in status["message"]
    [run] = state["runs"]
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "Interrupted")
    assert (out / "analytics/sales-nap/output.ipynb").exists()  # the runner saved it
    entries = {e["name"]: (e["phase"], e.get("reason")) for e in status["steps"]}
    assert entries == {
        "nap": ("Failed", "Interrupted"),
        "after": ("Skipped", "UpstreamFailed"),
        "later": ("Skipped", "Interrupted"),
        "notify": ("Skipped", "Interrupted"),
    }
    again = kubemill(["workflow", "retry", str(out)], timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "workflow sales Succeeded" in again.stdout
    assert load(out / "analytics/sales-nap-r2/results.json") == {"attempt": "again"}


def test_retry_takes_over_a_run_whose_driver_was_killed(tmp_path: Path) -> None:
    wf, out = napping(tmp_path)
    with driving(["run", wf, "--output-dir", str(out), "--parallel", "1"]) as process:
        await_log(out / "analytics/sales.logs/sales-nap.log", "started sleeping")
        local = load(out / "analytics/sales.workflow.json")["local"]
        assert local["driver"]["pid"] == process.pid
        runner = psutil.Process(local["runners"]["sales-nap"]["pid"])
        family = [runner, *runner.children(recursive=True)]
        process.kill()  # no chance to write: the state says Running
        process.communicate(timeout=60)
    assert load(out / "analytics/sales.workflow.json")["workflow"]["status"]["phase"] == "Running"
    assert runner.is_running()  # left behind, in its own session
    again = kubemill(["workflow", "retry", str(out)], timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"stopping the runs it left running: sales-nap (PID {runner.pid})" in again.stderr
    assert f"(PID {process.pid}) ended without saving how the workflow ended" in again.stderr
    await_gone(family)
    state = load(out / "analytics/sales.workflow.json")
    assert state["workflow"]["status"]["phase"] == "Succeeded"
    first = next(r for r in state["runs"] if r["metadata"]["name"] == "sales-nap")
    assert (first["status"]["phase"], first["status"]["reason"]) == ("Failed", "Interrupted")
    assert load(out / "analytics/sales-nap-r2/results.json") == {"attempt": "again"}


def test_a_driver_that_fails_stops_its_runners_and_keeps_the_state(tmp_path: Path) -> None:
    wf, out = napping(tmp_path)
    release = tmp_path / "release"
    hold = step("hold", "waits_for_file.ipynb", parameters={"path": str(release)})
    document = yaml.safe_load(Path(wf).read_text())
    document["spec"]["steps"].insert(0, hold)
    Path(wf).write_text(yaml.safe_dump(document))
    with driving(["run", wf, "--output-dir", str(out), "--parallel", "2"]) as process:
        logs = out / "analytics/sales.logs"
        await_log(logs / "sales-hold.log", "started waiting")
        await_log(logs / "sales-nap.log", "started sleeping")
        children = psutil.Process(process.pid).children(recursive=True)
        # Whoever read its output went away (`… | head -1`): its next line fails to be written.
        assert process.stdout is not None
        process.stdout.close()
        release.touch()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert b"BrokenPipeError" in stderr
    await_gone(children)
    status = load(out / "analytics/sales.workflow.json")["workflow"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Interrupted")
    assert "`kubemill workflow run` failed (BrokenPipeError" in status["message"]
    entries = {e["name"]: (e["phase"], e.get("reason")) for e in status["steps"]}
    assert entries["hold"] == ("Succeeded", "Succeeded")
    assert entries["nap"] == ("Failed", "Interrupted")


def test_a_step_sees_its_spec_env_as_in_the_pod(tmp_path: Path) -> None:
    notebook = tmp_path / "env.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, kubemill\n"
        "for name in ('MODE', 'DATA', 'TOKEN'):\n"
        "    kubemill.record(name.lower(), os.environ.get(name))"
    )]  # fmt: skip
    nbformat.write(nb, str(notebook))
    env = [
        {"name": "MODE", "value": "test"},
        {"name": "DATA", "value": "/data/$(MODE)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    wf = manifest(tmp_path / "wf.yaml", [step("env", str(notebook), env=env)])
    out = tmp_path / "out"
    refused = kubemill(["workflow", "run", wf, "--output-dir", str(out)])
    assert refused.returncode == 1
    assert "export TOKEN in this shell to give it one" in refused.stdout + refused.stderr
    done = kubemill(
        ["workflow", "run", wf, "--output-dir", str(tmp_path / "again")], env={"TOKEN": "t0k"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = load(tmp_path / "again" / "analytics" / "sales-env" / "results.json")
    assert results == {"mode": "test", "data": "/data/test", "token": "t0k"}
