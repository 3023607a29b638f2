"""The images `make images` built, read from the store the node agent runs them from.

build/images.json maps each image reference to its store folder (``rootfs/`` and the OCI image
``config.json``). These checks read the real images' files: the runner stays lean, runs as a
numeric non-root user, carries the kernelspec, and holds this checkout's code (so an image is
rebuilt from the clone it is tested with, never reused from another).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INDEX = ROOT / "build" / "images.json"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BASE = "localhost/kubemill-base:bookworm"
RUNNER = f"ghcr.io/kubemill/kubemill-runner:{VERSION}"
OPERATOR = f"ghcr.io/kubemill/kubemill-operator:{VERSION}"
# The README's example runner images (examples/images/), checked running in tests/e2e.
EXAMPLES = {"localhost/kubemill-example-pandas:dev", "localhost/kubemill-example-python:dev"}
VENV = "opt/kubemill"


@pytest.fixture(scope="module")
def store() -> dict[str, Path]:
    if not INDEX.exists():
        pytest.skip(f"{INDEX.relative_to(ROOT)} is missing: run `make images` first")
    return {ref: Path(folder) for ref, folder in json.loads(INDEX.read_text())["images"].items()}


def _config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())["config"]
    return config


def _site_packages(folder: Path) -> Path:
    (found,) = (folder / "rootfs" / VENV / "lib").glob("python3*/site-packages")
    return found


def _distributions(folder: Path) -> set[str]:
    return {
        info.name.split("-")[0].lower().replace("_", "-")
        for info in _site_packages(folder).glob("*.dist-info")
    }


def test_index_names_the_images_by_their_store_folders(store: dict[str, Path]) -> None:
    assert set(store) == {BASE, RUNNER, OPERATOR, *EXAMPLES}
    for folder in store.values():
        assert re.fullmatch(r"[0-9a-f]{64}", folder.name), folder
        assert (folder / "rootfs").is_dir() and (folder / "config.json").is_file()


def test_base_has_what_the_dockerfiles_run(store: dict[str, Path]) -> None:
    rootfs = store[BASE] / "rootfs"
    for tool in ("usr/bin/python", "usr/bin/python3", "usr/sbin/groupadd", "usr/sbin/useradd"):
        assert (rootfs / tool).exists(), tool
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").exists()


def test_runner_is_lean_and_runs_notebooks(store: dict[str, Path]) -> None:
    installed = _distributions(store[RUNNER])
    assert {"kubemill", "nbclient", "ipykernel", "boto3", "nbconvert"} <= installed
    assert not {"kopf", "kubernetes"} & installed
    site = _site_packages(store[RUNNER])
    assert not (site / "kopf").exists() and not (site / "kubernetes").exists()


def test_runner_carries_the_python3_kernelspec(store: dict[str, Path]) -> None:
    spec = store[RUNNER] / "rootfs" / VENV / "share/jupyter/kernels/python3/kernel.json"
    argv = json.loads(spec.read_text())["argv"]
    assert "ipykernel_launcher" in argv


@pytest.mark.parametrize(
    ("ref", "entrypoint"), [(RUNNER, ["kubemill"]), (OPERATOR, ["kubemill-operator"])]
)
def test_images_run_their_entrypoint_as_numeric_non_root(
    store: dict[str, Path], ref: str, entrypoint: list[str]
) -> None:
    config = _config(store[ref])
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == entrypoint
    assert any(env.startswith("PATH=/opt/kubemill/bin:") for env in config["Env"])
    assert (store[ref] / "rootfs" / VENV / "bin" / entrypoint[0]).exists()
    passwd = (store[ref] / "rootfs/etc/passwd").read_text()
    assert "kubemill:x:10001:10001:" in passwd


def test_operator_has_kopf_and_the_kubernetes_client(store: dict[str, Path]) -> None:
    assert {"kubemill", "kopf", "kubernetes"} <= _distributions(store[OPERATOR])


def test_operator_image_carries_the_viewer(store: dict[str, Path]) -> None:
    """deploy/components/viewer runs `kubemill-viewer` from the operator's image."""
    assert {"aiohttp", "nbconvert"} <= _distributions(store[OPERATOR])
    assert (store[OPERATOR] / "rootfs" / VENV / "bin" / "kubemill-viewer").exists()


@pytest.mark.parametrize("ref", [RUNNER, OPERATOR])
def test_images_hold_this_checkouts_code(store: dict[str, Path], ref: str) -> None:
    installed = _site_packages(store[ref]) / "kubemill"
    sources = {"kubemill": ROOT / "kubemill", "runner": ROOT / "runner"}
    sources["operator"] = ROOT / "operator"
    for package, folder in sources.items():
        target = installed if package == "kubemill" else installed / package
        for source in folder.rglob("*.py"):
            installed_source = target / source.relative_to(folder)
            assert installed_source.read_bytes() == source.read_bytes(), source
    contract = installed / "runner" / "contract.py"
    assert contract.read_bytes() == (ROOT / "runner" / "contract.py").read_bytes()


def _in_image(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`kubemill ARGV` run by the image's own interpreter and packages (chroot into its root
    file system; no bytecode written into the shared store)."""
    chroot = shutil.which("chroot")
    if os.geteuid() != 0 or chroot is None:
        pytest.skip("needs root and chroot to enter the image's root file system")
    env = {"PATH": "/opt/kubemill/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [chroot, str(folder / "rootfs"), "/opt/kubemill/bin/kubemill", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_the_runner_image_lists_every_command_and_previews_schedules(
    store: dict[str, Path],
) -> None:
    listed = _in_image(store[RUNNER], "--help")
    assert listed.returncode == 0, listed.stderr
    for line in ("run", "inspect", "results", "schedule preview", "trigger", "backfill"):
        assert f"\n  {line}  " in listed.stdout
    preview = _in_image(store[RUNNER], "schedule", "preview", "30 2 * * *", "--tz",
                        "Europe/Berlin", "--from", "2027-03-28", "--count", "1")  # fmt: skip
    assert preview.returncode == 0, preview.stderr
    assert "2027-03-28T01:00:00Z" in preview.stdout and "DST starts" in preview.stdout


def test_the_runner_image_says_trigger_needs_the_kubernetes_client(
    store: dict[str, Path],
) -> None:
    triggered = _in_image(store[RUNNER], "trigger", "daily")
    assert triggered.returncode == 2
    assert triggered.stderr.startswith("kubemill trigger: error: this command needs the Kubernetes")
