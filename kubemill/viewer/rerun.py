"""Run it again: a NotebookRun manifest that re-runs an executed notebook, with the same or
edited parameters, built from a form of the parameters the notebook declares.

Pure functions of the executed notebook's bytes and the form's values: the viewer's handler
(`actions.py`) reads the notebook and answers with `form_html` (a page that works without
script) or `form_json` (what the page's script asks for while a person types).

What the notebook tells: its `parameters` cell, read as `kubemill inspect` reads it
(`kubemill.runner.parameters.read_parameters_cell`), gives the names, types, defaults and help;
`metadata.kubemill` gives the run's values, its input notebook's URI, its namespace and name,
and its output folder (whose prefix becomes `spec.output`). A value typed into the form is read
as the runner's type rules expect (`check_type`), see `parse_value`; a field left empty is left
out of the manifest, so the notebook's default applies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubemill.runner.parameters import (
    PARAMETERS_TAG,
    Declared,
    check_type,
    infer_cli_value,
    read_parameters_cell,
)
from kubemill.runner.rules import (
    NOTEBOOK_URL_PATTERN,
    OUTPUT_PREFIX_PATTERN,
    parameter_name_problem,
)

from . import nbread
from .nbread import mapping as _mapping
from .nbread import string as _string
from .pages import esc

__all__ = [
    "API_VERSION",
    "KIND",
    "Form",
    "RerunSource",
    "ValueProblem",
    "build_form",
    "build_manifest",
    "form_html",
    "form_json",
    "form_text",
    "manifest_yaml",
    "parse_value",
    "read_source",
]

API_VERSION = "kubemill.dev/v1alpha1"
KIND = "NotebookRun"
#: The form's field for parameter NAME is `PARAM_PREFIX + NAME`; the other fields have names
#: without a dot, so the two cannot collide.
PARAM_PREFIX = "p."
#: The fields besides the parameters, in the form's order.
FIXED_FIELDS = ("name", "namespace", "notebook", "output", "image")
#: The CRD's limits (crds/kubemill.dev_notebookruns.yaml), checked here with its patterns
#: (kubemill.runner.rules) so the manifest the page shows is one the API server accepts: a
#: person learns of a typo before `kubectl apply`.
URL_MAX = 2048
IMAGE_MAX = 1024
#: A DNS-1123 label: a namespace's rule, and for the run's name the stricter of the rules its
#: children need (the operator names its Job `<run>-<hash>` within 63 characters, and Job
#: names become pod labels).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63
#: generateName's prefix leaves room for the 5 characters the API server appends.
GENERATE_NAME_MAX = NAME_MAX - 5
#: The annotation that links a re-run to the output it was made from.
RERUN_OF = "kubemill.dev/rerun-of"


class ValueProblem(ValueError):
    """A form value that does not fit its parameter; the message says what was expected."""


class DroppedNull(ValueProblem):
    """A value with a null the API server would drop (`_carried`)."""


@dataclass(frozen=True)
class RerunSource:
    """What an executed notebook says about re-running it."""

    #: The input notebook's URI as the run read it (metadata.kubemill.input.uri).
    notebook: str | None
    namespace: str | None
    #: The NotebookRun's name, else None (a run made by `kubemill run` by hand).
    run: str | None
    #: The S3 prefix the run's folder was made under (`<output>/<namespace>/<name>/`).
    output_prefix: str | None
    #: Where this output was written (for the rerun-of annotation).
    output: str | None
    #: The run's parameter values (secret ones are not there: run.json never has them).
    parameters: Mapping[str, Any]
    #: Parameters whose values came from a Secret, by name.
    secret_names: tuple[str, ...]
    #: The parameters cell's declarations; empty when the notebook has no parameters cell.
    declared: tuple[Declared, ...]
    has_parameters_cell: bool
    #: Lines of the parameters cell that could not be read (as `kubemill inspect` warns).
    unreadable: tuple[str, ...] = ()
    #: Parameters that came from other runs (`parametersFrom[].notebookRunRef`): (name, run).
    from_runs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Field:
    """One parameter's row of the form."""

    name: str
    type: str | None
    default: str
    help: str
    text: str
    error: str | None = None
    #: Declared by the notebook (False: a value the run had for a name it does not declare).
    declared: bool = True


