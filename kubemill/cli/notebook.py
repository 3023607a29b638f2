"""`kubemill inspect` and `kubemill results`: what a notebook declares, and what it recorded."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from .run import runner_errors, storage

__all__ = ["declare_inspect", "declare_results"]


def declare_inspect(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the parameters declared in NOTEBOOK's cell tagged 'parameters'."
    parser.set_defaults(handler=runner_errors(cmd_inspect))
    parser.add_argument("notebook", help="a path, -, s3://… or http(s)://…")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--s3-endpoint-url", metavar="URL")
    parser.add_argument("--debug", action="store_true")


def declare_results(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print what an executed notebook recorded with kubemill.record or scrapbook.glue. PATH "
        "may be a notebook or a run folder (ending in /)."
    )
    parser.set_defaults(handler=runner_errors(cmd_results))
    parser.add_argument("path", metavar="PATH_OR_URL")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--s3-endpoint-url", metavar="URL")
    parser.add_argument("--debug", action="store_true")


def cmd_inspect(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.notebook import parse_notebook
    from kubemill.runner.parameters import PARAMETERS_TAG, find_tagged_cell, read_parameters_cell
    from kubemill.runner.storage import Location

    fetched = storage(args, environ).read(Location.parse(args.notebook))
    nb, _ = parse_notebook(fetched.data, args.notebook)
    index = find_tagged_cell(nb, PARAMETERS_TAG)
    cell = read_parameters_cell(nb.cells[index].source) if index >= 0 else None
    declared = cell.declared if cell is not None else []
    # Like papermill's inspection: what can be read is listed, each line that cannot is named
    # on stderr, so --json output stays a list a script can read.
    for line in cell.unreadable if cell is not None else []:
        print(f"kubemill inspect: warning: {line.describe()}", file=sys.stderr)
    if args.json:
        print(json.dumps([d.as_dict() for d in declared], indent=2, ensure_ascii=False))
        return 0
    if index < 0:
        print(f"{args.notebook} has no cell tagged 'parameters'.")
        return 0
    rows = [("NAME", "TYPE", "DEFAULT", "HELP")]
    rows += [(d.name, d.type or "-", d.default, d.help) for d in declared]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=True)), row[3])
    return 0


def cmd_results(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.notebook import collect_results, parse_notebook
    from kubemill.runner.storage import Location

    location = Location.parse(args.path)
    if location.is_folder:
        location = location.child("output.ipynb")
    fetched = storage(args, environ).read(location)
    nb, _ = parse_notebook(fetched.data, location.uri)
    recorded = nb.metadata.get("kubemill", {}).get("results")
    results = recorded if isinstance(recorded, dict) else collect_results(nb)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    if not results:
        print(f"{location.uri} recorded no results.")
        return 0
    width = max(len(name) for name in results)
    for name, value in results.items():
        print(f"{name.ljust(width)}  {json.dumps(value, ensure_ascii=False)}")
    return 0
