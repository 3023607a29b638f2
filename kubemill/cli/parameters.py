"""`kubemill run`'s parameter options: one table declares them and merges what they give.

papermill's options (-p, -r, -f, -y, -b) keep their meaning, so a papermill command line runs
unchanged; --parameters-json and --parameters-json-file are kubemill's (the second is how the
operator passes parameters, read from ConfigMaps mounted as files), and so is --upstream-file,
which names the upstream runs a run takes values from and the results it reads itself. The
values are parsed only when the command runs, by `kubemill.runner.parameters` and
`kubemill.runner.upstream`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kubemill.runner.errors import BadInputError

if TYPE_CHECKING:
    from kubemill.runner.upstream import Upstream

__all__ = [
    "MERGE_ORDER",
    "PARAMETER_OPTIONS",
    "ParameterOption",
    "declare",
    "merge_parameters",
    "read_upstream_file",
]


def _typed(pair: Sequence[str]) -> dict[str, Any]:
    from kubemill.runner.parameters import infer_cli_value

    return {pair[0]: infer_cli_value(pair[1])}


def _raw(pair: Sequence[str]) -> dict[str, Any]:
    return {pair[0]: pair[1]}


def _yaml_file(path: str) -> dict[str, Any]:
    from pathlib import Path

    from kubemill.runner.parameters import load_yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot read parameters file {path}: {exc.strerror}") from None
    return load_yaml(text, f"parameters file {path}")


def _json_files(paths: Sequence[str]) -> dict[str, Any]:
    from kubemill.runner.parameters import load_json_parts

    return load_json_parts(_read_parts(paths), list(paths))


def _yaml(text: str) -> dict[str, Any]:
    from kubemill.runner.parameters import load_yaml

    return load_yaml(text, "-y/--parameters-yaml")


def _yaml_base64(text: str) -> dict[str, Any]:
    from kubemill.runner.parameters import load_yaml_base64

    return load_yaml_base64(text, "-b/--parameters-base64")


def _json(text: str) -> dict[str, Any]:
    from kubemill.runner.parameters import load_json

    return load_json(text, "--parameters-json")


class ParameterOption(NamedTuple):
    """One way to give parameters on the command line."""

    #: Its tag in `args.param_sources` (the operator's tests read it) and in MERGE_ORDER.
    kind: str
    #: The option strings; the underscore spellings are papermill's.
    flags: tuple[str, ...]
    #: How `kubemill run -h` names its value(s).
    metavar: str | tuple[str, str]
    help: str
    #: The parameters one occurrence gives, by name.
    load: Callable[[Any], dict[str, Any]]
    #: argparse's nargs: None for one value.
    nargs: int | str | None = None


#: In the order `kubemill run -h` shows them.
PARAMETER_OPTIONS: tuple[ParameterOption, ...] = (
    ParameterOption(
        "p",
        ("-p", "--parameters"),
        ("NAME", "VALUE"),
        "a value typed like papermill: True/False/None, int, float, else string",
        _typed,
        nargs=2,
    ),
    ParameterOption(
        "r",
        ("-r", "--parameters-raw", "--parameters_raw"),
        ("NAME", "VALUE"),
        "a string, taken as is",
        _raw,
        nargs=2,
    ),
    ParameterOption(
        "f",
        ("-f", "--parameters-file", "--parameters_file"),
        "FILE",
        "a YAML (or JSON) file of name: value",
        _yaml_file,
    ),
    ParameterOption(
        "J",
        ("--parameters-json-file",),
        "FILE",
        "a JSON object read from FILE; several FILEs are the parts of one JSON text, joined in "
        "the order given (how the operator passes parameters larger than one ConfigMap)",
        _json_files,
        nargs="+",
    ),
    ParameterOption(
        "y",
        ("-y", "--parameters-yaml", "--parameters_yaml"),
        "YAML",
        "YAML text of name: value",
        _yaml,
    ),
    ParameterOption(
        "b",
        ("-b", "--parameters-base64", "--parameters_base64"),
        "B64",
        "base64-encoded YAML of name: value",
        _yaml_base64,
    ),
    ParameterOption("j", ("--parameters-json",), "JSON", "a JSON object of name: value", _json),
)

#: papermill's precedence (base64 < file < yaml < -p < -r), with JSON beside YAML and a JSON
#: file beside a YAML file, so a papermill command line means the same here.
MERGE_ORDER = "bfJyjpr"


class _OrderedParams(argparse.Action):
    """Collects every parameter option in one list, tagged by kind, in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def declare(group: argparse._ArgumentGroup) -> None:
    """Adds the table's options to `group`; what they give lands in `args.param_sources`."""
    for option in PARAMETER_OPTIONS:
        group.add_argument(
            *option.flags,
            nargs=option.nargs,
            metavar=option.metavar,
            action=_OrderedParams,
            const=option.kind,
            dest="param_sources",
            help=option.help,
        )


def merge_parameters(sources: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The parameters the options give, merged in MERGE_ORDER (a later kind's value replaces an
    earlier one's for the same name; within one kind, command-line order)."""
    loaders = {option.kind: option.load for option in PARAMETER_OPTIONS}
    merged: dict[str, Any] = {}
    for kind, value in sorted(sources, key=lambda source: MERGE_ORDER.index(source[0])):
        merged.update(loaders[kind](value))
    return merged


def _read_parts(paths: Sequence[str]) -> list[bytes]:
    """The bytes of each part; a missing or empty part is an error naming it, so a parameter
    set never arrives partially (a middle part dropped from a JSON text can leave valid JSON)."""
    from pathlib import Path

    parts = []
    for number, path in enumerate(paths, 1):
        which = f"parameters file {path}" + (
            f" (part {number} of {len(paths)})" if len(paths) > 1 else ""
        )
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BadInputError(f"cannot read {which}: {exc.strerror}") from None
        if not data:
            raise BadInputError(f"{which} is empty")
        parts.append(data)
    return parts


def read_upstream_file(path: str | None) -> Upstream:
    """What --upstream-file FILE says: the upstream runs and the results to read from them
    (nothing without the option)."""
    from pathlib import Path

    from kubemill.runner.upstream import Upstream, parse_upstream

    if path is None:
        return Upstream()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read upstream file {path}: {exc.strerror}") from None
    return parse_upstream(data, f"upstream file {path}")