@dataclass(frozen=True)
class Form:
    """The form as shown, and the manifest its values give (None while a value is wrong)."""

    fields: tuple[Field, ...]
    values: Mapping[str, str]  # the fixed fields' texts, by name
    errors: Mapping[str, str]  # the fixed fields' problems, by name
    manifest: dict[str, Any] | None
    notes: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return self.manifest is not None


# --- reading the notebook -------------------------------------------------------------------


def read_source(data: bytes) -> RerunSource:
    """What the executed notebook `data` says about re-running it; ValueProblem when it is not
    a notebook at all."""
    try:
        raw = nbread.load(data)
    except nbread.NotebookUnreadable as exc:
        raise ValueProblem(str(exc)) from None
    run = nbread.run_metadata(raw)
    identity = _mapping(run.get("identity"))
    source = _mapping(run.get("input"))
    namespace, name = _string(identity.get("namespace")), _string(identity.get("run"))
    output = _string(run.get("output"))
    prefix = None
    if output and namespace and name:
        tail = f"/{namespace}/{name}/output.ipynb"
        if output.startswith("s3://") and output.endswith(tail):
            prefix = output[: -len(tail)] + "/"
    cell = next(
        (
            c
            for c in raw["cells"]
            if isinstance(c, dict)
            and c.get("cell_type") == "code"
            and PARAMETERS_TAG in nbread.tags(c)
        ),
        None,
    )
    declared: tuple[Declared, ...] = ()
    unreadable: tuple[str, ...] = ()
    if cell is not None:
        read = read_parameters_cell(nbread.text(cell.get("source")))
        declared = tuple(read.declared)
        unreadable = tuple(u.describe() for u in read.unreadable)
    parameters = run.get("parameters")
    from_runs = []
    upstream = run.get("upstream")
    for entry in map(_mapping, upstream if isinstance(upstream, list) else []):
        given = entry.get("parameters")
        for name in given if isinstance(given, list) else []:
            from_runs.append((str(name), str(entry.get("name") or "?")))
    return RerunSource(
        notebook=_string(source.get("uri")),
        namespace=namespace,
        run=name,
        output_prefix=prefix,
        output=output,
        parameters=dict(parameters) if isinstance(parameters, Mapping) else {},
        secret_names=tuple(sorted(str(k) for k in _mapping(run.get("secretParameters")))),
        declared=declared,
        has_parameters_cell=cell is not None,
        unreadable=unreadable,
        from_runs=tuple(from_runs),
    )


# --- values ---------------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number a Kubernetes object can hold")


def _json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False, None


