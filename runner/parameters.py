"""Parameters: parsing, type inference, validation and injection (papermill conventions).

Pure functions only: no kernel, no files, no environment. The CLI reads the sources; this module
decides what they mean and what source code reaches the kernel.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import datetime
import difflib
import io
import itertools
import json
import math
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell

from .errors import BadInputError
from .rules import parameter_name_problem

__all__ = [
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "Declared",
    "ParametersCell",
    "Unreadable",
    "check_type",
    "find_tagged_cell",
    "infer_cli_value",
    "inject_parameters",
    "json_safe",
    "load_json",
    "load_json_parts",
    "load_yaml",
    "load_yaml_base64",
    "normalize",
    "read_parameters_cell",
    "to_python",
    "validate_parameters",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


@dataclass(frozen=True)
class Declared:
    """One parameter declared in the notebook's `parameters` cell."""

    name: str
    type: str | None  # the annotation's source text, or None when the line has none
    default: str  # the default's source text, as written
    help: str  # the line's trailing comment, without '#'

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class Unreadable:
    """A line of the `parameters` cell that Python cannot parse, left out of the reading."""

    line: int  # 1-based, within the cell
    text: str  # the line as written
    problem: str  # Python's complaint about it

    def describe(self) -> str:
        return (
            f"line {self.line} of the parameters cell could not be read ({self.problem}): "
            f"{self.text.strip()!r}"
        )


@dataclass(frozen=True)
class ParametersCell:
    """What a `parameters` cell declares, and the lines it had to leave out to read the rest."""

    declared: list[Declared]
    unreadable: list[Unreadable]


# --- reading values ---------------------------------------------------------------------------


def infer_cli_value(text: str) -> Any:
    """papermill's `-p` inference: True/False/None, then int, then float, else the string."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInputError(
            f"{what} must be a mapping of parameter names to values, got {type(value).__name__}"
        )
    return {str(k): v for k, v in value.items()}


def load_yaml(text: str, what: str) -> dict[str, Any]:
    """Parse YAML parameters; `what` names the source in the error message."""
    try:
        return _mapping(yaml.safe_load(text), what)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInputError(f"{what} is not valid YAML{where}: {problem}") from None


def load_yaml_base64(text: str, what: str) -> dict[str, Any]:
    try:
        decoded = base64.b64decode(text.encode(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadInputError(f"{what} is not base64-encoded UTF-8 text") from None
    return load_yaml(decoded, what)


def load_json(text: str, what: str) -> dict[str, Any]:
    try:
        return _mapping(json.loads(text), what)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{what} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def load_json_parts(parts: Sequence[bytes], names: Sequence[str]) -> dict[str, Any]:
    """Parse one JSON object whose UTF-8 text was split into `parts` (named by `names`, in
    order); an error names the part it is in, so a corrupt part can be found."""
    data = b"".join(parts)
    ends = list(itertools.accumulate(len(part) for part in parts))

    def where(offset: int) -> str:
        index = min(bisect.bisect_right(ends, offset), len(parts) - 1)
        if len(parts) == 1:
            return f"parameters file {names[0]}"
        return f"parameters file {names[index]} (part {index + 1} of {len(parts)})"

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{where(exc.start)} is not UTF-8 text") from None
    try:
        return _mapping(json.loads(text), where(0) if len(parts) == 1 else "parameters files")
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode())
        of = " of the joined text" if len(parts) > 1 else ""
        raise BadInputError(
            f"{where(offset)} is not valid JSON at line {exc.lineno}, column {exc.colno}{of}: "
            f"{exc.msg}"
        ) from None


def normalize(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values as JSON shapes: YAML dates become ISO strings, tuples lists.

    Done once, right after the sources are merged, so validation, injection and metadata all
    see the same values.
    """
    return {str(name): _normal(value, name) for name, value in values.items()}


