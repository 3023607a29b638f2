"""`make env` gives each checkout an environment of its own code, wherever the clone lives.

The environment used to be one venv in a cache shared by every clone, holding an editable install
of whichever clone built it first: a second clone silently tested the first one's files. Here two
clones in unrelated folders each run `make env`; each must import `kubemill`, `kubemill.runner`,
`kubemill.operator` and its test environment (`kubemill_testenv`, whose node agent and sandbox
run that clone's code) from its own folder, and see an edit made in its own files only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill"))

WHERE = (
    "import kubemill, kubemill.runner, kubemill.operator, kubemill_testenv;"
    "print(kubemill.__file__); print(kubemill.runner.__file__); print(kubemill.operator.__file__);"
    "print(kubemill_testenv.__file__);"
    "print(getattr(kubemill, 'CHECKOUT_MARK', 'unmarked'))"
)


def _clone(dest: Path) -> Path:
    dest.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    return dest


def _make_env(clone: Path) -> None:
    done = subprocess.run(
        ["make", "-C", str(clone), "env", f"CACHE={CACHE}"],
        capture_output=True,
        text=True,
        timeout=600,
        # The clone's Makefile must not inherit this session's venv.
        env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "VENV", "MAKEFLAGS")},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _where(clone: Path) -> list[str]:
    done = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-P", "-c", WHERE],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return done.stdout.split()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_two_clones_in_different_folders_each_test_their_own_code(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to clone")
    one = _clone(tmp_path / "home" / "src" / "kubemill")
    two = _clone(tmp_path / "elsewhere" / "work" / "km")
    # An edit in one clone only, after both environments exist: an editable install of the
    # clone's own files sees it; a shared or copied install would not.
    _make_env(one)
    _make_env(two)
    init = two / "kubemill" / "__init__.py"
    init.write_text(init.read_text() + '\nCHECKOUT_MARK = "two"\n')

    for clone, mark in ((one, "unmarked"), (two, "two")):
        *files, seen = _where(clone)
        assert seen == mark
        assert [Path(f).resolve() for f in files] == [
            clone.resolve() / "kubemill" / "__init__.py",
            clone.resolve() / "runner" / "__init__.py",
            clone.resolve() / "operator" / "__init__.py",
            clone.resolve() / "testenv" / "kubemill_testenv" / "__init__.py",
        ]
