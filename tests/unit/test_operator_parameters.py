"""User data on its way into the runner pod: nothing Kubernetes expands, nothing Linux caps.

Kubernetes expands `$(VAR)` and `$$` in a container's command, args and env values, and Linux
refuses any single argument or environment string over 128 KiB. Parameters therefore travel in
ConfigMaps mounted as files, and every other string the operator writes into those fields is
escaped so that the expansion gives it back unchanged. Both are checked here against a Python
port of Kubernetes' own expansion code.
"""

from __future__ import annotations

import itertools
import json
import random
import string
from collections.abc import Mapping
from typing import Any

import pytest

from kubemill.operator.errors import AlreadyExists, InvalidSpec
from kubemill.operator.handlers import Reconciler
from kubemill.operator.jobs import (
    PARAMETERS_CHUNK_BYTES,
    build_job,
    build_parameter_config_maps,
    literal,
    split_utf8,
)
from kubemill.operator.meta import job_name
from kubemill.operator.references import Resolution
from kubemill_testenv.podconfig import expand as node_agent_expand
from tests.unit.test_operator_jobs import SETTINGS, container, make_run

# --- Kubernetes' expansion, ported line by line -----------------------------------------------


def k8s_expand(text: str, env: Mapping[str, str]) -> str:
    """kubernetes/third_party/forked/golang/expansion/expand.go `Expand` with the kubelet's
    mapping (`MappingFuncFor`: a defined name gives its value, an undefined one stays
    `$(NAME)`). Byte-wise in Go; `$`, `(` and `)` are ASCII, so character-wise is the same."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _try_read_variable_name(text[cursor + 1 :])
            if is_var:
                out.append(env.get(read, f"$({read})"))
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _try_read_variable_name(text: str) -> tuple[str, bool, int]:
    if text[0] == "$":  # escaped operator
        return text[0:1], False, 1
    if text[0] == "(":
        for i in range(1, len(text)):
            if text[i] == ")":
                return text[1:i], True, i + 1
        return "$(", False, 1  # incomplete reference
    return "$" + text[0], False, 1  # an operator that starts no expression


ENV = {"HOME": "/tmp", "KUBEMILL_RUN_NAME": "daily-report", "A": "a", "": "empty-name"}
PRINTABLE = "".join(chr(c) for c in range(32, 127))
TRICKY = [
    "",
    "$",
    "$$",
    "$$$",
    "$(",
    "$()",
    "$(HOME)",
    "$$(HOME)",
    "$$$(HOME)",
    "$(HOME",
    "$(UNDEFINED)",
    "price $$5, path $(HOME), run $(KUBEMILL_RUN_NAME)",
    "ends with $",
    "$(A)$(A)$$(A)$",
    "$(a$(A))",
    "back\\slash \\$(HOME) \"quoted\" 'single' new\nline\ttab",
    "é ∑ 😀 $(HOME) $é $😀",
    PRINTABLE,
    PRINTABLE + " $(HOME) $$ " + PRINTABLE[::-1],
]


def test_the_port_expands_as_kubernetes_documents() -> None:
    # The examples of the Kubernetes API reference (EnvVar.value) and expand_test.go.
    assert k8s_expand("$(HOME)", ENV) == "/tmp"
    assert k8s_expand("$$(HOME)", ENV) == "$(HOME)"
    assert k8s_expand("$(UNDEFINED)", ENV) == "$(UNDEFINED)"
    assert k8s_expand("price $$5", ENV) == "price $5"
    assert k8s_expand("$(HOME", ENV) == "$(HOME"
    assert k8s_expand("$$$(HOME)", ENV) == "$/tmp"
    assert k8s_expand("a$", ENV) == "a$"
    assert k8s_expand("$x$", ENV) == "$x$"


@pytest.mark.parametrize("text", TRICKY)
def test_the_node_agent_expands_like_kubernetes(text: str) -> None:
    # The e2e tests trust the node agent to treat args and env as a kubelet would.
    assert node_agent_expand(text, ENV) == k8s_expand(text, ENV)


@pytest.mark.parametrize("text", TRICKY)
def test_literal_round_trips_through_the_expansion(text: str) -> None:
    assert k8s_expand(literal(text), ENV) == text
    assert node_agent_expand(literal(text), ENV) == text


def test_literal_round_trips_random_text_made_of_the_expansions_own_characters() -> None:
    rng = random.Random(10)
    alphabet = "$()$$AHOME_\\\"'\n é😀" + string.printable
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert k8s_expand(literal(text), ENV) == text
        assert k8s_expand(text, ENV) == node_agent_expand(text, ENV)


def test_unescaped_text_is_what_issue_10_saw_corrupted() -> None:
    text = "price $$5, path $(HOME), run $(KUBEMILL_RUN_NAME)"
    assert k8s_expand(text, ENV) == "price $5, path /tmp, run daily-report"


# --- the Job: no parameter in args or env, every other string escaped --------------------------


def _operator_env(job: dict[str, Any], user_env: int = 0) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = container(job)["env"]
    return env[: len(env) - user_env]


def test_no_parameter_value_reaches_args_or_env() -> None:
    marker = "PARAMETER-VALUE-" + "x" * 200_000
    run = make_run(parameters={"text": marker, "n": 424242, "items": [marker[:50]]})
    job = build_job(run, SETTINGS)
    main = container(job)
    fields = json.dumps([main["command"], main["args"], main["env"]])
    assert "PARAMETER-VALUE" not in fields and "424242" not in fields
    assert max(len(a) for a in main["args"]) < 200


def test_every_operator_string_in_command_args_and_env_survives_the_expansion() -> None:
    tricky = "$(HOME)$$x$"
    settings = SETTINGS.__class__(
        **{
            **SETTINGS.__dict__,
            "runner_command": f"/opt/{tricky}/kubemill",
            "output_prefix": f"s3://results/{tricky}/",
            "s3_endpoint_url": f"http://s3.local/{tricky}",
        }
    )
    run = make_run(
        parameters={"a": PRINTABLE},
        kernel=f"python3{tricky}",
        parametersFrom=[{"name": f"pw{tricky}", "secretKeyRef": {"name": "db", "key": "pw"}}],
        env=[{"name": "MINE", "value": "$(HOME)/mine"}],
    )
    run["spec"]["notebook"] = f"s3://notebooks/{tricky}/daily.ipynb"
    main = container(build_job(run, settings))
    env = {e["name"]: e["value"] for e in _operator_env(build_job(run, settings)) if "value" in e}
    environment = {**ENV, **env}
    expanded_args = [k8s_expand(a, environment) for a in main["args"]]
    assert [k8s_expand(c, environment) for c in main["command"]] == [f"/opt/{tricky}/kubemill"]
    assert expanded_args[1] == f"s3://notebooks/{tricky}/daily.ipynb"
    assert expanded_args[2] == f"s3://results/{tricky}/analytics/daily-report/"
    assert f"--kernel=python3{tricky}" in expanded_args
    assert k8s_expand(env["AWS_ENDPOINT_URL"], ENV) == f"http://s3.local/{tricky}"
    assert k8s_expand(env["KUBEMILL_SECRET_PARAMS"], ENV) == f"pw{tricky}=KUBEMILL_SECRET_0"
    # The user's own env keeps Kubernetes' meaning: written as given.
    assert main["env"][-1] == {"name": "MINE", "value": "$(HOME)/mine"}


def test_a_notebook_from_a_config_map_key_is_escaped_too() -> None:
    run = make_run()
    del run["spec"]["notebook"]
    run["spec"]["notebookFrom"] = {"configMapKeyRef": {"name": "nb", "key": "a$$b.ipynb"}}
    args = container(build_job(run, SETTINGS))["args"]
    assert k8s_expand(args[1], ENV) == "/var/run/kubemill/notebook/a$$b.ipynb"


@pytest.mark.parametrize("kernel", ["python3", "-q", "--html", "--kernel", "a=b"])
def test_the_runner_reads_back_the_notebook_output_and_kernel_the_operator_meant(
    kernel: str,
) -> None:
    # What the runner's own parser makes of the Job's args, after Kubernetes' expansion: a
    # kernel name the CRD's pattern allows may start with "-" and must not become an option.
    from kubemill.cli import build_parser

    run = make_run(kernel=kernel, parameters={"a": 1})
    run["spec"]["notebook"] = "s3://notebooks/$(HOME)/x.ipynb"
    args = [k8s_expand(a, ENV) for a in container(build_job(run, SETTINGS))["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.kernel == kernel
    assert parsed.notebook == "s3://notebooks/$(HOME)/x.ipynb"
    assert parsed.output == "s3://results/runs/analytics/daily-report/"
    assert parsed.param_sources == [("J", ["/var/run/kubemill/parameters/parameters-0.json"])]
    assert not parsed.html


# --- the parameter ConfigMaps ------------------------------------------------------------------


def _join(config_maps: list[dict[str, Any]]) -> str:
    return "".join(cm["data"]["parameters.json"] for cm in config_maps)


def test_parameters_go_into_one_immutable_config_map_owned_by_the_run() -> None:
    parameters = {"text": "price $$5, path $(HOME)", "printable": PRINTABLE, "n": [1, 2.5, None]}
    run = make_run(parameters=parameters)
    config_maps = build_parameter_config_maps(run)
    job = build_job(run, SETTINGS)
    assert len(config_maps) == 1
    cm = config_maps[0]
    assert cm["metadata"]["name"] == f"{job['metadata']['name']}-parameters-0"
    assert cm["metadata"]["namespace"] == "analytics"
    assert cm["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]
    assert cm["metadata"]["labels"] == job["metadata"]["labels"]
    assert cm["immutable"] is True
    assert json.loads(_join(config_maps)) == parameters
    pod = job["spec"]["template"]["spec"]
    assert {
        "name": "parameters",
        "projected": {
            "sources": [
                {
                    "configMap": {
                        "name": cm["metadata"]["name"],
                        "items": [{"key": "parameters.json", "path": "parameters-0.json"}],
                    }
                }
            ]
        },
    } in pod["volumes"]
    assert {
        "name": "parameters",
        "mountPath": "/var/run/kubemill/parameters",
        "readOnly": True,
    } in container(job)["volumeMounts"]


def test_values_from_other_runs_reach_the_runner_in_parameters_and_the_upstream_file() -> None:
    refs = [
        {"name": "rows", "notebookRunRef": {"name": "extract", "result": "rows"}},
        {"name": "big", "notebookRunRef": {"name": "extract", "result": "big"}},
        {"name": "token", "secretKeyRef": {"name": "creds", "key": "token"}},
    ]
    run = make_run(parameters={"day": "2027-01-01"}, parametersFrom=refs)
    upstream = {
        "upstream": [{"name": "extract", "namespace": "analytics", "uid": "u", "outputUrl": "x",
                      "parameters": ["rows", "big"]}],
        "results": [{"parameter": "big", "run": "extract", "result": "big", "url": "x/r.json"}],
    }  # fmt: skip
    resolved = Resolution(inline={"rows": [1, None]}, upstream=upstream)
    config_maps = build_parameter_config_maps(run, resolved)
    job = build_job(run, SETTINGS, resolved)
    name = job["metadata"]["name"]
    # One ConfigMap: the upstream file rides with the parameters (one API write per run).
    assert [cm["metadata"]["name"] for cm in config_maps] == [f"{name}-parameters-0"]
    assert json.loads(config_maps[0]["data"]["parameters.json"]) == {
        "day": "2027-01-01",
        "rows": [1, None],
    }
    assert json.loads(config_maps[0]["data"]["upstream.json"]) == upstream
    args = container(job)["args"]
    at = args.index("--upstream-file")
    assert args[at + 1] == "/var/run/kubemill/parameters/upstream.json"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "parameters")
    assert volume["projected"]["sources"][-1] == {
        "configMap": {
            "name": f"{name}-parameters-0",
            "items": [{"key": "upstream.json", "path": "upstream.json"}],
        }
    }
    # The secret still goes through the environment only; the references do not.
    env = {e["name"]: e for e in container(job)["env"]}
    secret = env["KUBEMILL_SECRET_2"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "creds", "key": "token"}


@pytest.mark.parametrize(
    ("parameters", "limit", "homes"),
    [
        ({}, 1000, ["-upstream"]),  # no parameters of its own: a ConfigMap for the file
        ({"p": "x" * 900}, 1000, ["-parameters-0", "-upstream"]),  # no room beside the part
        ({"p": "x" * 10}, 1000, ["-parameters-0"]),
    ],
)
def test_the_upstream_file_rides_with_the_last_part_when_it_fits(
    parameters: dict[str, Any], limit: int, homes: list[str]
) -> None:
    refs = [{"name": "big", "notebookRunRef": {"name": "extract", "result": "big"}}]
    run = make_run(parameters=parameters, parametersFrom=refs)
    fetch = [{"parameter": "big", "run": "extract", "result": "big", "url": "s3://r/x.json"}]
    resolved = Resolution(upstream={"upstream": [], "results": fetch})
    config_maps = build_parameter_config_maps(run, resolved, limit=limit)
    job = job_name(run["metadata"]["name"], run["metadata"]["uid"])
    assert [cm["metadata"]["name"].removeprefix(job) for cm in config_maps] == homes
    assert sum("upstream.json" in cm["data"] for cm in config_maps) == 1


def test_a_run_without_parameters_has_no_config_map_and_no_mount() -> None:
    for run in (make_run(), make_run(parameters={})):
        job = build_job(run, SETTINGS)
        assert build_parameter_config_maps(run) == []
        assert "--parameters-json-file" not in container(job)["args"]
        assert all(v["name"] != "parameters" for v in job["spec"]["template"]["spec"]["volumes"])


def test_a_large_parameter_set_is_split_and_every_part_is_mounted_in_order() -> None:
    # About what etcd accepts in one NotebookRun: 1.2 MB, with multibyte characters.
    parameters = {"rows": [f"row {i} é😀 $(HOME)" for i in range(50_000)], "x": "∑" * 100_000}
    run = make_run(parameters=parameters)
    config_maps = build_parameter_config_maps(run)
    text = json.dumps(parameters, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert len(text.encode()) > PARAMETERS_CHUNK_BYTES
    assert len(config_maps) == 2
    sizes = [len(cm["data"]["parameters.json"].encode()) for cm in config_maps]
    assert all(0 < size <= PARAMETERS_CHUNK_BYTES for size in sizes)
    assert _join(config_maps) == text
    job = build_job(run, SETTINGS)
    name = job_name("daily-report", run["metadata"]["uid"])
    volume = next(
        v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "parameters"
    )
    sources = [s["configMap"] for s in volume["projected"]["sources"]]
    assert [s["name"] for s in sources] == [f"{name}-parameters-0", f"{name}-parameters-1"]
    assert [cm["metadata"]["name"] for cm in config_maps] == [s["name"] for s in sources]
    paths = [s["items"][0]["path"] for s in sources]
    args = container(job)["args"]
    at = args.index("--parameters-json-file")
    assert args[at + 1 : at + 3] == [f"/var/run/kubemill/parameters/{p}" for p in paths]


def test_the_config_maps_are_the_same_on_every_attempt() -> None:
    # A retried create must meet the same objects (409, adopted), whatever the key order.
    a = build_parameter_config_maps(make_run(parameters={"b": 1, "a": {"y": 2, "x": 3}}))
    b = build_parameter_config_maps(make_run(parameters={"a": {"x": 3, "y": 2}, "b": 1}))
    assert a == b


@pytest.mark.parametrize(
    ("text", "limit", "parts"),
    [
        ("", 4, []),
        ("abcd", 4, ["abcd"]),  # exactly at the limit: one part
        ("abcde", 4, ["abcd", "e"]),  # one byte over: two
        ("abcdefgh", 4, ["abcd", "efgh"]),
        ("abc€", 4, ["abc", "€"]),  # € is 3 bytes: not cut after its first
        ("ab€d", 4, ["ab", "€d"]),
        ("a€", 4, ["a€"]),  # 1 + 3 bytes: exactly the limit
        ("😀😀", 4, ["😀", "😀"]),  # 4-byte characters, exactly the limit each
        ("a😀", 4, ["a", "😀"]),
        ("éééé", 5, ["éé", "éé"]),  # 2-byte characters, an odd limit
        ("ééééé", 6, ["ééé", "éé"]),
    ],
)
def test_split_utf8_cuts_only_between_characters(text: str, limit: int, parts: list[str]) -> None:
    assert split_utf8(text.encode(), limit) == parts


def test_split_utf8_joins_back_and_fills_each_part_at_random_limits() -> None:
    rng = random.Random(7)
    alphabet = 'a$\\"é€😀∑\n'
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        limit = rng.randint(4, 40)
        parts = split_utf8(text.encode(), limit)
        assert "".join(parts) == text
        sizes = [len(p.encode()) for p in parts]
        assert all(0 < s <= limit for s in sizes)
        # A part is cut short only when the next character would not fit.
        for part, following in itertools.pairwise(parts):
            assert len(part.encode()) + len(following[0].encode()) > limit


def test_the_limit_is_exact_on_a_real_parameter_set() -> None:
    limit = 1000
    config_maps = build_parameter_config_maps(make_run(parameters={"s": "x" * 5000}), limit=limit)
    sizes = [len(cm["data"]["parameters.json"].encode()) for cm in config_maps]
    assert sizes[:-1] == [limit] * (len(sizes) - 1)
    assert sum(sizes) == len('{"s":"' + "x" * 5000 + '"}')


# --- the controller creates the ConfigMaps before the Job, and adopts them ----------------------


class FakeCluster:
    def __init__(self, configmap_error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.configmap_error = configmap_error

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        self.calls.append(("job", job["metadata"]["name"]))

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        self.calls.append(("configmap", config_map["metadata"]["name"]))
        if self.configmap_error is not None:
            raise self.configmap_error

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        raise AssertionError("not expected")

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        raise AssertionError("not expected")


def test_config_maps_are_created_before_the_job() -> None:
    cluster = FakeCluster()
    run = make_run(parameters={"a": 1})
    job, invalid = Reconciler(cluster, SETTINGS)._ensure_job(run, Resolution())
    name = job_name("daily-report", run["metadata"]["uid"])
    assert invalid is None and job is not None
    assert cluster.calls == [("configmap", f"{name}-parameters-0"), ("job", name)]


def test_existing_config_maps_are_adopted() -> None:
    cluster = FakeCluster(AlreadyExists("x"))
    run = make_run(parameters={"a": 1})
    job, invalid = Reconciler(cluster, SETTINGS)._ensure_job(run, Resolution())
    assert invalid is None and job is not None
    assert [kind for kind, _ in cluster.calls] == ["configmap", "job"]


def test_a_rejected_config_map_makes_the_run_invalid_and_no_job() -> None:
    cluster = FakeCluster(InvalidSpec("ConfigMap x was rejected: too long"))
    run = make_run(parameters={"a": 1})
    job, invalid = Reconciler(cluster, SETTINGS)._ensure_job(run, Resolution())
    assert job is None and invalid == "ConfigMap x was rejected: too long"
    assert [kind for kind, _ in cluster.calls] == ["configmap"]
