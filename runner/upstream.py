"""Values from upstream runs: the upstream file, the results.json it points to, and lineage.

The operator resolves a NotebookRun's `notebookRunRef` parameters. Small values it passes inline
with the other parameters; a result too large for the upstream run's status (and so for the
operator, which holds no S3 credentials) it names in the upstream file, and the runner reads it
from that run's results.json with the credentials it reads the notebook with. Every upstream run
is listed there too, so the run's lineage names where its values came from.

Parsing and picking values are pure; reading takes the storage's `read` as an argument.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadInputError, RunnerError
from .storage import Fetched, Location, display_uri

__all__ = [
    "ResultRef",
    "ResultsFile",
    "Upstream",
    "UpstreamRun",
    "check_overlap",
    "parse_upstream",
    "pick_result",
    "pick_results",
    "read_results",
    "results_document",
    "upstream_lineage",
]

#: How many of an upstream run's result names a "no such result" message lists: enough to spot
#: a typo, few enough to keep the message (and the run's summary) one readable line.
SHOWN_NAMES = 10

_TOP_FIELDS = ("upstream", "results")
_RUN_FIELDS = ("name", "namespace", "uid", "outputUrl", "parameters")
_RESULT_FIELDS = ("parameter", "run", "result", "url")


@dataclass(frozen=True)
class UpstreamRun:
    """A NotebookRun this run takes values from."""

    name: str
    namespace: str
    uid: str
    output_url: str
    #: The names of this run's parameters whose values came from it (inline or read here).
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class ResultRef:
    """A recorded result the runner reads itself: parameter `parameter` gets result `result`
    of upstream run `run`, from its results.json at `url`."""

    parameter: str
    run: str
    result: str
    url: str


@dataclass(frozen=True)
class Upstream:
    """What `--upstream-file` says; empty when there is none."""

    runs: tuple[UpstreamRun, ...] = ()
    results: tuple[ResultRef, ...] = ()


@dataclass(frozen=True)
class ResultsFile:
    """An upstream run's results.json as read: its results, and the SHA-256 of its bytes."""

    document: dict[str, Any]
    sha256: str


# --- the upstream file ------------------------------------------------------------------------


