"""One set of rules for apply time and run time: the CRDs and admission policies in crds/ are
written from kubemill.runner.rules and kubemill.operator.schema_rules, and the runner and the
operator check the same rules. The API server's side of each rule is exercised in
tests/e2e/test_crd_validation.py."""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.jobs import build_job
from kubemill.operator.schema_rules import (
    NOTEBOOK_URL_PATTERN,
    OUTPUT_PREFIX_PATTERN,
    RESERVED_ENV_PREFIX,
    cel_string,
    run_spec_rules,
    schema_at,
)
from kubemill.operator.settings import Settings
from kubemill.operator.spec import notebook_input, output_folder, parse_duration
from kubemill.runner.contract import (
    ENV_RUN_IDENTITY,
    ENV_SECRET_PARAMS,
    ENV_TERMINATION_MESSAGE_PATH,
)
from kubemill.runner.errors import BadInputError
from kubemill.runner.parameters import validate_parameters
from kubemill.runner.rules import (
    DURATION_PATTERN,
    KEYWORDS,
    PARAMETER_NAME_PATTERN,
    duration_seconds,
    parameter_name_problem,
)
from kubemill.runner.storage import Location
from tests import hack_scripts

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def _hack(module: str) -> Any:
    return hack_scripts.load(module)


def _policy_keywords(path: Path) -> list[str]:
    policy = next(yaml.safe_load_all(path.read_text()))
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    # A CEL list of single-quoted strings is also a Python literal.
    return list(ast.literal_eval(variables["keywords"]))


def test_the_policies_are_generated_from_the_rules() -> None:
    """crds/*-policy.yaml are written by hack/gen_policies.py; run `make crds` after changing
    kubemill.runner.rules or the template variables."""
    gen = _hack("gen_policies")
    assert gen.RUN_POLICY.read_text() == gen.render(gen.RUN_HEADER, gen.run_policy()), (
        "the NotebookRun policy is stale: run make crds"
    )
    assert gen.SCHEDULE_POLICY.read_text() == gen.render(
        gen.SCHEDULE_HEADER, gen.schedule_policy()
    ), "the NotebookSchedule policy is stale: run make crds"
    assert gen.WORKFLOW_POLICY.read_text() == gen.render(
        gen.WORKFLOW_HEADER, gen.workflow_policy()
    ), "the NotebookWorkflow policy is stale: run make crds"


@pytest.mark.parametrize(
    "policy",
    [
        "notebookrun-parameters-policy.yaml",
        "notebookschedule-template-policy.yaml",
        "notebookworkflow-steps-policy.yaml",
    ],
)
def test_each_policy_refuses_exactly_the_keywords_the_runner_refuses(policy: str) -> None:
    listed = _policy_keywords(CRDS / policy)
    assert listed == keyword.kwlist
    for name in listed:
        assert re.fullmatch(PARAMETER_NAME_PATTERN, name), name  # so only the keyword rule stops it
        with pytest.raises(BadInputError, match="is a Python keyword"):
            validate_parameters({name: 1}, [], None, allow_unknown=True)
        with pytest.raises(BadInputError, match="is a Python keyword"):
            validate_parameters({}, [name], None, allow_unknown=True)


def _accepted_at_apply_time(name: str) -> bool:
    return bool(re.fullmatch(PARAMETER_NAME_PATTERN, name)) and name not in KEYWORDS


@pytest.mark.parametrize(
    ("name", "apply_time", "run_time"),
    [
        ("alpha", True, True),
        ("_private", True, True),
        ("x2", True, True),
        ("__dunder__", True, True),
        # Soft keywords are valid assignment targets: `match = 1` runs.
        ("match", True, True),
        ("case", True, True),
        ("type", True, True),
        ("_", True, True),
        ("class", False, False),
        ("None", False, False),
        ("True", False, False),
        ("import", False, False),
        ("await", False, False),
        ("2fast", False, False),
        ("my-name", False, False),
        ("", False, False),
        # The API server is stricter than the runner here, never the other way round.
        ("größe", False, True),
    ],
)
def test_parameter_names_accepted_at_apply_time_run(
    name: str, apply_time: bool, run_time: bool
) -> None:
    assert _accepted_at_apply_time(name) is apply_time
    assert (parameter_name_problem(name) is None) is run_time
    if run_time:
        exec(f"{name} = 1", {})  # the injected cell's assignment compiles and runs


def test_every_keyword_fails_in_an_injected_cell() -> None:
    for name in KEYWORDS:
        with pytest.raises(SyntaxError):
            compile(f"{name} = 1", "<injected>", "exec")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("1000ms", 1),
        ("1.5s", 1.5),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("0.5m", 30),
        ("2h0m0s", 7200),
        ("0100000ms", 100),
        ("3000000h", 10_800_000_000),
        ("9999999h9999999h", 71_999_992_800),
    ],
)
def test_durations_the_crd_accepts_are_read_alike(text: str, seconds: float) -> None:
    assert re.fullmatch(DURATION_PATTERN, text)
    assert duration_seconds(text) == seconds
    assert parse_duration(text, "spec.timeout") == seconds


@pytest.mark.parametrize(
    "text",
    [
        *("0s", "0m", "0.0s", "0ms", "00h", "0000000s", "500ms", "999ms", "0.9s", "0.1234567s"),
        *("2 hours", "1d", "1s\n", " 1s", "", "99999999h", "86400000ms", "1" * 19 + "s"),
    ],
)
def test_durations_below_a_second_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        duration_seconds(text)
    with pytest.raises(InvalidSpec, match="at least 1s"):
        parse_duration(text, "spec.timeout")


def _run_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / "kubemill.dev_notebookruns.yaml").read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