def _finite(value: Any) -> bool:
    """Whether a value has no NaN or infinity anywhere: JSON, and so a Kubernetes object,
    cannot hold them (the runner's -p accepts them; a manifest cannot carry them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _carried(value: Any, where: str = "") -> Any:
    """`value` when a NotebookRun carries it unchanged, else ValueProblem: the API server
    drops a null that is a mapping's value, at any depth of spec.parameters (seen with a
    server-side dry run; nulls inside lists stay), so the run would not get it."""
    if value is None and not where:
        raise DroppedNull(
            "null cannot be set in a NotebookRun (the API server drops it); leave the field "
            "empty to keep the notebook's default"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}[{json.dumps(key)}]"
            if item is None:
                raise DroppedNull(
                    f"the null at {here} would be dropped by the API server; leave the key out"
                )
            _carried(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if item is not None:
                _carried(item, f"{where}[{index}]")
    return value


def parse_value(text: str, annotation: str | None) -> Any:
    """The value a form field's text gives a parameter declared as `annotation`.

    The candidates, in order: the text as JSON (`3`, `0.5`, `true`, `"3"`, `[1, 2]`,
    `{"a": 1}`), then papermill's `-p` inference (`True`, `False`, `None`, ints, floats), then
    the text itself as a string. The first that fits the declared type (the runner's
    `check_type`) wins, so `eu` is a string and `3` an int for `n: int` but the string "3" for
    `region: str`. Without a type, or with one kubemill cannot check (a `pd.Timestamp`), the
    first wins. ValueProblem when no candidate fits, for NaN and infinity, and for a null a
    NotebookRun cannot carry (`_carried`).
    """
    candidates: list[Any] = []
    parsed, value = _json(text)
    if parsed:
        candidates.append(value)
    inferred = infer_cli_value(text.strip())
    if not isinstance(inferred, str) and (not parsed or inferred != value):
        candidates.append(inferred)
    candidates.append(text)
    candidates = [c for c in candidates if _finite(c)]
    if not candidates:
        raise ValueProblem("NaN and infinity cannot be written in a Kubernetes object")
    if annotation is None:
        return _carried(candidates[0])
    checks = [check_type(annotation, c) for c in candidates]
    for candidate, check in zip(candidates, checks, strict=True):
        if check is True:
            return _carried(candidate)
    for candidate, check in zip(candidates, checks, strict=True):
        if check is None:
            return _carried(candidate)
    hint = ""
    if any(word in annotation for word in ("list", "List", "dict", "Dict", "Sequence")):
        hint = ' (write it as JSON, such as ["a", "b"] or {"key": 1})'
    raise ValueProblem(f"{text!r} is not of the declared type {annotation}{hint}")


def form_text(value: Any, annotation: str | None) -> str:
    """How a value is written in its field: a string as it is when reading it back gives the
    same string, else as JSON (`"3"` for the string 3 of an untyped parameter)."""
    if value == "":
        return '""'  # an empty field means "the default", not the empty string
    if isinstance(value, str):
        try:
            back = parse_value(value, annotation)
        except ValueProblem:
            back = None
        if back == value and isinstance(back, str):
            return value
    return json.dumps(value, ensure_ascii=False)


# --- the form -------------------------------------------------------------------------------


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", slug) or "run"


def default_name(source: RerunSource, notebook_name: str, suffix: str) -> str:
    """`<run>-<suffix>`: the run's name (or the notebook's) with a fresh suffix, within 63."""
    base = source.run or notebook_name.removesuffix(".ipynb")
    base = _slug(base)[: NAME_MAX - len(suffix) - 1].strip("-") or "run"
    return f"{base}-{suffix}"


def _name_problem(name: str) -> str | None:
    if not name:
        return None  # generateName
    if name.endswith("-"):
        prefix = name.rstrip("-")
        if len(name) > GENERATE_NAME_MAX or not DNS_LABEL.match(prefix or "-"):
            return (
                f"a generateName prefix of lowercase letters, digits and '-', at most "
                f"{GENERATE_NAME_MAX} characters"
            )
        return None
    if len(name) > NAME_MAX or not DNS_LABEL.match(name):
        return (
            f"lowercase letters, digits and '-', starting and ending with a letter or digit, "
            f"at most {NAME_MAX} characters (end it with '-' for a generateName)"
        )
    return None


def _fixed_problems(values: Mapping[str, str], recorded_notebook: str | None) -> dict[str, str]:
    """The fixed fields' problems; `recorded_notebook` is the notebook the run read, to say so
    when it is the one in the field (a local file, which no runner pod can read)."""
    problems: dict[str, str] = {}
    name_problem = _name_problem(values["name"])
    if name_problem:
        problems["name"] = name_problem
    namespace = values["namespace"]
    if namespace and (len(namespace) > NAME_MAX or not DNS_LABEL.match(namespace)):
        problems["namespace"] = "a namespace is lowercase letters, digits and '-', at most 63"
    notebook = values["notebook"]
    if not notebook:
        problems["notebook"] = "the notebook to run: s3://BUCKET/KEY or an http(s):// URL"
    elif len(notebook) > URL_MAX or not re.fullmatch(NOTEBOOK_URL_PATTERN, notebook):
        problems["notebook"] = (
            "spec.notebook must be s3://BUCKET/KEY or an http(s):// URL the runner pod can reach"
        )
        if notebook == recorded_notebook:
            problems["notebook"] += (
                " (this run read a notebook the cluster cannot: put it in S3 and give its URL)"
            )
    output = values["output"]
    if output and (len(output) > URL_MAX or not re.fullmatch(OUTPUT_PREFIX_PATTERN, output)):
        problems["output"] = "spec.output must be an S3 prefix such as s3://my-bucket/results/"
    image = values["image"]
    if image and (len(image) > IMAGE_MAX or image != image.strip()):
        problems["image"] = "an image reference without spaces around it"
    return problems


def _not_reproducible(value: Any, spec: Declared | None, problem: str) -> str:
    """What to say of a run's own value that a NotebookRun cannot carry: "leave it empty for
    the default" alone would hide that the re-run then differs from the run."""
    if value is None:
        default = f" ({spec.default})" if spec is not None and spec.default else ""
        return (
            "this run's value was null, which a NotebookRun cannot carry (the API server drops "
            "nulls), so this run cannot be reproduced exactly: leave the field empty for the "
            f"notebook's default{default}, or give another value"
        )
    return (
        "this run's value cannot be reproduced exactly (the API server drops nulls from a "
        f"NotebookRun): {problem}"
    )


