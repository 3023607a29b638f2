"""The viewer's re-run manifests are NotebookRuns the API server accepts as they are: `kubectl
apply --dry-run=server` (a name) and `kubectl create --dry-run=server` (a generateName) against
the real control plane with kubemill's CRDs and admission policies installed."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from kubemill.viewer.rerun import build_form, form_json, read_source
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e

CELL = """\
alpha: float = 0.1
region: str = "eu"
n: int = 3
flags: list[str] = []
config: dict = {}
ok: bool = True
maybe: Optional[int] = None
anything = None
"""

RUN = {
    "input": {"uri": "s3://notebooks/reports/daily.ipynb"},
    "output": "s3://results/runs/team/daily/output.ipynb",
    "identity": {"run": "daily", "namespace": "team"},
    "parameters": {"alpha": 0.5, "region": "3", "flags": ["a", "b"], "anything": "x"},
}

TRICKY = [
    "y", "n", "off", "08540", "1e3", "1.5e3", "0o17", "0X1F", "0B1", "-.5", "+.5e3", "\x85",
    "a\x85b", "\u2028", "\ufeff", "é😀", "line\nnext", "~", "",
]  # fmt: skip

EDITS: list[tuple[str, dict[str, str]]] = [
    ("as-run", {}),
    (
        "every-type",
        {
            "p.alpha": "1e-3",
            "p.region": "true",
            "p.n": "-7",
            "p.flags": '["é", "😀", "$(HOME)"]',
            "p.config": '{"nested": {"list": [1, null, "x"]}}',
            "p.ok": "False",
            "p.maybe": "7",
            "p.anything": "line one\nline two",
            "image": "registry.example/kubemill-runner:0.1.0",
        },
    ),
    ("generate-name", {"name": "daily-again-"}),
    # Names and values kubectl's YAML reader (go-yaml, YAML 1.1) would take for booleans or
    # numbers, or break at (NEL, LS): all must reach the API server as the strings they are.
    (
        "yaml-1.1-words",
        {
            "p.region": "08540",
            "p.anything": "Y",
            "p.flags": json.dumps(TRICKY),
            "p.config": json.dumps({t: t for t in TRICKY}),
        },
    ),
]


def notebook() -> bytes:
    cell = {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]},
            "source": CELL, "outputs": [], "execution_count": 1}  # fmt: skip
    document = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kubemill": RUN},
                "cells": [cell]}  # fmt: skip
    return json.dumps(document).encode()


@pytest.mark.parametrize(("case", "edits"), EDITS, ids=[e[0] for e in EDITS])
def test_the_manifest_passes_a_server_side_dry_run(
    kubemill_installed: Cluster, namespace: str, case: str, edits: dict[str, str]
) -> None:
    source = read_source(notebook())
    form = build_form(source, None, notebook_name="output.ipynb", suffix="e2e00")
    query: dict[str, Any] = {**form.values, "namespace": namespace}
    query.update({f"p.{f.name}": f.text for f in form.fields})
    query.update(edits)
    answer = form_json(build_form(source, query, notebook_name="output.ipynb", suffix="x"))
    assert answer["valid"], answer["errors"]
    verb = answer["command"].split()[1]
    assert verb == ("create" if case == "generate-name" else "apply")
    result = subprocess.run(
        [kubemill_installed.kubectl_path, "--kubeconfig", str(kubemill_installed.kubeconfig),
         verb, "--dry-run=server", "-o", "json", "-f", "-"],
        input=answer["yaml"], text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    # What the API server keeps is what the page showed: no name or value read as another.
    assert accepted["spec"]["parameters"] == answer["manifest"]["spec"]["parameters"]
