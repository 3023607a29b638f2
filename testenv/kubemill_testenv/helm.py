"""helm for the chart's tests, built from its Go module by hack/helm/build.sh into the cache
(`make helm`; about 90 s cold, instant once cached), and the chart it installs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .controlplane import REPO_ROOT

__all__ = ["BUILD_SCRIPT", "CHART", "helm_binary"]

BUILD_SCRIPT = REPO_ROOT / "hack" / "helm" / "build.sh"
#: The chart in this checkout.
CHART = REPO_ROOT / "deploy" / "helm" / "kubemill"


def helm_binary() -> Path:
    """The cached helm binary, built first when missing (the script is idempotent)."""
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT} failed (it needs Go and the Go module proxy):\n{done.stderr}"
        )
    return Path(done.stdout.strip().splitlines()[-1])
