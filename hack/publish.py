"""Publish the images `make images` built: one architecture per machine, then one multi-arch
list per image (`make push-images`, `make publish-manifests`; the release workflow runs both).

    python -P hack/publish.py push --registry ghcr.io/kubemill
        pushes this machine's runner and operator as <registry>/<name>:<version>-<arch>
    python -P hack/publish.py manifest --registry ghcr.io/kubemill --arches amd64,arm64
        makes <registry>/<name>:<version>, an image index of the per-architecture images

Each architecture is built and tested natively (an arm64 machine runs `make test`, whose `make
images` builds what `push` then pushes, by image ID), so what is published is what was tested on
that architecture; nothing is emulated. `push` writes build/release/push-<arch>.json; `manifest`
reads every push-*.json there (the workflow brings them from the machines that pushed) and lists
each image by the digest its push recorded, never by a tag that may have moved since, then
writes build/release/manifest.json, which the workflow signs and attests by digest. Both print
every reference with its digest. `--tls-verify=false` is for a registry on loopback (the test's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from types import ModuleType


def _script(name: str) -> ModuleType:
    """hack/<name>.py, loaded by path: hack/ is a folder of scripts, never on the import path."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


images = _script("images")
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}
OUT = images.ROOT / "build" / "release"


def say(message: str) -> None:
    """Progress goes to stderr: stdout carries only the references, for scripts."""
    print(f"publish: {message}", file=sys.stderr, flush=True)


def host_arch() -> str:
    machine = platform.machine()
    if machine not in ARCHES:
        raise SystemExit(f"publish: no image architecture for this machine ({machine})")
    return ARCHES[machine]


def local_ref(name: str, version: str) -> str:
    """The tag `make images` gave the image."""
    return f"{images.REGISTRY}/{name}:{version}"


def built_id(ref: str) -> str:
    """The ID of the image this clone's `make images` built and tested under `ref`. Not the tag
    itself: clones share buildah's storage, and another clone's build may have moved it."""
    index = images.ROOT / "build" / "images.json"
    if not index.is_file():
        raise SystemExit(f"publish: {index} is missing: run make images first")
    folders = json.loads(index.read_text())["images"]
    if ref not in folders:
        raise SystemExit(f"publish: {ref} is not in {index}: run make images first")
    return Path(folders[ref]).name


def remote_ref(registry: str, name: str, version: str, arch: str | None = None) -> str:
    return f"{registry.rstrip('/')}/{name}:{version}" + (f"-{arch}" if arch else "")


def _digest(cache: Path, argv: list[str]) -> str:
    """Run a buildah push whose --digestfile is added here; the digest it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        digestfile = Path(tmp) / "digest"
        images.run(images.buildah(cache, *argv[:1], "--digestfile", str(digestfile), *argv[1:]))
        return digestfile.read_text().strip()


def push(cache: Path, registry: str, version: str, tls: list[str]) -> dict[str, str]:
    arch = host_arch()
    pushed = {}
    for name in images.IMAGES:
        ident = built_id(local_ref(name, version))
        info = images.inspect(cache, ident)
        if info is None:
            raise SystemExit(f"publish: image {ident} is gone from the storage: run make images")
        built_for = str(images.oci_config(info).get("architecture", ""))
        if built_for != arch:
            raise SystemExit(f"publish: {local_ref(name, version)} is {built_for}, not {arch}")
        target = remote_ref(registry, name, version, arch)
        digest = _digest(cache, ["push", *tls, ident, f"docker://{target}"])
        pushed[target] = digest
        say(f"pushed {target}@{digest}")
    return pushed


def manifest(
    cache: Path, registry: str, version: str, arches: list[str], tls: list[str]
) -> dict[str, str]:
    recorded: dict[str, str] = {}
    for record in sorted(OUT.glob("push-*.json")):
        recorded.update(json.loads(record.read_text()))
    published = {}
    for name in images.IMAGES:
        target = remote_ref(registry, name, version)
        listed = f"localhost/{name}-release:{version}"
        subprocess.run(images.buildah(cache, "manifest", "rm", listed), capture_output=True)
        images.run(images.buildah(cache, "manifest", "create", listed))
        try:
            for arch in arches:
                # By the digest its push recorded, not by its tag, which may have moved since.
                pushed = remote_ref(registry, name, version, arch)
                if pushed not in recorded:
                    raise SystemExit(
                        f"publish: no push of {pushed} is recorded in {OUT}/push-*.json: run "
                        f"make push-images on an {arch} machine, and put its push-{arch}.json there"
                    )
                repository = pushed.rpartition(":")[0]
                source = f"docker://{repository}@{recorded[pushed]}"
                images.run(images.buildah(cache, "manifest", "add", *tls, listed, source))
            digest = _digest(
                cache, ["manifest", "push", "--all", *tls, listed, f"docker://{target}"]
            )
        finally:
            subprocess.run(images.buildah(cache, "manifest", "rm", listed), capture_output=True)
        published[target] = digest
        say(f"published {target}@{digest} ({', '.join(arches)})")
    return published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/publish.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="e.g. ghcr.io/kubemill")
    parser.add_argument(
        "--tls-verify", default="true", choices=("true", "false"), help="false for loopback"
    )
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("push", help="this machine's images, tagged <version>-<arch>")
    listing = steps.add_parser("manifest", help="the multi-arch index of the pushed images")
    listing.add_argument("--arches", default="amd64,arm64", help="comma-separated")
    args = parser.parse_args(argv)
    # `make push-images` and `make publish-manifests` run `make release-check` first.
    version = tomllib.loads((images.ROOT / "pyproject.toml").read_text())["project"]["version"]
    cache = images.cache_dir()
    tls = [f"--tls-verify={args.tls_verify}"]
    try:
        if args.step == "push":
            done = push(cache, args.registry, version, tls)
        else:
            arches = [a for a in args.arches.split(",") if a]
            unknown = sorted(set(arches) - set(ARCHES.values()))
            if unknown or not arches:
                parser.error(f"--arches: {args.arches!r}; give some of amd64,arm64")
            done = manifest(cache, args.registry, version, arches, tls)
    except images.StepFailed as failed:
        print(f"publish: failed: {' '.join(failed.argv)}", file=sys.stderr)
        print(failed.stderr.rstrip(), file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    record = f"push-{host_arch()}.json" if args.step == "push" else "manifest.json"
    (OUT / record).write_text(json.dumps(done, indent=2) + "\n")
    for ref, digest in done.items():
        print(f"{ref}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
