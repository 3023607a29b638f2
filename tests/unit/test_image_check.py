"""`kubemill image check`: the checks run as a script inside an image that may lack kubemill, so
they need only the standard library; in the cluster they run under a run's own pod settings."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubemill.cli import main
from kubemill.cli.image import check_pod
from kubemill.operator.jobs import build_job
from kubemill.operator.settings import Settings
from kubemill.runner import __version__, imagecheck

BIN = Path(sys.executable).parent


def test_without_site_packages_every_missing_part_is_one_line_and_the_exit_code_is_1() -> None:
    # -I -S: the standard library alone, as in a plain Python image.
    env = {"PATH": "/nonexistent", "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", inspect.getsource(imagecheck), "--version=9.9.9"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "ok",  # python
        "missing",  # the kubemill command
        "missing",  # the kubemill package
        "missing",  # the runner's modules
        "missing",  # the kernelspec (jupyter_client is not there)
        "ok",  # /tmp
    ]
    assert "pip install 'kubemill==9.9.9'" in lines[1]
    assert lines[3].startswith("missing: the runner's modules: nbclient (ModuleNotFoundError")
    assert "ipykernel (ModuleNotFoundError" in lines[3]


def test_in_this_environment_everything_is_there() -> None:
    # This environment's kubemill command is beside its Python (on PATH when activated).
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-c", inspect.getsource(imagecheck), f"--version={__version__}"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout
    assert all(line.startswith("ok: ") for line in result.stdout.splitlines()), result.stdout


def test_a_kernel_nobody_installed_is_missing_with_the_kernels_there_are() -> None:
    status, message = imagecheck._kernel("no-such-kernel")
    assert status == "missing"
    assert "a kernelspec named 'no-such-kernel' (found: " in message
    assert "python3" in message.split("found: ", 1)[1]


def test_the_check_pod_runs_as_a_run_does() -> None:
    run = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u" * 8},
        "spec": {"notebook": "s3://bucket/n.ipynb", "output": "s3://bucket/out/"},
    }
    job = build_job(run, Settings())
    pod = check_pod("registry.example/team:1", "python3", "kubemill-image-check-x")

    runner = job["spec"]["template"]["spec"]
    assert pod["spec"]["securityContext"] == runner["securityContext"]
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"] == runner["containers"][0]["securityContext"]
    assert container["image"] == "registry.example/team:1"
    runner_env = {e["name"]: e.get("value") for e in runner["containers"][0]["env"]}
    assert {e["name"]: e["value"] for e in container["env"]}.items() <= runner_env.items()
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["command"][:2] == ["python3", "-c"]
    assert container["command"][3:] == ["--kernel=python3", f"--version={__version__}"]


def test_script_prints_the_source_that_runs_on_its_own(capsys: object) -> None:
    assert main(["image", "check", "--script"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out == inspect.getsource(imagecheck)


def test_an_image_and_here_at_once_is_a_usage_error(capsys: object) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["image", "check", "x:1", "--here"])
    assert exited.value.code == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "not allowed with argument" in err