def _fields(value: Any, where: str, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """`value` as an object with exactly the fields `names`."""
    if not isinstance(value, dict):
        raise BadInputError(
            f"{what}: {where} must be an object with {', '.join(names)}, got {_kind(value)}"
        )
    missing = [name for name in names if name not in value]
    if missing:
        raise BadInputError(f"{what}: {where} has no {', '.join(missing)}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise BadInputError(
            f"{what}: {where} has unknown field {', '.join(map(repr, unknown))}; "
            f"the fields are {', '.join(names)}"
        )
    return value


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInputError(f"{what}: {where} must be a non-empty string, got {_kind(value)}")
    return value


def _list(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadInputError(f"{what}: {where} must be a list, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _run(value: Any, where: str, what: str) -> UpstreamRun:
    item = _fields(value, where, _RUN_FIELDS, what)
    parameters = _list(item["parameters"], f"{where}.parameters", what)
    names = [_text(p, f"{where}.parameters[{i}]", what) for i, p in enumerate(parameters)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise BadInputError(f"{what}: {where}.parameters[{i}] repeats {name!r}")
    return UpstreamRun(
        name=_text(item["name"], f"{where}.name", what),
        namespace=_text(item["namespace"], f"{where}.namespace", what),
        uid=_text(item["uid"], f"{where}.uid", what),
        output_url=_text(item["outputUrl"], f"{where}.outputUrl", what),
        parameters=tuple(names),
    )


def _result(value: Any, where: str, what: str) -> ResultRef:
    item = _fields(value, where, _RESULT_FIELDS, what)
    url = _text(item["url"], f"{where}.url", what)
    try:
        scheme = Location.parse(url).scheme
    except BadInputError as exc:
        raise BadInputError(f"{what}: {where}.url: {exc.message}") from None
    if scheme == "-":
        raise BadInputError(f"{what}: {where}.url must be a path, s3:// or http(s):// URL, not -")
    return ResultRef(
        parameter=_text(item["parameter"], f"{where}.parameter", what),
        run=_text(item["run"], f"{where}.run", what),
        result=_text(item["result"], f"{where}.result", what),
        url=url,
    )


def _check_runs(runs: list[UpstreamRun], what: str) -> None:
    """Names identify runs in `results[].run`, and a parameter has one source."""
    supplier: dict[str, str] = {}
    for i, run in enumerate(runs):
        if any(other.name == run.name for other in runs[:i]):
            raise BadInputError(
                f"{what}: upstream[{i}].name {run.name!r} is listed twice; list each run once"
            )
        for name in run.parameters:
            if name in supplier:
                raise BadInputError(
                    f"{what}: upstream[{i}].parameters: {name!r} is also supplied by upstream "
                    f"run {supplier[name]!r}; a parameter has one source"
                )
            supplier[name] = run.name


def _check_results(results: list[ResultRef], runs: list[UpstreamRun], what: str) -> None:
    """Each result comes from a listed run that says it supplies it, one results.json per run."""
    by_name = {run.name: run for run in runs}
    first: dict[str, ResultRef] = {}
    seen: set[str] = set()
    for i, ref in enumerate(results):
        where = f"results[{i}]"
        run = by_name.get(ref.run)
        if run is None:
            listed = ", ".join(by_name) or "none"
            raise BadInputError(
                f"{what}: {where}.run {ref.run!r} is not a run listed in upstream "
                f"(listed: {listed}); add it there"
            )
        if ref.parameter not in run.parameters:
            raise BadInputError(
                f"{what}: {where}.parameter {ref.parameter!r} is not in the parameters of "
                f"upstream run {ref.run!r}; add it there"
            )
        if ref.parameter in seen:
            raise BadInputError(
                f"{what}: {where}.parameter {ref.parameter!r} is given twice; give it once"
            )
        seen.add(ref.parameter)
        earlier = first.setdefault(ref.run, ref)
        if earlier.url != ref.url:
            raise BadInputError(
                f"{what}: {where}.url {ref.url!r} differs from {earlier.url!r}, given earlier "
                f"for upstream run {ref.run!r}; a run has one results.json"
            )


def parse_upstream(data: bytes, what: str) -> Upstream:
    """The upstream file's content, checked field by field; `what` names the file in errors.

    Strict, because the operator writes it: a field it did not mean is a bug to report, never
    something to guess around.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{what} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    top = _fields(document, "the file", _TOP_FIELDS, what)
    runs = [
        _run(item, f"upstream[{i}]", what)
        for i, item in enumerate(_list(top["upstream"], "upstream", what))
    ]
    results = [
        _result(item, f"results[{i}]", what)
        for i, item in enumerate(_list(top["results"], "results", what))
    ]
    _check_runs(runs, what)
    _check_results(results, runs, what)
    return Upstream(tuple(runs), tuple(results))


def check_overlap(upstream: Upstream, given: Iterable[str]) -> None:
    """A parameter read from upstream results and also given another way has two values, and
    neither is obviously the one meant."""
    given = set(given)
    for ref in upstream.results:
        if ref.parameter in given:
            raise BadInputError(
                f"parameter {ref.parameter!r} is given both by the upstream file (result "
                f"{ref.result!r} of run {ref.run!r}) and by another parameter option; "
                "give it once"
            )


# --- reading the results ----------------------------------------------------------------------


def results_document(data: bytes, ref: ResultRef) -> dict[str, Any]:
    """An upstream run's results.json as a mapping of result names to values."""
    where = f"the results of upstream run {ref.run!r} at {display_uri(ref.url)}"
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInputError(f"{where} are not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{where} are not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "point the url at the run folder's results.json"
        ) from None
    if not isinstance(document, dict):
        raise BadInputError(
            f"{where} are not a JSON object of result names to values, got "
            f"{type(document).__name__}; point the url at the run folder's results.json"
        )
    return document


def pick_result(document: Mapping[str, Any], ref: ResultRef) -> Any:
    """Result `ref.result` of `document`, with its JSON type; missing, an error naming what the
    upstream run did record."""
    if ref.result in document:
        return document[ref.result]
    names = sorted(document)
    shown = ", ".join(names[:SHOWN_NAMES]) or "none"
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    raise BadInputError(
        f"upstream run {ref.run!r} recorded no result {ref.result!r} (its results at "
        f"{display_uri(ref.url)} are: {shown}{more}); record it in that notebook with "
        f"kubemill.record({ref.result!r}, value), or name one of these for parameter "
        f"{ref.parameter!r}"
    )


def read_results(upstream: Upstream, read: Callable[[Location], Fetched]) -> dict[str, ResultsFile]:
    """Each results.json `upstream.results` points to, by URL, read once (it can be large)."""
    files: dict[str, ResultsFile] = {}
    for ref in upstream.results:
        if ref.url in files:
            continue
        try:
            fetched = read(Location.parse(ref.url))
        except RunnerError as exc:
            raise BadInputError(
                f"cannot read the results of upstream run {ref.run!r} from "
                f"{display_uri(ref.url)}: {exc.message}; check that the run succeeded with "
                "a run folder there and that this runner's credentials can read it"
            ) from None
        files[ref.url] = ResultsFile(results_document(fetched.data, ref), fetched.sha256)
    return files


def pick_results(upstream: Upstream, files: Mapping[str, ResultsFile]) -> dict[str, Any]:
    """The parameters `upstream.results` name, from the files `read_results` read."""
    return {ref.parameter: pick_result(files[ref.url].document, ref) for ref in upstream.results}


def upstream_lineage(upstream: Upstream, digests: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each upstream run as lineage records it, with the results.json read from it, if any."""
    urls = {ref.run: ref.url for ref in upstream.results}
    out = []
    for run in upstream.runs:
        entry: dict[str, Any] = {
            "name": run.name,
            "namespace": run.namespace,
            "uid": run.uid,
            "outputUrl": display_uri(run.output_url),
            "parameters": list(run.parameters),
        }
        url = urls.get(run.name)
        if url is not None and url in digests:
            entry["resultsUrl"] = display_uri(url)
            entry["resultsSha256"] = digests[url]
        out.append(entry)
    return out
