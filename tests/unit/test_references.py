"""`references.resolve`: when a run that takes values from other runs waits, fails or starts,
and with which values; table-tested like `schedules.plan`."""

from __future__ import annotations

from typing import Any

import pytest

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.references import Resolution, referenced_runs, references, resolve

FOLDER = "s3://results/runs/ns/extract/"


def ref(parameter: str, run: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "notebookRunRef": {"name": run, **what}}


def run(name: str, *refs: dict[str, Any], **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"notebook": "s3://n/n.ipynb"}
    if refs:
        spec["parametersFrom"] = list(refs)
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"{name}-uid"}, "spec": spec,
            "status": status}  # fmt: skip


def succeeded(name: str, *refs: dict[str, Any], **status: Any) -> dict[str, Any]:
    folder = f"s3://results/runs/ns/{name}/"
    return run(name, *refs, phase="Succeeded", outputUrl=f"{folder}output.ipynb", **status)


def lookup(*runs: dict[str, Any]) -> Any:
    by_name = {r["metadata"]["name"]: r for r in runs}
    return by_name.get


def test_a_run_without_references_is_ready_with_nothing_to_add() -> None:
    assert resolve(run("report"), lookup()) == Resolution()
    assert Resolution().ready


@pytest.mark.parametrize(
    ("upstream", "waiting"),
    [
        ([], "waiting for run extract (it does not exist yet)"),
        ([run("extract")], "waiting for run extract (Pending)"),
        ([run("extract", phase="Running")], "waiting for run extract (Running)"),
        ([run("extract", phase="Waiting")], "waiting for run extract (Waiting)"),
    ],
)
def test_a_run_waits_for_each_run_it_references_naming_it(
    upstream: list[dict[str, Any]], waiting: str
) -> None:
    resolution = resolve(run("report", ref("rows", "extract", result="rows")), lookup(*upstream))
    assert resolution.waiting == waiting and resolution.failed is None and not resolution.ready


def test_every_run_waited_for_is_named_once() -> None:
    report = run(
        "report", ref("a", "extract", result="a"), ref("b", "extract", result="b"),
        ref("c", "clean", output="notebook"),
    )  # fmt: skip
    resolution = resolve(report, lookup(run("clean", phase="Running")))
    assert resolution.waiting == (
        "waiting for run extract (it does not exist yet), run clean (Running)"
    )


def test_a_failed_upstream_fails_the_run_with_its_reason() -> None:
    failed = run("extract", phase="Failed", reason="CellError", message="cell 3 raised KeyError")
    resolution = resolve(run("report", ref("rows", "extract", result="rows")), lookup(failed))
    assert resolution.failed == (
        "UpstreamFailed",
        "run extract failed (CellError): cell 3 raised KeyError",
    )


def test_a_failure_wins_over_waiting_for_another_run() -> None:
    report = run("report", ref("a", "slow", result="a"), ref("b", "broken", result="b"))
    found = lookup(run("slow", phase="Running"), run("broken", phase="Failed", reason="OOMKilled"))
    assert resolve(report, found).failed == ("UpstreamFailed", "run broken failed (OOMKilled): ")


@pytest.mark.parametrize(
    ("others", "cycle"),
    [
        ([], "report → report"),
        ([run("b", ref("x", "report", result="x"))], "report → b → report"),
        (
            [run("b", ref("x", "c", result="x")), run("c", ref("y", "report", output="folder"))],
            "report → b → c → report",
        ),
    ],
)
def test_a_cycle_through_the_run_fails_it_naming_the_cycle(
    others: list[dict[str, Any]], cycle: str
) -> None:
    target = "report" if not others else "b"
    report = run("report", ref("x", target, result="x"))
    resolution = resolve(report, lookup(report, *others))
    assert resolution.failed is not None
    reason, message = resolution.failed
    assert reason == "InvalidSpec" and cycle in message


def test_a_cycle_further_up_is_the_upstream_runs_own_failure() -> None:
    """report → b → c → b: report waits for b; b fails (its own cycle), then report with it."""
    b = run("b", ref("x", "c", result="x"))
    c = run("c", ref("y", "b", result="y"))
    report = run("report", ref("x", "b", result="x"))
    assert resolve(report, lookup(b, c)).waiting == "waiting for run b (Pending)"
    assert resolve(b, lookup(b, c)).failed is not None


def test_values_are_inlined_with_their_json_type_and_named_in_the_lineage() -> None:
    results = {"rows": 3, "nested": {"a": [1, None], "b": None}, "none": None}
    extract = succeeded("extract", results=results)
    report = run(
        "report", ref("rows", "extract", result="rows"), ref("nested", "extract", result="nested"),
        ref("none", "extract", result="none"), ref("nb", "extract", output="notebook"),
        ref("folder", "extract", output="folder"),
    )  # fmt: skip
    resolution = resolve(report, lookup(extract))
    assert resolution.ready
    assert resolution.inline == {
        "rows": 3, "nested": {"a": [1, None], "b": None}, "none": None,
        "nb": f"{FOLDER}output.ipynb", "folder": FOLDER,
    }  # fmt: skip
    assert resolution.upstream == {
        "upstream": [
            {
                "name": "extract", "namespace": "ns", "uid": "extract-uid",
                "outputUrl": f"{FOLDER}output.ipynb",
                "parameters": ["rows", "nested", "none", "nb", "folder"],
            }
        ],
        "results": [],
    }  # fmt: skip