@pytest.mark.parametrize("path", sorted(run_spec_rules()))
def test_the_run_crd_carries_the_shared_rules(path: str) -> None:
    """Each rule kubemill.operator.schema_rules holds for a field of the NotebookRun CRD is
    there exactly (the schedule CRD then copies them)."""
    node = schema_at(_run_spec_schema(), path)
    for key, value in run_spec_rules()[path].items():
        assert node.get(key) == value, (
            f"crds/kubemill.dev_notebookruns.yaml: spec.{path}.{key} differs from "
            "kubemill.operator.schema_rules.run_spec_rules(): run make crds"
        )


def test_make_crds_leaves_the_run_crd_as_committed() -> None:
    """hack/sync_run_crd.py rewrites only what the rules change: on the committed file, nothing."""
    sync = _hack("sync_run_crd")
    text = sync.RUN_CRD.read_text()
    assert sync.render(text) == text, "the NotebookRun CRD lacks a shared rule: run make crds"


def test_the_timeout_rules_come_from_the_runner_rules() -> None:
    spec = _run_spec_schema()
    for field in ("timeout", "startTimeout", "cellTimeout"):
        rules = [r["rule"] for r in spec["properties"][field]["x-kubernetes-validations"]]
        assert any(DURATION_PATTERN.replace("\\", "\\\\") in r for r in rules)
        assert any("duration('1s')" in r for r in rules)
    name = spec["properties"]["parametersFrom"]["items"]["properties"]["name"]
    assert name["pattern"] == PARAMETER_NAME_PATTERN


def test_the_schedule_template_names_its_own_fields() -> None:
    """The template's copies of the run's rules say spec.runTemplate.spec.x, not spec.x."""
    crd = yaml.safe_load((CRDS / "kubemill.dev_notebookschedules.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    template = spec["properties"]["runTemplate"]
    timeout = template["properties"]["spec"]["properties"]["timeout"]
    messages = [r["message"] for r in timeout["x-kubernetes-validations"]]
    assert all(m.startswith("spec.runTemplate.spec.timeout ") for m in messages), messages
    labels = template["properties"]["metadata"]["properties"]["labels"]
    assert (
        "spec.runTemplate.metadata.labels"
        in labels["x-kubernetes-validations"][1]["messageExpression"]
    )


@pytest.mark.parametrize(
    ("spec", "accepted"),
    [
        ({"notebook": "s3://b/n.ipynb", "output": "s3://my-bucket/results/"}, True),
        ({"notebook": "https://example.org/n.ipynb", "output": "s3://a.b-c"}, True),
        ({"notebook": "s3://b/", "output": "s3://my-bucket/"}, False),
        ({"notebook": "ftp://h/n.ipynb", "output": "s3://my-bucket/"}, False),
        ({"notebook": "s3://b/n.ipynb", "output": "s3://My_Bucket/results/"}, False),
        ({"notebook": "s3://b/n.ipynb", "output": "s3://ab/"}, False),
    ],
)
def test_the_operator_reads_sources_and_outputs_by_the_crds_rules(
    spec: dict[str, str], accepted: bool
) -> None:
    schema = _run_spec_schema()["properties"]
    crd = all(
        re.fullmatch(pattern, spec[field])
        for field, pattern in (
            ("notebook", NOTEBOOK_URL_PATTERN),
            ("output", OUTPUT_PREFIX_PATTERN),
        )
    )
    assert crd is accepted
    for field in ("notebook", "output"):
        assert (
            cel_string(NOTEBOOK_URL_PATTERN if field == "notebook" else OUTPUT_PREFIX_PATTERN)
            in schema[field]["x-kubernetes-validations"][0]["rule"]
        )
    if accepted:
        notebook_input(spec)
        output_folder(spec, "ns", "run", Settings())
    else:
        with pytest.raises(InvalidSpec):
            notebook_input(spec)
            output_folder(spec, "ns", "run", Settings())


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [
        ("s3://b/reports/q#1.ipynb", "b", "reports/q#1.ipynb"),
        ("s3://b/a?x=1.ipynb", "b", "a?x=1.ipynb"),
        ("s3://bkt/dir/", "bkt", "dir/"),
        ("s3://my-bucket/results/", "my-bucket", "results/"),
    ],
)
def test_s3_urls_the_crd_accepts_are_read_as_written(url: str, bucket: str, key: str) -> None:
    """'#' and '?' are ordinary characters of an S3 key: the runner reads the object named."""
    pattern = NOTEBOOK_URL_PATTERN if not url.endswith("/") else OUTPUT_PREFIX_PATTERN
    assert re.fullmatch(pattern, url)
    location = Location.parse(url)
    assert (location.scheme, location.bucket, location.key) == ("s3", bucket, key)


def test_every_variable_the_operator_sets_for_the_runner_is_reserved() -> None:
    """A user's env entry of the same name would come later and win."""
    run = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
        "spec": {
            "notebook": "s3://b/n.ipynb",
            "parametersFrom": [{"name": "token", "secretKeyRef": {"name": "s", "key": "k"}}],
        },
    }
    job = build_job(run, Settings(output_prefix="s3://bkt/"))
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    ours = {e["name"] for e in env} - {"HOME", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"}
    ours -= {"MPLCONFIGDIR", "PYTHONUNBUFFERED", "AWS_ENDPOINT_URL"}
    assert ours and all(name.startswith(RESERVED_ENV_PREFIX) for name in ours), ours
    names = [*ENV_RUN_IDENTITY.values(), ENV_SECRET_PARAMS, ENV_TERMINATION_MESSAGE_PATH]
    assert all(name.startswith(RESERVED_ENV_PREFIX) for name in names)