def _normal(value: Any, name: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_normal(v, name) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _normal(v, name) for k, v in value.items()}
    raise BadInputError(
        f"parameter {name!r} has a value of type {type(value).__name__}, which cannot be passed "
        "to a notebook; use null, booleans, numbers, strings, lists or mappings"
    )


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities spelt as strings, for metadata that must be strict JSON
    (browsers' JSON.parse rejects a bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


# --- translating values to Python source ------------------------------------------------------


def to_python(value: Any) -> str:
    """Python source that evaluates to `value` (any JSON shape, plus NaN and ±inf)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "-float('inf')"
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{to_python(str(k))}: {to_python(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_python(v) for v in value) + "]"
    raise BadInputError(
        f"parameter value {value!r} of type {type(value).__name__} cannot be passed to a "
        "notebook; use null, booleans, numbers, strings, lists or mappings"
    )


# --- the parameters cell ----------------------------------------------------------------------


def find_tagged_cell(nb: NotebookNode, tag: str) -> int:
    """Index of the first cell carrying `tag`, or -1."""
    for index, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return -1


def _comments_by_line(source: str) -> dict[int, str]:
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return comments


def _without_magics(source: str) -> str:
    # IPython magics and shell escapes are not Python; keep line numbers, drop their text.
    return "\n".join(
        "pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def _assignments(tree: ast.Module) -> list[ast.stmt]:
    """Assignments at module level, also inside if/try/with/for blocks, not inside functions
    or classes, since those names are not the notebook's globals."""
    found: list[ast.stmt] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.Assign | ast.AnnAssign):
            found.append(node)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []) or [])
    return found


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for element in target.elts for n in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _parse_leniently(source: str) -> tuple[ast.Module, str, list[Unreadable]]:
    """Parse `source`, setting aside the lines Python cannot parse, as papermill's inspection
    skips a line it cannot read instead of giving up on the cell.

    The line an error is reported on becomes `pass` (indented like it, so a block keeps its
    body); if the error stays there, the line is emptied (inside brackets `pass` is no better),
    and if the error is on an emptied or blank line, the nearest line above it still as written
    goes (an unclosed bracket, say). Each step changes one line for good, so this ends; a cell
    where nothing can be read gives an empty module.
    """
    original = source.split("\n")
    lines = list(original)
    state = [0] * len(lines)  # 0: as written, 1: replaced by pass, 2: emptied
    unreadable: dict[int, Unreadable] = {}
    for _ in range(2 * len(lines) + 1):
        text = "\n".join(lines)
        try:
            return ast.parse(text), text, sorted(unreadable.values(), key=lambda u: u.line)
        except SyntaxError as exc:
            number = min(max(exc.lineno or len(lines), 1), len(lines))
            if state[number - 1] == 0 and original[number - 1].strip():
                line = original[number - 1]
                lines[number - 1] = line[: len(line) - len(line.lstrip())] + "pass"
                state[number - 1] = 1
            elif state[number - 1] == 1:
                lines[number - 1] = ""
                state[number - 1] = 2
            else:
                above = [
                    n
                    for n in range(number - 1, 0, -1)
                    if state[n - 1] == 0 and original[n - 1].strip()
                ]
                if not above:
                    break
                number = above[0]
                line = original[number - 1]
                lines[number - 1] = line[: len(line) - len(line.lstrip())] + "pass"
                state[number - 1] = 1
            unreadable.setdefault(number, Unreadable(number, original[number - 1], exc.msg))
    everything = [Unreadable(n, line, "not Python") for n, line in enumerate(original, 1)]
    return ast.Module(body=[], type_ignores=[]), "", [u for u in everything if u.text.strip()]


def read_parameters_cell(source: str) -> ParametersCell:
    """The names a `parameters` cell assigns at top level, with type, default and help, and
    the lines it could not read (which the caller reports, naming them)."""
    tree, clean, unreadable = _parse_leniently(_without_magics(source))
    comments = _comments_by_line(clean)
    found: dict[str, Declared] = {}
    for node in _assignments(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = ast.get_source_segment(clean, node.annotation)
            default = ast.get_source_segment(clean, node.value) if node.value else ""
            targets = [node.target.id]
        elif isinstance(node, ast.Assign):
            annotation = None
            default = ast.get_source_segment(clean, node.value) or ""
            targets = [name for t in node.targets for name in _target_names(t)]
        else:
            continue
        line = node.end_lineno or node.lineno
        for name in targets:
            found[name] = Declared(name, annotation, default or "", comments.get(line, ""))
    return ParametersCell(list(found.values()), unreadable)


# --- type checking ----------------------------------------------------------------------------

_NAMED_CHECKS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "List": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, list | tuple),
    "Tuple": lambda v: isinstance(v, list | tuple),
    "Sequence": lambda v: isinstance(v, list | tuple),
    "dict": lambda v: isinstance(v, dict),
    "Dict": lambda v: isinstance(v, dict),
    "Mapping": lambda v: isinstance(v, dict),
    "None": lambda v: v is None,
    "NoneType": lambda v: v is None,
    "Any": lambda v: True,
    "object": lambda v: True,
}


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.Optional, t.List, …
        return node.attr
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return None


