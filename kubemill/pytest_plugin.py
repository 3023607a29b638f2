"""kubemill's pytest plugin: a run folder per test, and `execute` writing into it.

pytest loads this module in every session of an environment where kubemill is installed (the
`pytest11` entry point in pyproject.toml), so it imports nothing but pytest until a test asks
for one of its fixtures.

    def test_report(kubemill_execute):
        nb = kubemill_execute("report.ipynb", {"region": "eu"}, cell_timeout=60)
        assert nb.result("rows") > 1000

The folders live under the test's `tmp_path`, so pytest's own retention decides what is kept
(the last three sessions by default; `tmp_path_retention_policy = "failed"` keeps only the
failed tests' runs for inspection).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubemill.testing import ExecutedNotebook

__all__ = ["kubemill_execute", "kubemill_output"]


@pytest.fixture
def kubemill_output(tmp_path: Path) -> Path:
    """An empty folder for this test's runs, under its `tmp_path`."""
    folder = tmp_path / "kubemill"
    folder.mkdir()
    return folder


@pytest.fixture
def kubemill_execute(kubemill_output: Path) -> Callable[..., ExecutedNotebook]:
    """`kubemill.testing.execute` writing each run into its own folder of `kubemill_output`,
    named after the notebook (`report/`, then `report-2/`, ...), so a test that runs several
    notebooks, or one notebook twice, keeps every run to look at."""
    from kubemill.testing import execute, notebook_stem

    def bound(notebook: Any, parameters: Any = None, **options: Any) -> ExecutedNotebook:
        __tracebackhide__ = True
        if "output" in options:
            raise TypeError(
                "kubemill_execute writes into the kubemill_output folder; call "
                "kubemill.testing.execute to write elsewhere"
            )
        stem = notebook_stem(str(notebook))
        folder = kubemill_output / stem
        number = 1
        while folder.exists():
            number += 1
            folder = kubemill_output / f"{stem}-{number}"
        folder.mkdir()
        return execute(notebook, parameters, output=folder, **options)

    return bound
