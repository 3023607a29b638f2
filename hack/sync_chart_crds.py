"""Copies crds/ into the Helm chart (`make crds`): deploy/helm/kubemill/files/crds/.

A chart can read only files inside its own folder (and `helm package` takes nothing else), so
the CustomResourceDefinitions and their admission policies are copied there byte for byte,
crds/ staying the one place they are written. A unit test fails when a copy differs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "crds"
TARGET = ROOT / "deploy" / "helm" / "kubemill" / "files" / "crds"


def sources() -> list[Path]:
    """What crds/ applies: every manifest but its kustomization."""
    return sorted(p for p in SOURCE.glob("*.yaml") if p.name != "kustomization.yaml")


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in sources()}
    for stale in TARGET.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    for path in sources():
        shutil.copyfile(path, TARGET / path.name)


if __name__ == "__main__":
    main()
