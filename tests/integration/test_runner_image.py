"""Dockerfile.runner's install steps, replayed into a fresh venv (there is no Docker engine here).

The build stage's COPY sources are copied into a scratch context and its RUN command is run with
the image's venv path swapped for a temporary one, so a change to the Dockerfile is what is
tested. The result must run a notebook as an unprivileged user and carry no operator packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NOTEBOOKS, runner_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE_VENV = "/opt/kubemill"
NOBODY = 65534
# The image's `python` is python:3.11-slim's; here Debian's python3.11 stands in for it, since
# its files, unlike a pyenv build under /root, are readable by the unprivileged user below.
SYSTEM_PYTHON = "/usr/bin/python3"


def _build_stage() -> tuple[list[str], str]:
    """COPY sources and the joined RUN command of the Dockerfile's first stage."""
    text = (ROOT / "Dockerfile.runner").read_text().replace("\\\n", " ")
    stage = text.split("\nFROM ", 2)[1]
    sources: list[str] = []
    runs: list[str] = []
    for line in stage.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
        elif words[:1] == ["RUN"]:
            runs.append(line.strip()[4:])
    return sources, " && ".join(runs)


def test_dockerfile_install_steps_give_a_lean_runner_that_works_unprivileged(
    tmp_path: Path,
) -> None:
    sources, run = _build_stage()
    assert sources and IMAGE_VENV in run
    context = tmp_path / "context"
    context.mkdir()
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, context / source)
    venv = tmp_path / "image-venv"
    command = re.sub(re.escape(IMAGE_VENV), str(venv), run)
    command = re.sub(r"(?<![\w/.-])python(?= )", SYSTEM_PYTHON, command)
    build = subprocess.run(
        ["bash", "-c", command],
        cwd=context,
        env=runner_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]

    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-P", "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "nbclient==" in installed and "boto3==" in installed
    assert "kopf==" not in installed and "kubernetes==" not in installed

    # Run as an unprivileged user whose only writable place is a scratch directory, as in a
    # pod with a read-only root filesystem and an emptyDir at /tmp.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.chown(scratch, NOBODY, NOBODY)
    for path in [tmp_path, *tmp_path.parents]:
        if path == Path("/"):
            break
        path.chmod(path.stat().st_mode | 0o005)
    env = runner_env(
        {
            "HOME": "/nonexistent",
            "TMPDIR": str(scratch),
            "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
            "IPYTHONDIR": str(scratch / "ipython"),
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        }
    )
    notebook = scratch / "params.ipynb"
    shutil.copy2(NOTEBOOKS / "params.ipynb", notebook)
    os.chown(notebook, NOBODY, NOBODY)
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            str(venv / "bin" / "kubemill"),
            "run",
            str(notebook),
            f"{scratch}/out/",
            "-p",
            "region",
            "image",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=scratch,
    )
    assert result.returncode == 0, result.stderr
    assert '"region": "image"' in (scratch / "out" / "results.json").read_text()
