"""The upstream file's parser, picking results from results.json, and upstream lineage."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubemill.cli.parameters import read_upstream_file
from kubemill.runner.errors import BadInputError, StorageError
from kubemill.runner.storage import Fetched, Location
from kubemill.runner.upstream import (
    ResultRef,
    ResultsFile,
    Upstream,
    UpstreamRun,
    check_overlap,
    parse_upstream,
    pick_result,
    pick_results,
    read_results,
    results_document,
    upstream_lineage,
)

WHAT = "upstream file up.json"
VALID: dict[str, Any] = {
    "upstream": [
        {
            "name": "extract",
            "namespace": "team-a",
            "uid": "5b1c",
            "outputUrl": "s3://b/runs/team-a/extract/output.ipynb",
            "parameters": ["input_notebook", "rows"],
        },
        {
            "name": "clean",
            "namespace": "team-a",
            "uid": "77aa",
            "outputUrl": "https://user:pw@host/clean/output.ipynb?X-Amz-Signature=s",
            "parameters": ["table"],
        },
    ],
    "results": [
        {
            "parameter": "rows",
            "run": "extract",
            "result": "rows",
            "url": "s3://b/runs/team-a/extract/results.json",
        }
    ],
}


def _parse(document: Any) -> Upstream:
    return parse_upstream(json.dumps(document).encode(), WHAT)


def _changed(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    change(document)
    return document


def test_a_valid_file_parses_into_runs_and_results() -> None:
    upstream = _parse(VALID)
    assert upstream.runs[0] == UpstreamRun(
        "extract",
        "team-a",
        "5b1c",
        "s3://b/runs/team-a/extract/output.ipynb",
        ("input_notebook", "rows"),
    )
    assert upstream.results == (
        ResultRef("rows", "extract", "rows", "s3://b/runs/team-a/extract/results.json"),
    )


def test_empty_lists_are_an_empty_upstream() -> None:
    assert _parse({"upstream": [], "results": []}) == Upstream()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "upstream file up.json is not valid JSON at line 1, column 1"),
        (b'{"upstream": [', "upstream file up.json is not valid JSON at line 1"),
        (b"\xff\xfe", "upstream file up.json is not UTF-8 text"),
        (b"[]", f"{WHAT}: the file must be an object with upstream, results, got [] (list)"),
        (b"null", f"{WHAT}: the file must be an object with upstream, results, got null"),
    ],
)
def test_unreadable_files_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match="^" + re.escape(message)):
        parse_upstream(data, WHAT)


MALFORMED: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda d: d.pop("results"), "the file has no results"),
    (lambda d: d.pop("upstream"), "the file has no upstream"),
    (lambda d: d.update(extra=1), "the file has unknown field 'extra'; the fields are upstream"),
    (lambda d: d.update(upstream={}), "upstream must be a list, got {} (dict)"),
    (lambda d: d.update(results="x"), 'results must be a list, got "x" (str)'),
    (lambda d: d["upstream"].append("run"), "upstream[2] must be an object with name, namespace"),
    (lambda d: d["upstream"][0].pop("uid"), "upstream[0] has no uid"),
    (lambda d: d["upstream"][1].pop("outputUrl"), "upstream[1] has no outputUrl"),
    (lambda d: d["upstream"][0].update(status="x"), "upstream[0] has unknown field 'status'"),
    (lambda d: d["upstream"][0].update(name=""), "upstream[0].name must be a non-empty string"),
    (lambda d: d["upstream"][0].update(namespace=3), "upstream[0].namespace must be a non-empty"),
    (lambda d: d["upstream"][0].update(uid=None), "upstream[0].uid must be a non-empty string"),
    (lambda d: d["upstream"][1].update(outputUrl=[]), "upstream[1].outputUrl must be a non-empty"),
    (lambda d: d["upstream"][0].update(parameters="rows"), "upstream[0].parameters must be a list"),
    (lambda d: d["upstream"][0]["parameters"].append(1), "upstream[0].parameters[2] must be a"),
    (lambda d: d["upstream"][0]["parameters"].append("rows"), "upstream[0].parameters[2] repeats"),
    (
        lambda d: d["upstream"][1].update(name="extract"),
        "upstream[1].name 'extract' is listed twice",
    ),
    (
        lambda d: d["upstream"][1]["parameters"].append("rows"),
        "upstream[1].parameters: 'rows' is also supplied by upstream run 'extract'",
    ),
    (lambda d: d["results"].append(None), "results[1] must be an object with parameter, run"),
    (lambda d: d["results"][0].pop("url"), "results[0] has no url"),
    (lambda d: d["results"][0].pop("result"), "results[0] has no result"),
    (lambda d: d["results"][0].update(sha="x"), "results[0] has unknown field 'sha'"),
    (lambda d: d["results"][0].update(parameter=""), "results[0].parameter must be a non-empty"),
    (lambda d: d["results"][0].update(run=1), "results[0].run must be a non-empty string"),
    (lambda d: d["results"][0].update(result=False), "results[0].result must be a non-empty"),
    (lambda d: d["results"][0].update(url=None), "results[0].url must be a non-empty string"),
    (lambda d: d["results"][0].update(url="-"), "results[0].url must be a path, s3:// or http"),
    (lambda d: d["results"][0].update(url="ftp://h/r.json"), "results[0].url: 'ftp://h/r.json'"),
    (lambda d: d["results"][0].update(url="s3:///k"), "results[0].url: 's3:///k' has no bucket"),
    (
        lambda d: d["results"][0].update(run="extrct"),
        "results[0].run 'extrct' is not a run listed in upstream (listed: extract, clean)",
    ),
    (
        lambda d: d["results"][0].update(parameter="table"),
        "results[0].parameter 'table' is not in the parameters of upstream run 'extract'",
    ),
    (
        lambda d: d["results"].append(dict(d["results"][0], result="other")),
        "results[1].parameter 'rows' is given twice",
    ),
    (
        lambda d: (
            d["upstream"][0]["parameters"].append("more"),
            d["results"].append(dict(d["results"][0], parameter="more", url="/elsewhere.json")),
        ),
        "results[1].url '/elsewhere.json' differs from 's3://b/runs/team-a/extract/results.json'",
    ),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_every_malformed_shape_is_bad_input_naming_the_file_and_field(
    change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        _parse(_changed(change))
    assert caught.value.message.startswith(f"{WHAT}: "), caught.value.message
    assert message in caught.value.message


def test_the_cli_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    path.write_text(json.dumps(VALID))
    assert read_upstream_file(str(path)) == _parse(VALID)
    assert read_upstream_file(None) == Upstream()
    with pytest.raises(BadInputError, match=f"cannot read upstream file {tmp_path}/nope.json"):
        read_upstream_file(str(tmp_path / "nope.json"))
    path.write_text("{}")
    with pytest.raises(BadInputError, match=f"^upstream file {path}: the file has no upstream"):
        read_upstream_file(str(path))


def test_a_parameter_from_results_and_from_another_option_is_bad_input() -> None:
    upstream = _parse(VALID)
    check_overlap(upstream, ["input_notebook", "table"])  # inlined values are not fetched
    with pytest.raises(BadInputError, match="'rows' is given both by the upstream file"):
        check_overlap(upstream, ["alpha", "rows"])


REF = ResultRef("rows", "extract", "rows", "s3://b/extract/results.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1, 2]", "the results of upstream run 'extract' at s3://b/extract/results.json are "),
        (b"[1, 2]", "are not a JSON object of result names to values, got list"),
        (b'"rows"', "got str"),
        (b"{", "are not valid JSON (line 1, column 2"),
        (b"\xff", "are not UTF-8 text"),
    ],
)
def test_a_results_document_must_be_a_json_object(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(message)):
        results_document(data, REF)


@pytest.mark.parametrize(
    "value", [0, 12**40, 0.5, "text", None, True, [1, [2, None]], {"a": {"b": None}}]
)
def test_a_result_keeps_its_json_type(value: Any) -> None:
    document = results_document(json.dumps({"rows": value, "x": 1}).encode(), REF)
    picked = pick_result(document, REF)
    assert picked == value and type(picked) is type(value)


@pytest.mark.parametrize(
    ("document", "listed"),
    [
        ({}, "are: none)"),
        ({"row": 1, "cols": 2}, "are: cols, row)"),
        ({f"r{i:02}": i for i in range(13)}, "are: r00, r01, r02, r03, r04, r05, r06, r07, r08, "),
        ({f"r{i:02}": i for i in range(13)}, "r09 and 3 more)"),
    ],
)
def test_a_missing_result_lists_what_the_run_recorded(
    document: dict[str, Any], listed: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        pick_result(document, REF)
    message = caught.value.message
    assert message.startswith(
        "upstream run 'extract' recorded no result 'rows' (its results at "
        "s3://b/extract/results.json "
    )
    assert listed in message
    assert "kubemill.record('rows', value)" in message


def _reader(files: dict[str, bytes], reads: list[str]) -> Callable[[Location], Fetched]:
    def read(location: Location) -> Fetched:
        reads.append(location.uri)
        if location.uri not in files:
            raise StorageError(f"cannot read {location.uri}: access denied")
        data = files[location.uri]
        return Fetched(data, hashlib.sha256(data).hexdigest())

    return read


def test_each_results_json_is_read_once_and_its_digest_kept() -> None:
    document = _changed(
        lambda d: (
            d["upstream"][0]["parameters"].append("count"),
            d["results"].append(dict(d["results"][0], parameter="count", result="n")),
        )
    )
    upstream = _parse(document)
    url = "s3://b/runs/team-a/extract/results.json"
    data = json.dumps({"rows": [1, 2], "n": 2}).encode()
    reads: list[str] = []
    files = read_results(upstream, _reader({url: data}, reads))
    assert files == {url: ResultsFile({"rows": [1, 2], "n": 2}, hashlib.sha256(data).hexdigest())}
    assert reads == [url]
    assert pick_results(upstream, files) == {"rows": [1, 2], "count": 2}


def test_an_unreadable_results_json_names_the_run_and_url() -> None:
    with pytest.raises(BadInputError) as caught:
        read_results(_parse(VALID), _reader({}, []))
    assert caught.value.message.startswith(
        "cannot read the results of upstream run 'extract' from "
        "s3://b/runs/team-a/extract/results.json: cannot read "
    )
    assert "check that the run succeeded" in caught.value.message


def test_lineage_names_every_run_and_the_digest_of_what_was_read() -> None:
    upstream = _parse(VALID)
    url = "s3://b/runs/team-a/extract/results.json"
    assert upstream_lineage(upstream, {url: "ab12"}) == [
        {
            "name": "extract",
            "namespace": "team-a",
            "uid": "5b1c",
            "outputUrl": "s3://b/runs/team-a/extract/output.ipynb",
            "parameters": ["input_notebook", "rows"],
            "resultsUrl": url,
            "resultsSha256": "ab12",
        },
        {
            "name": "clean",
            "namespace": "team-a",
            "uid": "77aa",
            "outputUrl": "https://host/clean/output.ipynb",  # no credentials, no signature
            "parameters": ["table"],
        },
    ]
    assert "resultsSha256" not in upstream_lineage(upstream, {})[0]
