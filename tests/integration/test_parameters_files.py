"""The operator's parameter ConfigMaps, as files, read by the real runner with a real kernel:
the contract between the two, without a cluster (tests/e2e has the same through Kubernetes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubemill.operator.jobs import PARAMETERS_MOUNT, build_job, build_parameter_config_maps
from kubemill.operator.settings import Settings
from kubemill.runner.contract import ExitCode
from tests.conftest import NOTEBOOKS, TRICKY_TEXT, kubemill, large_parameters, parameter_digest
from tests.integration.helpers import load

pytestmark = pytest.mark.integration


def _runner_parameter_args(parameters: dict[str, Any], folder: Path) -> list[str]:
    """The runner's parameter arguments as the operator builds them, with the ConfigMaps'
    data written where the pod would see them (under `folder` instead of PARAMETERS_MOUNT)."""
    run = {
        "metadata": {"name": "big", "namespace": "ns", "uid": "u-1"},
        "spec": {"notebook": "s3://b/n.ipynb", "parameters": parameters},
    }
    config_maps = build_parameter_config_maps(run)
    job = build_job(run, Settings(output_prefix="s3://b/"))
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    at = args.index("--parameters-json-file")
    paths = args[at + 1 : at + 1 + len(config_maps)]
    assert all(p.startswith(f"{PARAMETERS_MOUNT}/") for p in paths)
    local = []
    for config_map, path in zip(config_maps, paths, strict=True):
        target = folder / Path(path).name
        target.write_text(config_map["data"]["parameters.json"], encoding="utf-8")
        local.append(str(target))
    return ["--parameters-json-file", *local]


def test_a_parameter_set_in_two_parts_reaches_the_kernel_byte_for_byte(tmp_path: Path) -> None:
    parameters = large_parameters(1_200_000)
    args = _runner_parameter_args(parameters, tmp_path)
    assert len(args) == 3  # two parts
    out = tmp_path / "run"
    result = kubemill(
        ["run", str(NOTEBOOKS / "parameters_digest.ipynb"), f"{out}/", *args], timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = load(out / "results.json")
    assert results["text"] == TRICKY_TEXT
    assert results["lengths"] == {k: len(v) for k, v in parameters.items()}
    assert results["digests"] == {k: parameter_digest(v) for k, v in parameters.items()}


def test_a_missing_part_stops_the_run_before_the_kernel_starts(tmp_path: Path) -> None:
    args = _runner_parameter_args(large_parameters(1_200_000), tmp_path)
    Path(args[2]).unlink()
    out = tmp_path / "run"
    summary = tmp_path / "summary.json"
    result = kubemill(
        [
            "run", str(NOTEBOOKS / "parameters_digest.ipynb"), f"{out}/", *args,
            "--termination-message-path", str(summary),
        ]
    )  # fmt: skip
    assert result.returncode == ExitCode.BAD_INPUT
    assert "parameters-1.json (part 2 of 2): No such file or directory" in result.stderr
    assert json.loads(summary.read_text())["reason"] == "BadInput"
    assert not (out / "output.ipynb").exists()
