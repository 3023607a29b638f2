"""`kubemill run --upstream-file` with a real kernel: values read from an upstream run's
results.json (local and in real S3) arrive with their JSON type, and the lineage names the
upstream runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NOTEBOOKS, kubemill, parameter_digest
from tests.integration.helpers import load

pytestmark = pytest.mark.integration

NOTEBOOK = str(NOTEBOOKS / "upstream.ipynb")
CONFIG = {"a": {"b": None, "c": [1, 2.5, "é"]}, "flag": False}
#: About 10 MB of JSON: larger than any run's status, ConfigMap or termination message. Mostly
#: long strings, because the kernel compiles the injected literal in time that grows with its
#: element count (190,000 small dicts took 36 s, these 105,000 strings 4 s).
ITEMS = [
    {"id": i, "score": None} if i % 1000 == 0 else f"row {i:07d} ∑ " + "x" * 80
    for i in range(105_000)
]


def _upstream_file(path: Path, results_url: str, results: dict[str, str]) -> Path:
    """An upstream file as the operator writes it: `extract` supplies `results` (parameter:
    result) from its results.json, `clean` supplies source_url, which is passed inline."""
    path.write_text(
        json.dumps(
            {
                "upstream": [
                    {
                        "name": "extract",
                        "namespace": "team-a",
                        "uid": "5b1c-uid",
                        "outputUrl": results_url.replace("results.json", "output.ipynb"),
                        "parameters": list(results),
                    },
                    {
                        "name": "clean",
                        "namespace": "team-a",
                        "uid": "77aa-uid",
                        "outputUrl": "s3://b/runs/team-a/clean/output.ipynb",
                        "parameters": ["source_url"],
                    },
                ],
                "results": [
                    {"parameter": name, "run": "extract", "result": result, "url": results_url}
                    for name, result in results.items()
                ],
            }
        )
    )
    return path


def _run(tmp_path: Path, upstream: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return kubemill(
        [
            "run",
            NOTEBOOK,
            f"{tmp_path}/out/",
            "--upstream-file",
            str(upstream),
            "--termination-message-path",
            str(tmp_path / "summary.json"),
            *args,
        ],
        env=env,
    )


def test_results_arrive_with_their_json_type_and_lineage_names_the_upstream(
    tmp_path: Path,
) -> None:
    results = tmp_path / "extract" / "results.json"
    results.parent.mkdir()
    data = json.dumps({"row_count": 1204, "settings": CONFIG, "items": ITEMS, "x": 1}).encode()
    assert len(data) > 10_000_000
    results.write_bytes(data)
    upstream = _upstream_file(
        tmp_path / "upstream.json",
        str(results),
        {"rows": "row_count", "config": "settings", "items": "items"},
    )
    result = _run(
        tmp_path, upstream, "--parameters-json", '{"source_url": "s3://b/clean/output.ipynb"}'
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = load(tmp_path / "out" / "results.json")
    assert recorded["types"] == ["int", "dict", "list"]
    assert recorded["rows"] == 1204
    assert recorded["config"] == CONFIG
    assert recorded["items"] == {"length": len(ITEMS), "digest": parameter_digest(ITEMS)}
    assert recorded["source_url"] == "s3://b/clean/output.ipynb"

    sha = hashlib.sha256(data).hexdigest()
    expected = [
        {
            "name": "extract",
            "namespace": "team-a",
            "uid": "5b1c-uid",
            "outputUrl": str(tmp_path / "extract" / "output.ipynb"),
            "parameters": ["rows", "config", "items"],
            "resultsUrl": str(results),
            "resultsSha256": sha,
        },
        {
            "name": "clean",
            "namespace": "team-a",
            "uid": "77aa-uid",
            "outputUrl": "s3://b/runs/team-a/clean/output.ipynb",
            "parameters": ["source_url"],
        },
    ]
    lineage = load(tmp_path / "out" / "run.json")
    assert lineage["upstream"] == expected
    assert lineage["parameters"]["rows"] == 1204
    assert lineage["parameters"]["items"] == ITEMS
    nb = load(tmp_path / "out" / "output.ipynb")
    assert nb["metadata"]["kubemill"]["upstream"] == expected
    assert nb["metadata"]["papermill"]["parameters"]["config"] == CONFIG
    injected = nb["cells"][1]["source"]
    assert injected.startswith(
        "# Parameters\nsource_url = 's3://b/clean/output.ipynb'\nrows = 1204\n"
    )
    assert "read from the results of upstream runs extract" in result.stderr


def _results(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    return path


def test_a_missing_result_is_bad_input_naming_what_the_run_recorded(tmp_path: Path) -> None:
    results = _results(tmp_path, {"row_total": 3, "columns": ["a"]})
    upstream = _upstream_file(tmp_path / "upstream.json", str(results), {"rows": "row_count"})
    result = _run(tmp_path, upstream)
    assert result.returncode == 2, result.stderr
    message = (
        f"upstream run 'extract' recorded no result 'row_count' (its results at {results} are: "
        "columns, row_total); record it in that notebook with kubemill.record('row_count', "
        "value), or name one of these for parameter 'rows'"
    )
    assert message in result.stderr
    summary = load(tmp_path / "summary.json")
    assert summary["reason"] == "BadInput"
    assert summary["failure"]["message"] == message
    nb = load(tmp_path / "out" / "output.ipynb")
    assert "Not executed: BadInput" in nb["cells"][0]["source"]
    # The lineage still names the upstream runs, and the results.json that was read.
    digest = hashlib.sha256(results.read_bytes()).hexdigest()
    assert load(tmp_path / "out" / "run.json")["upstream"][0]["resultsSha256"] == digest


@pytest.mark.parametrize(
    ("document", "args", "message"),
    [
        ({"row_count": "many"}, [], "parameter 'rows' is declared as int but got \"many\" (str)"),
        ([1204], [], "are not a JSON object of result names to values, got list"),
        (
            {"row_count": 1},
            ["-p", "rows", "3"],
            "parameter 'rows' is given both by the upstream file (result 'row_count' of run "
            "'extract') and by another parameter option; give it once",
        ),
        (None, [], "cannot read the results of upstream run 'extract' from "),
    ],
)
def test_upstream_problems_are_bad_input(
    tmp_path: Path, document: Any, args: list[str], message: str
) -> None:
    results = _results(tmp_path, document) if document is not None else tmp_path / "none.json"
    upstream = _upstream_file(tmp_path / "upstream.json", str(results), {"rows": "row_count"})
    result = _run(tmp_path, upstream, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert message in load(tmp_path / "summary.json")["failure"]["message"]


def test_a_malformed_upstream_file_is_bad_input_naming_the_field(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream.json"
    upstream.write_text(json.dumps({"upstream": [{"name": "extract"}], "results": []}))
    result = _run(tmp_path, upstream)
    assert result.returncode == 2, result.stderr
    message = f"upstream file {upstream}: upstream[0] has no namespace, uid, outputUrl, parameters"
    assert f"kubemill: error: {message}" in result.stderr
    assert load(tmp_path / "summary.json")["failure"]["message"] == message


def test_results_are_read_from_s3(
    s3_admin: Any, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    data = json.dumps({"row_count": 7, "settings": CONFIG}).encode()
    s3_admin.put_object(Bucket=bucket, Key="runs/team-a/extract/results.json", Body=data)
    url = f"s3://{bucket}/runs/team-a/extract/results.json"
    upstream = _upstream_file(
        tmp_path / "upstream.json", url, {"rows": "row_count", "config": "settings"}
    )
    result = _run(tmp_path, upstream, "-p", "source_url", "s3://x/y", env=s3_env)
    assert result.returncode == 0, result.stderr
    recorded = load(tmp_path / "out" / "results.json")
    assert (recorded["rows"], recorded["config"]) == (7, CONFIG)
    extract = load(tmp_path / "out" / "run.json")["upstream"][0]
    assert extract["resultsUrl"] == url
    assert extract["resultsSha256"] == hashlib.sha256(data).hexdigest()

    missing = _upstream_file(
        tmp_path / "missing.json", f"s3://{bucket}/runs/team-a/gone/results.json", {"rows": "x"}
    )
    result = _run(tmp_path, missing, env=s3_env)
    assert result.returncode == 2, result.stderr
    assert (
        f"cannot read the results of upstream run 'extract' from s3://{bucket}/runs/team-a/gone/"
        "results.json: " in result.stderr
    )
