"""`make dist`, the Python package the release publishes: built from this checkout, installed
into a fresh environment (not this one's editable install), it is kubemill at pyproject.toml's
version, with every package and without the test environment."""

from __future__ import annotations

import os
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CACHE = Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill"))


def _uv() -> str:
    """The uv the Makefile installed (`make env` ran before any test)."""
    found = sorted(CACHE.glob("tools/uv-*/bin/uv"))
    assert found, f"no uv under {CACHE}/tools: run make env"
    return str(found[-1])


def test_the_wheel_installs_alone_and_is_this_version(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "-C", str(ROOT), "dist", f"DIST={dist}"], check=True)

    wheel = dist / f"kubemill-{VERSION}-py3-none-any.whl"
    assert sorted(p.name for p in dist.iterdir() if not p.name.startswith(".")) == [
        wheel.name,
        f"kubemill-{VERSION}.tar.gz",
    ]
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert packages == {
        "kubemill",
        "kubemill/cli",
        "kubemill/runner",
        "kubemill/operator",
        "kubemill/viewer",
    }
    assert not [n for n in names if n.startswith(("tests/", "kubemill_testenv/", "hack/"))]

    venv = tmp_path / "venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", "python3", str(venv)], check=True)
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin/python"), str(wheel)],
        check=True,
    )
    shown = subprocess.run(
        [str(venv / "bin/kubemill"), "--version"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == f"kubemill {VERSION}"
    # Imported from the fresh environment, not from this checkout.
    where = subprocess.run(
        [
            str(venv / "bin/python"),
            "-P",
            "-c",
            "import kubemill.runner; print(kubemill.runner.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv))