def _check(node: ast.expr, value: Any) -> bool | None:
    """True/False when the annotation can be checked against a JSON value, None when not."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        results = [_check(node.left, value), _check(node.right, value)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if isinstance(node, ast.Subscript):
        outer = _name_of(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            return True if value is None else _check(args[0], value)
        if outer == "Union":
            results = [_check(a, value) for a in args]
            if any(r is True for r in results):
                return True
            return None if any(r is None for r in results) else False
        if outer == "Literal":
            options = [a.value for a in args if isinstance(a, ast.Constant)]
            return value in options and type(value) in {type(o) for o in options}
        if outer in ("list", "List", "Sequence") and len(args) == 1:
            if not isinstance(value, list):
                return False
            items = [_check(args[0], v) for v in value]
            return False if False in items else (None if None in items else True)
        if outer in ("dict", "Dict", "Mapping") and len(args) == 2:
            if not isinstance(value, dict):
                return False
            items = [_check(args[1], v) for v in value.values()]
            return False if False in items else (None if None in items else True)
        if outer in _NAMED_CHECKS:
            return bool(_NAMED_CHECKS[outer](value))
        return None
    name = _name_of(node)
    if isinstance(node, ast.Name | ast.Constant) and name in _NAMED_CHECKS:
        return bool(_NAMED_CHECKS[name](value))
    return None


def check_type(annotation: str, value: Any) -> bool | None:
    """Whether `value` fits the annotation `annotation`; None when kubemill cannot tell."""
    try:
        node = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
        return check_type(node.value, value)
    return _check(node, value)


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def validate_parameters(
    values: Mapping[str, Any],
    secret_names: Iterable[str],
    declared: list[Declared] | None,
    *,
    allow_unknown: bool,
    unreadable: Sequence[Unreadable] = (),
) -> None:
    """Reject bad names, unknown names and values that contradict declared types.

    `declared` is None when the notebook has no parameters cell: then every name is accepted,
    since there is nothing to compare against (the caller warns about it). `unreadable` are the
    cell's lines that could not be read: an unknown name may be declared there, and the message
    says so.
    """
    problems: list[str] = []
    all_names = [*values, *secret_names]
    problems += [p for name in all_names if (p := parameter_name_problem(name))]
    if declared is not None:
        by_name = {d.name: d for d in declared}
        for name in all_names:
            if name in by_name or not name.isidentifier() or allow_unknown:
                continue
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(by_name)) or "none"
            lines = ", ".join(str(u.line) for u in unreadable)
            unread = f" (line {lines} of its parameters cell could not be read)" if lines else ""
            problems.append(
                f"unknown parameter {name!r}{hint}; the notebook declares: {known}{unread}; "
                "pass --allow-unknown-parameters to inject it anyway"
            )
        for name, value in values.items():
            spec = by_name.get(name)
            if spec is None or spec.type is None:
                continue
            if check_type(spec.type, value) is False:
                hint = ""
                if check_type(spec.type, str(value)) is True and not isinstance(value, str):
                    hint = f" (pass -r {name} VALUE to give it as a string)"
                problems.append(
                    f"parameter {name!r} is declared as {spec.type} but got {_describe(value)}"
                    + hint
                )
        for name in secret_names:
            spec = by_name.get(name)
            if spec is not None and spec.type is not None and check_type(spec.type, "") is False:
                problems.append(
                    f"secret parameter {name!r} is declared as {spec.type}, but secrets are "
                    "strings; declare it as str"
                )
    if problems:
        raise BadInputError("; ".join(problems))


# --- injection --------------------------------------------------------------------------------


#: Characters of a list or mapping literal above which it is injected as JSON text instead.
LARGE_LITERAL = 100_000


def _assignment(name: str, value: Any) -> str:
    """`name = <value>`: a literal, as papermill writes it; for a large list or mapping, JSON
    text parsed by `json.loads`, which is read far faster than a literal of many small items is
    compiled (a 9 MB list of 190,000 small dicts: 0.13 s against 2.3 s in plain Python, and
    0.45 s against 36 s in an IPython kernel, whose cell transforms walk every node)."""
    literal = to_python(value)
    if len(literal) <= LARGE_LITERAL or not isinstance(value, list | dict):
        return f"{name} = {literal}"
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # NaN or infinity inside: only the literal can say it
        return f"{name} = {literal}"
    return f"{name} = __import__('json').loads({text!r})  # large: read as JSON"


def injected_source(values: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    """The injected cell's code: literal values, and secrets read from the environment."""
    lines = ["# Parameters"]
    lines += [_assignment(name, value) for name, value in values.items()]
    lines += [
        f"{name} = __import__('os').environ[{env!r}]  # secret: the value is not recorded"
        for name, env in secrets.items()
    ]
    return "\n".join(lines) + "\n"


def inject_parameters(
    nb: NotebookNode, values: Mapping[str, Any], secrets: Mapping[str, str]
) -> bool:
    """Insert the injected-parameters cell in place, as papermill does.

    Returns False when the notebook has no `parameters` cell (the cell then goes first).
    """
    cell = new_code_cell(source=injected_source(values, secrets))
    cell.metadata["tags"] = [INJECTED_TAG]
    injected = find_tagged_cell(nb, INJECTED_TAG)
    params = find_tagged_cell(nb, PARAMETERS_TAG)
    if injected >= 0:
        nb.cells[injected] = cell
    elif params >= 0:
        nb.cells.insert(params + 1, cell)
    else:
        nb.cells.insert(0, cell)
    return params >= 0