def build_form(
    source: RerunSource,
    query: Mapping[str, str] | None,
    *,
    notebook_name: str,
    suffix: str,
) -> Form:
    """The form and its manifest: prefilled from the run when `query` is None, else from the
    submitted values (a field missing from the query is empty)."""
    declared = {d.name: d for d in source.declared}
    names = [*declared, *(n for n in source.parameters if n not in declared)]
    if query is None:
        values = {
            "name": default_name(source, notebook_name, suffix),
            "namespace": source.namespace or "",
            "notebook": source.notebook or "",
            "output": source.output_prefix or "",
            "image": "",
        }
    else:
        values = {key: query.get(key, "").strip() for key in FIXED_FIELDS}
    errors = _fixed_problems(values, source.notebook)
    fields: list[Field] = []
    parameters: dict[str, Any] = {}
    for name in names:
        spec = declared.get(name)
        annotation = spec.type if spec else None
        if query is None:
            text = (
                form_text(source.parameters[name], annotation) if name in source.parameters else ""
            )
        else:
            text = query.get(PARAM_PREFIX + name, "")
        problem = parameter_name_problem(name) if text.strip() else None
        if problem is None and text.strip():
            try:
                parameters[name] = parse_value(text, annotation)
            except DroppedNull as exc:
                problem = str(exc)
                ran = source.parameters.get(name)
                if name in source.parameters and text == form_text(ran, annotation):
                    problem = _not_reproducible(ran, spec, problem)
            except ValueProblem as exc:
                problem = str(exc)
        fields.append(
            Field(
                name=name,
                type=annotation,
                default=spec.default if spec else "",
                help=spec.help if spec else "",
                text=text,
                error=problem,
                declared=spec is not None,
            )
        )
    notes = []
    if not source.has_parameters_cell:
        notes.append(
            "The notebook has no cell tagged 'parameters': the runner injects the values first "
            "and cannot check their names or types."
        )
    notes += [f"Warning: {line}." for line in source.unreadable]
    if source.secret_names:
        notes.append(
            "Secret parameters are not in the manifest (their values were never stored): "
            f"{', '.join(source.secret_names)}. Add them under spec.parametersFrom with a "
            "secretKeyRef."
        )
    if source.from_runs:
        taken = ", ".join(f"{name} (from run {run})" for name, run in source.from_runs)
        notes.append(
            f"Values taken from other runs are written here as they were: {taken}. To take them "
            "from a run again, move them under spec.parametersFrom with a notebookRunRef."
        )
    undeclared = [f.name for f in fields if not f.declared]
    manifest = None
    if not errors and not any(f.error for f in fields):
        manifest = build_manifest(
            name=values["name"],
            namespace=values["namespace"],
            notebook=values["notebook"],
            output=values["output"],
            image=values["image"],
            parameters=parameters,
            rerun_of=source.output,
            allow_unknown=any(n in parameters for n in undeclared) and source.has_parameters_cell,
        )
    return Form(tuple(fields), values, errors, manifest, tuple(notes))