@pytest.mark.parametrize("left_out", [["big"], True])
def test_a_result_the_status_left_out_is_fetched_by_the_runner(left_out: Any) -> None:
    extract = succeeded("extract", results={"small": 1}, resultsTruncated=left_out)
    report = run("report", ref("big", "extract", result="big"), ref("s", "extract", result="small"))
    resolution = resolve(report, lookup(extract))
    assert resolution.inline == {"s": 1}
    assert resolution.upstream is not None
    assert resolution.upstream["results"] == [
        {"parameter": "big", "run": "extract", "result": "big", "url": f"{FOLDER}results.json"}
    ]


@pytest.mark.parametrize(
    ("status", "what", "reason", "says"),
    [
        ({"results": {"a": 1, "b": 2}}, {"result": "rows"}, "MissingResult",
         "run extract recorded no result 'rows' (it recorded: a, b)"),
        ({"results": {}}, {"result": "rows"}, "MissingResult", "(it recorded: none)"),
        ({"outputUrl": "s3://results/one.ipynb"}, {"output": "folder"}, "MissingOutput",
         "run extract has no output folder (its output: s3://results/one.ipynb)"),
        ({"outputUrl": "s3://results/one.ipynb", "resultsTruncated": True}, {"result": "big"},
         "MissingResult", "recorded no result 'big'"),
    ],
)  # fmt: skip
def test_a_value_the_upstream_does_not_have_fails_the_run_saying_what_is_missing(
    status: dict[str, Any], what: dict[str, str], reason: str, says: str
) -> None:
    extract = run("extract", phase="Succeeded", **{"outputUrl": f"{FOLDER}output.ipynb", **status})
    resolution = resolve(run("report", ref("p", "extract", **what)), lookup(extract))
    assert resolution.failed is not None
    assert resolution.failed[0] == reason and says in resolution.failed[1]


def test_a_parameter_set_twice_is_invalid() -> None:
    report = run("report", ref("rows", "extract", result="rows"))
    report["spec"]["parameters"] = {"rows": 1}
    with pytest.raises(InvalidSpec, match=r"'rows' is set by spec\.parameters and by"):
        resolve(report, lookup())


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"name": "p", "notebookRunRef": {"name": "x"}}, "exactly one of result"),
        ({"name": "p", "notebookRunRef": {"name": "x", "result": "r", "output": "folder"}},
         "exactly one of result"),
        ({"name": "p", "notebookRunRef": {"name": "x", "output": "html"}}, "notebook or folder"),
        ({"name": "p", "notebookRunRef": {"result": "r"}}, "needs the name"),
        ({"name": "p", "notebookRunRef": {"name": "x", "result": "r"},
          "secretKeyRef": {"name": "s", "key": "k"}}, "both secretKeyRef and notebookRunRef"),
    ],
)  # fmt: skip
def test_a_reference_the_crd_should_have_refused_is_invalid_spec(
    item: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidSpec, match=says):
        references({"parametersFrom": [item]})
    assert referenced_runs({"parametersFrom": [item]}) == []


def test_secret_parameters_are_not_references() -> None:
    spec = {"parametersFrom": [{"name": "s", "secretKeyRef": {"name": "a", "key": "b"}}]}
    assert references(spec) == [] and referenced_runs(spec) == []


def test_the_upstream_file_the_operator_writes_is_one_the_runner_reads() -> None:
    """Both sides of the --upstream-file contract, as the operator's ConfigMap carries it."""
    from kubemill.operator.jobs import UPSTREAM_KEY, build_parameter_config_maps
    from kubemill.runner.upstream import parse_upstream

    extract = succeeded("extract", results={"small": 1}, resultsTruncated=["big"])
    clean = succeeded("clean")
    report = run(
        "report", ref("big", "extract", result="big"), ref("s", "extract", result="small"),
        ref("nb", "clean", output="notebook"),
    )  # fmt: skip
    report["metadata"]["uid"] = "report-uid"
    resolution = resolve(report, lookup(extract, clean))
    config_map = build_parameter_config_maps(report, resolution)[-1]
    upstream = parse_upstream(config_map["data"][UPSTREAM_KEY].encode(), "upstream file")
    assert [(r.name, r.uid) for r in upstream.runs] == [
        ("extract", "extract-uid"),
        ("clean", "clean-uid"),
    ]
    assert [(r.parameter, r.run, r.result) for r in upstream.results] == [("big", "extract", "big")]
