"""The release's publishing steps (`make push-images`, `make publish-manifests`) against a real
OCI registry: go-containerregistry's registry, built from the Go module proxy by
hack/go-install.sh. This machine pushes its own architecture; the index then names exactly the
images this clone's `make images` built and tested, by digest."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemill_testenv.controlplane import free_port
from kubemill_testenv.procs import spawn, wait_until
from tests import hack_scripts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REGISTRY_TOOL = "github.com/google/go-containerregistry/cmd/registry@v0.22.1"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json"


def _get(url: str, accept: str) -> tuple[dict[str, Any], str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), response.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    built = subprocess.run(
        [str(ROOT / "hack" / "go-install.sh"), REGISTRY_TOOL],
        capture_output=True,
        text=True,
        check=True,
    )
    port = free_port()
    process = spawn(
        "registry",
        [built.stdout.strip().splitlines()[-1], "-port", str(port)],
        log_path=tmp_path_factory.mktemp("registry") / "registry.log",
    )

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    try:
        wait_until(answers, 30, "the registry's /v2/", check=process)
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


def buildah() -> list[str]:
    """buildah on the storage `make images` built into (hack/images.py's)."""
    images = hack_scripts.load("images")
    return list(images.buildah(images.cache_dir()))


def _publish(*args: str) -> dict[str, str]:
    record = f"push-{ARCH}" if args[-1] == "push" else "manifest"
    result = subprocess.run(
        [sys.executable, "-P", str(ROOT / "hack" / "publish.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((ROOT / "build" / "release" / f"{record}.json").read_text())
    assert sorted(result.stdout.split()) == sorted(f"{r}@{d}" for r, d in written.items())
    return dict(written)


def test_each_image_is_published_as_an_index_of_the_tested_image_by_digest(registry: str) -> None:
    built = json.loads((ROOT / "build" / "images.json").read_text())["images"]
    target = f"{registry}/team"

    pushed = _publish("--registry", target, "--tls-verify=false", "push")
    # Someone moves the runner's arch tag between the push and the index: the index still
    # lists what was pushed (and tested), by its recorded digest.
    moved = f"docker://{target}/kubemill-runner:{VERSION}-{ARCH}"
    operator_id = Path(built[f"ghcr.io/kubemill/kubemill-operator:{VERSION}"]).name
    subprocess.run(
        [*buildah(), "push", "--tls-verify=false", operator_id, moved],
        check=True,
        capture_output=True,
    )
    published = _publish("--registry", target, "--tls-verify=false", "manifest", "--arches", ARCH)

    for name in ("kubemill-runner", "kubemill-operator"):
        tested_id = Path(built[f"ghcr.io/kubemill/{name}:{VERSION}"]).name
        per_arch = f"{target}/{name}:{VERSION}-{ARCH}"
        digest = pushed[per_arch]
        image, _ = _get(f"http://{registry}/v2/team/{name}/manifests/{digest}", MANIFEST_TYPES)
        # An OCI image's ID is its config's digest: the registry holds the very image tested.
        assert image["config"]["digest"] == f"sha256:{tested_id}"

        index, index_digest = _get(
            f"http://{registry}/v2/team/{name}/manifests/{VERSION}", INDEX_TYPE
        )
        assert published[f"{target}/{name}:{VERSION}"] == index_digest
        assert index["mediaType"] == INDEX_TYPE
        assert [(m["digest"], m["platform"]) for m in index["manifests"]] == [
            (digest, {"architecture": ARCH, "os": "linux"})
        ]


def test_an_index_of_an_architecture_never_pushed_fails_and_says_which(registry: str) -> None:
    other = "arm64" if ARCH == "amd64" else "amd64"
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            str(ROOT / "hack" / "publish.py"),
            "--registry",
            f"{registry}/empty",
            "--tls-verify=false",
            "manifest",
            "--arches",
            other,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{registry}/empty/kubemill-runner:{VERSION}-{other}" in result.stderr