def build_manifest(
    *,
    name: str,
    namespace: str,
    notebook: str,
    parameters: Mapping[str, Any],
    output: str = "",
    image: str = "",
    rerun_of: str | None = None,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """A NotebookRun, as `kubectl apply -f` (or, with a generateName, `kubectl create -f`)
    takes it. Only what was chosen is set; the operator's defaults fill the rest."""
    metadata: dict[str, Any] = (
        {"generateName": name or "rerun-"} if (not name or name.endswith("-")) else {"name": name}
    )
    if namespace:
        metadata["namespace"] = namespace
    if rerun_of:
        metadata["annotations"] = {RERUN_OF: rerun_of}
    spec: dict[str, Any] = {"notebook": notebook}
    if output:
        spec["output"] = output
    if image:
        spec["image"] = image
    if parameters:
        spec["parameters"] = dict(parameters)
    if allow_unknown:
        spec["allowUnknownParameters"] = True
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order built, every string double-quoted."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Every string, key or value, double-quoted, with escapes for what is not printable.

    Not "quoted when it looks like another type": that needs kubectl's reader's idea of what a
    number or a boolean is, and go-yaml (YAML 1.1, through sigs.k8s.io/yaml) reads more as
    numbers and booleans than PyYAML does: `08540`, `1e3`, `0o17`, `0X1F`, `0B1`, `-.5`, `y`
    and `n` came out plain and reached the API server as numbers and booleans, and a NEL
    (U+0085) plain or in a block scalar is a line break to it. A double-quoted scalar is a
    string to every YAML reader; its escapes (\\n, \\", \\N, \\U0001F600...) are YAML's,
    which go-yaml reads.
    """
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_Dumper.add_representer(str, _str)

#: Wide enough that no string is folded over lines (a reader sees one value per line).
_YAML_WIDTH = 1 << 30


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.dump(
        dict(manifest), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=_YAML_WIDTH
    )


def apply_command(manifest: Mapping[str, Any]) -> str:
    """The kubectl command for this manifest: `create` for a generateName (apply needs a
    name)."""
    verb = "create" if "generateName" in manifest.get("metadata", {}) else "apply"
    return f"kubectl {verb} -f run.yaml"


# --- HTML and JSON ----------------------------------------------------------------------------


def form_json(form: Form) -> dict[str, Any]:
    """What the page's script asks for while a person types: the YAML (or null) and the
    problem of each field, by the field's name in the form."""
    errors = dict(form.errors)
    errors.update({PARAM_PREFIX + f.name: f.error for f in form.fields if f.error})
    return {
        "valid": form.valid,
        "manifest": form.manifest,
        "yaml": manifest_yaml(form.manifest) if form.manifest is not None else None,
        "command": apply_command(form.manifest) if form.manifest is not None else None,
        "errors": errors,
    }


_FIXED_LABELS = {
    "name": ("Name", "metadata.name; end it with '-' for a generateName"),
    "namespace": ("Namespace", "metadata.namespace; empty: kubectl's current namespace"),
    "notebook": ("Notebook", "spec.notebook: s3://BUCKET/KEY or an http(s):// URL"),
    "output": ("Output prefix", "spec.output; empty: the operator's default"),
    "image": ("Runner image", "spec.image; empty: the operator's default"),
}


def _error(key: str, message: str | None) -> str:
    hidden = "" if message else " hidden"
    return (
        f'<div class="error km-field-error" data-error-for="{esc(key)}" role="alert"{hidden}>'
        f"{esc(message or '')}</div>"
    )


def form_html(form: Form, *, action: str, api: str, notebook_link: str, notebook_path: str) -> str:
    """The page's main area: the form (a GET to `action`, so it works without script), the
    manifest in a copyable block, and the command that applies it; `api` answers the same
    query as JSON (`form_json`) for the page's script."""
    rows = []
    for key in FIXED_FIELDS:
        label, hint = _FIXED_LABELS[key]
        rows.append(
            f'<tr><th><label for="km-f-{key}">{label}</label></th>'
            f'<td><input id="km-f-{key}" name="{key}" value="{esc(form.values[key])}" size="60">'
            f"{_error(key, form.errors.get(key))}</td>"
            f'<td class="muted">{esc(hint)}</td></tr>'
        )
    params = []
    for index, item in enumerate(form.fields):
        key = PARAM_PREFIX + item.name
        kind = esc(item.type or "untyped")
        default = f"default {item.default}" if item.default else ""
        extra = "" if item.declared else " (not declared by the notebook)"
        help_text = " · ".join(t for t in (item.help, default) if t) + extra
        params.append(
            f'<tr class="km-param"><th><label for="km-p-{index}">{esc(item.name)}</label></th>'
            f"<td><code>{kind}</code></td>"
            f'<td><input id="km-p-{index}" name="{esc(key)}" value="{esc(item.text)}" size="50" '
            f'placeholder="empty: the default" data-param="{esc(item.name)}">'
            f"{_error(key, item.error)}</td>"
            f'<td class="muted">{esc(help_text)}</td></tr>'
        )
    params_table = (
        "<table class='km-params'><thead><tr><th>Parameter</th><th>Type</th><th>Value</th>"
        f"<th>Help</th></tr></thead><tbody>{''.join(params)}</tbody></table>"
        if params
        else "<p>The notebook declares no parameters.</p>"
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in form.notes)
    if form.manifest is not None:
        text, command = manifest_yaml(form.manifest), apply_command(form.manifest)
        state = ""
    else:
        text, command = "", ""
        state = "Fix the values marked above to get a manifest."
    return (
        f'<h1>Run again: <a href="{esc(notebook_link)}">{esc(notebook_path)}</a></h1>'
        f"{notes}"
        f'<form class="km-rerun" method="get" action="{esc(action)}" data-api="{esc(api)}">'
        f"<table class='km-fixed'>{''.join(rows)}</table>"
        f"<h2>Parameters</h2>{params_table}"
        '<p><button type="submit">Build the manifest</button> '
        '<span class="muted">Values are read as JSON when they parse as JSON and fit the '
        "type, else as text; an empty value leaves the notebook's default.</span></p></form>"
        "<h2>NotebookRun manifest</h2>"
        f'<p class="error" id="km-manifest-state"{"" if state else " hidden"}>{esc(state)}</p>'
        '<p><button type="button" id="km-copy" hidden>Copy</button> '
        f'<span class="muted">Save as run.yaml, then: <code id="km-command">{esc(command)}'
        "</code></span></p>"
        f'<pre id="km-manifest" class="km-manifest">{esc(text)}</pre>'
    )


#: Styles of the re-run and compare pages (their own: the notebook page's are render's).
ACTIONS_CSS = """
.km-manifest{background:#f6f8fa;border:1px solid #d0d7de;padding:.6rem 1rem;
font-family:ui-monospace,monospace;font-size:.9em;white-space:pre-wrap;min-height:3em}
.km-rerun input{font-family:ui-monospace,monospace}
.km-fixed th,.km-params th{width:10rem}
.km-diff{background:#fff8c5}
.km-same{color:#57606a}
td.km-value{font-family:ui-monospace,monospace;font-size:.85em;overflow-wrap:anywhere}
"""
