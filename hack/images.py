"""Build kubemill's images with buildah and unpack them for the test node agent (`make images`).

Five images, each rebuilt only when its inputs change:
- `localhost/kubemill-base:bookworm`: Debian packages from mmdebstrap, keyed by the suite, the
  package list and BASE_RECIPE (label `dev.kubemill.base-key`);
- the runner and the operator, from Dockerfile.runner and Dockerfile.operator on that base, with
  the tags the manifests use, keyed by a sha256 over the Dockerfile, the build context's files and
  the base image's ID (label `dev.kubemill.inputs`);
- the README's two example runner images with pandas and matplotlib (examples/images/), never
  published: `Dockerfile.pandas` FROM the runner just built (keyed by its Dockerfile and the
  runner's ID), and `Dockerfile.python`, a team's Python image with kubemill installed by pip
  from the wheel `make dist` builds (keyed by its Dockerfile, kubemill's sources and the base's
  ID; the wheel is built only when the image is).

Buildah's storage lives under $KUBEMILL_CACHE/containers, outside the clone. Every image is also
unpacked, once, into the image store the node agent reads:

    $KUBEMILL_CACHE/images/store/<64-hex image ID>/rootfs/       the image's root file system
    $KUBEMILL_CACHE/images/store/<64-hex image ID>/config.json   its OCI image config

and build/images.json in the clone maps each of the five refs to its store folder. The runner
and operator are written as OCI archives under build/images/ for `kind load image-archive`,
`buildah push` or `skopeo copy`. Run it with the project's venv: `.venv/bin/python -P
hack/images.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

from kubemill_testenv.debian import ensure

ROOT = Path(__file__).resolve().parents[1]
# The tools (commands, or a file by its absolute path) and the Debian packages that provide
# them, installed on a fresh machine. The node agent runs containers with runc and gives them
# the RuntimeDefault seccomp profile of Debian's containers-common.
TOOLS = {
    "buildah": "buildah",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "/usr/share/containers/seccomp.json": "golang-github-containers-common",
}

BASE_REF = "localhost/kubemill-base:bookworm"
BASE_SUITE = "bookworm"
# python-is-python3: the Dockerfiles run `python`; passwd: they run groupadd and useradd.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd")
# Bump when build_base changes what goes into the base image, so every cache rebuilds it.
BASE_RECIPE = 1
BASE_KEY_LABEL = "dev.kubemill.base-key"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

INPUTS_LABEL = "dev.kubemill.inputs"
REGISTRY = "ghcr.io/kubemill"
# Image name -> its Dockerfile.
IMAGES = {"kubemill-runner": "Dockerfile.runner", "kubemill-operator": "Dockerfile.operator"}
# The example runner images (README: "Your notebook's dependencies"): name -> Dockerfile. Their
# tags are local ones: nothing publishes them (hack/publish.py pushes IMAGES only).
EXAMPLES = {
    "kubemill-example-pandas": "examples/images/Dockerfile.pandas",
    "kubemill-example-python": "examples/images/Dockerfile.python",
}
EXAMPLE_TAG = "dev"
# Where Dockerfile.python's build finds the wheel (dist/, mounted read-only).
DIST_IN_BUILD = "/run/kubemill-dist"
# What `COPY . /src/` takes: .dockerignore lets in exactly these (a unit test keeps them equal).
# Not README.md: pyproject.toml names it as the long description, but an empty stand-in serves
# inside an image, and an edit of the README then rebuilds nothing.
CONTEXT = ("pyproject.toml", "kubemill", "runner", "operator")
SKIPPED_PARTS = ("__pycache__",)
SKIPPED_SUFFIXES = (".egg-info", ".pyc")
# Where the build mounts the host's CA bundle, for pip (PIP_CERT).
CA_IN_BUILD = "/run/host-ca.crt"
DEFAULT_CA = "/etc/ssl/certs/ca-certificates.crt"
# Store folders kept besides the current ones: other clones' recent images (five a clone, with
# the two examples: two clones' worth).
KEEP_STORE = 10


class StepFailed(Exception):
    """A command failed; carries what to print."""

    def __init__(self, argv: Sequence[str], stderr: str) -> None:
        super().__init__(" ".join(argv))
        self.argv = list(argv)
        self.stderr = stderr


# ---- pure parts (unit-tested) ----


def base_key(suite: str, packages: Sequence[str], recipe: int) -> str:
    """The base image's key: what mmdebstrap installs and how the image is made from it."""
    text = json.dumps({"suite": suite, "packages": sorted(packages), "recipe": recipe})
    return hashlib.sha256(text.encode()).hexdigest()


def context_files(root: Path, entries: Sequence[str] = CONTEXT) -> list[str]:
    """The build context's files, relative to root, sorted; caches and build metadata left out."""
    found: list[str] = []
    for entry in entries:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in candidates:
            relative = file.relative_to(root)
            if any(
                part in SKIPPED_PARTS or part.endswith(SKIPPED_SUFFIXES) for part in relative.parts
            ):
                continue
            found.append(relative.as_posix())
    return sorted(found)


def inputs_hash(root: Path, dockerfile: str, files: Sequence[str], base_id: str) -> str:
    """sha256 over the Dockerfile, each context file's path, mode bits and bytes, and the base ID.

    Paths and lengths are hashed with the bytes, so moving content between files changes it.
    """
    digest = hashlib.sha256()
    digest.update(f"base {base_id}\n".encode())
    for name in [dockerfile, *files]:
        data = (root / name).read_bytes()
        executable = os.access(root / name, os.X_OK)
        digest.update(f"file {name} {len(data)} {int(executable)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def parse_pip_config(listing: str) -> dict[str, str]:
    """`pip config list` output (`global.cert='/x'`) as {option: value}; later scopes win."""
    options: dict[str, str] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            options[key.rpartition(".")[2]] = value.strip().strip("'\"")
    return options


def ca_bundle(pip_options: dict[str, str], environ: dict[str, str]) -> str:
    """The CA bundle the host's pip uses: its config, then the environment, then Debian's."""
    for value in (
        pip_options.get("cert"),
        environ.get("PIP_CERT"),
        environ.get("REQUESTS_CA_BUNDLE"),
        environ.get("SSL_CERT_FILE"),
    ):
        if value:
            return value
    return DEFAULT_CA


def index_url(pip_options: dict[str, str], environ: dict[str, str]) -> str | None:
    """The host pip's configured index, if it has one (the environment wins, as in pip)."""
    return environ.get("PIP_INDEX_URL") or pip_options.get("index-url") or None


def is_image_id(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def to_prune(folders: dict[str, float], current: set[str], keep: int) -> list[str]:
    """Store folders (name -> mtime) to delete: all but the current ones and `keep` newest.

    Only folders named by an image ID are ours; anything else in the store is left alone.
    """
    ours = [name for name in folders if name not in current and is_image_id(name)]
    others = sorted(ours, key=lambda n: -folders[n])
    return sorted(others[keep:])


# ---- commands ----


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


def run(argv: Sequence[str], *, quiet: bool = True) -> str:
    """Run a command; its stdout, or StepFailed with its stderr's tail."""
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StepFailed(argv, (result.stderr or result.stdout)[-4000:])
    if not quiet:
        sys.stdout.write(result.stdout)
    return result.stdout


def buildah(cache: Path, *args: str) -> list[str]:
    """A buildah command line on kubemill's own storage, outside any clone."""
    return [
        "buildah",
        "--root",
        str(cache / "containers" / "storage"),
        "--runroot",
        str(cache / "containers" / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    say(f"{message} in {time.monotonic() - started:.0f} s")


def ensure_tools() -> None:
    """Install buildah, runc, mmdebstrap and containers-common from Debian when any is missing."""
    ensure(TOOLS, "images")


def inspect(cache: Path, ref: str) -> dict[str, object] | None:
    """buildah's description of a local image (FromImageID, OCIv1, …), or None if absent."""
    result = subprocess.run(
        buildah(cache, "inspect", "--type", "image", ref),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    info: dict[str, object] = json.loads(result.stdout)
    return info


def image_id(info: dict[str, object]) -> str:
    return str(info["FromImageID"])


def oci_config(info: dict[str, object]) -> dict[str, object]:
    config = info["OCIv1"]
    assert isinstance(config, dict)
    return config


def label(info: dict[str, object] | None, name: str) -> str | None:
    if info is None:
        return None
    labels = oci_config(info).get("config", {}).get("Labels") or {}
    return labels.get(name)


def build_base(cache: Path) -> str:
    """The Debian base image's ID, made with mmdebstrap when its key changed."""
    key = base_key(BASE_SUITE, BASE_PACKAGES, BASE_RECIPE)
    info = inspect(cache, BASE_REF)
    if label(info, BASE_KEY_LABEL) == key and info is not None:
        say(f"base {BASE_REF} up to date (key {key[:12]})")
        return image_id(info)
    work = cache / "images"
    with tempfile.TemporaryDirectory(dir=work, prefix=".base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        with step(f"base: mmdebstrap {BASE_SUITE} ({len(BASE_PACKAGES)} packages)"):
            run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(tarball),
                ]
            )
        with step(f"base: committed {BASE_REF} (key {key[:12]})"):
            container = run(buildah(cache, "from", "scratch")).strip()
            try:
                run(buildah(cache, "add", container, str(tarball), "/"))
                run(
                    buildah(
                        cache,
                        "config",
                        "--env",
                        f"PATH={BASE_PATH}",
                        "--env",
                        "LANG=C.UTF-8",
                        "--cmd",
                        '["python3"]',
                        "--label",
                        f"{BASE_KEY_LABEL}={key}",
                        container,
                    )
                )
                run(buildah(cache, "commit", "--rm", container, BASE_REF))
            except StepFailed:
                subprocess.run(buildah(cache, "rm", container), capture_output=True, check=False)
                raise
    info = inspect(cache, BASE_REF)
    assert info is not None
    return image_id(info)


def pip_build_args() -> tuple[list[str], str]:
    """buildah arguments giving pip in the build the host's CA bundle and index; the bundle."""
    listing = subprocess.run(
        [sys.executable, "-P", "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    options = parse_pip_config(listing)
    bundle = ca_bundle(options, dict(os.environ))
    args = ["--volume", f"{bundle}:{CA_IN_BUILD}:ro", "--build-arg", f"PIP_CERT={CA_IN_BUILD}"]
    index = index_url(options, dict(os.environ))
    if index:
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return args, bundle


def built_before(cache: Path, name: str, ref: str, inputs: str) -> str | None:
    """The ID of the image of these inputs if the storage has it (tagged `ref` again if needed)."""
    short = name.removeprefix("kubemill-")
    info = inspect(cache, ref)
    by_content = content_ref(name, inputs)
    if label(info, INPUTS_LABEL) == inputs and info is not None:
        if inspect(cache, by_content) is None:
            run(buildah(cache, "tag", image_id(info), by_content))
        say(f"{short} {ref} up to date (inputs {inputs[:12]})")
        return image_id(info)
    # Clones share the storage and the public tag: another clone's build moved the tag, but the
    # image of these inputs is still here under its content tag, so it is taken back, not rebuilt.
    kept = inspect(cache, by_content)
    if kept is not None and label(kept, INPUTS_LABEL) == inputs:
        run(buildah(cache, "tag", by_content, ref))
        say(f"{short} {ref} tagged from {by_content}")
        return image_id(kept)
    return None


def build_image(cache: Path, name: str, ref: str, base_id: str, pip_args: list[str]) -> str:
    """The image's ID, built from its Dockerfile when its inputs hash changed."""
    dockerfile = IMAGES[name]
    inputs = inputs_hash(ROOT, dockerfile, context_files(ROOT), base_id)
    short = name.removeprefix("kubemill-")
    kept = built_before(cache, name, ref, inputs)
    if kept is not None:
        return kept
    by_content = content_ref(name, inputs)
    bud = [
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--file",
        str(ROOT / dockerfile),
        "--build-arg",
        f"BASE={BASE_REF}",
        *pip_args,
    ]
    with step(f"{short} {ref} built (inputs {inputs[:12]})"):
        tags = ["--tag", ref, "--tag", by_content]
        log = run(buildah(cache, *bud, "--label", f"{INPUTS_LABEL}={inputs}", *tags, str(ROOT)))
        # The build stage gets a tag of its own: untagged, its layers (the dependency layer among
        # them) are dangling once the final image is committed, and `rmi --prune` would delete
        # the very cache that makes a code change quick. Building it again with --target to tag
        # it costs a copy of its file system per instruction under vfs, so its ID is read from
        # the build's output instead, and that build only when the output does not say.
        stage = build_stage_id(log)
        if stage:
            run(buildah(cache, "tag", stage, build_stage_ref(name)))
        else:
            run(
                buildah(cache, *bud, "--target", "build", "--tag", build_stage_ref(name), str(ROOT))
            )
    info = inspect(cache, ref)
    assert info is not None
    return image_id(info)


def example_inputs(name: str, base_id: str, runner_id: str) -> str:
    """An example image's inputs: its Dockerfile and what it is made FROM. The pandas image is
    the runner plus pip; the python image is the base plus kubemill's wheel, which is built from
    the same files as the runner's kubemill (so those files are its inputs, not the wheel's
    bytes, which change with every build's timestamps)."""
    dockerfile = EXAMPLES[name]
    if name == "kubemill-example-pandas":
        return inputs_hash(ROOT, dockerfile, [], runner_id)
    return inputs_hash(ROOT, dockerfile, context_files(ROOT), base_id)


def build_wheel(cache: Path, version: str) -> Path:
    """dist/kubemill-<version>-py3-none-any.whl, by `make dist` (the release's own build)."""
    with step("wheel: make dist"):
        run(["make", "--no-print-directory", "-C", str(ROOT), f"CACHE={cache}", "dist"])
    wheel = ROOT / "dist" / f"kubemill-{version}-py3-none-any.whl"
    if not wheel.is_file():
        raise StepFailed(["make", "dist"], f"{wheel} was not made")
    return wheel


def build_example(
    cache: Path, name: str, base_id: str, runner_id: str, pip_args: list[str], version: str
) -> tuple[str, str]:
    """(ref, ID) of an example image, built when its inputs changed. The pandas image is built
    FROM the runner's ID, never from its tag, which another clone's build may move."""
    ref = f"localhost/{name}:{EXAMPLE_TAG}"
    inputs = example_inputs(name, base_id, runner_id)
    kept = built_before(cache, name, ref, inputs)
    if kept is not None:
        return ref, kept
    dockerfile = ROOT / EXAMPLES[name]
    if name == "kubemill-example-pandas":
        args = ["--build-arg", f"RUNNER={runner_id}"]
    else:
        wheel = build_wheel(cache, version)
        args = [
            "--build-arg", f"BASE={BASE_REF}",
            "--volume", f"{wheel.parent}:{DIST_IN_BUILD}:ro",
            "--build-arg", f"KUBEMILL={DIST_IN_BUILD}/{wheel.name}",
        ]  # fmt: skip
    with step(f"{name.removeprefix('kubemill-')} {ref} built (inputs {inputs[:12]})"):
        run(
            buildah(
                cache, "bud", "--isolation", "chroot", "--file", str(dockerfile), *args,
                *pip_args, "--label", f"{INPUTS_LABEL}={inputs}",
                "--tag", ref, "--tag", content_ref(name, inputs), str(dockerfile.parent),
            )
        )  # fmt: skip
    info = inspect(cache, ref)
    assert info is not None
    return ref, image_id(info)


def build_stage_id(log: str) -> str | None:
    """The ID buildah printed last before the final stage began (`--> 6dbcc9f1eb9`), if any."""
    last = None
    for line in log.splitlines():
        stage = re.match(r"\[(\d+)/(\d+)\] STEP 1/", line)
        if stage and stage[1] == stage[2] != "1":
            return last
        if line.startswith("--> ") and re.fullmatch(r"[0-9a-f]{11,64}", line.split()[-1]):
            last = line.split()[-1]
    return None


def content_ref(name: str, inputs: str) -> str:
    """The tag that names an image by its inputs, so each clone's build survives another's."""
    return f"localhost/{name}:inputs-{inputs[:16]}"


def stale_content_tags(
    images: list[dict[str, object]], current_ids: set[str], keep: int
) -> list[str]:
    """Content tags (`buildah images --json` entries) to remove: all but those of the current
    images and the `keep` newest of each name, so the storage keeps a few clones' builds."""
    tagged: dict[str, list[tuple[float, str]]] = {}
    for image in images:
        names = image.get("names") or []
        assert isinstance(names, list)
        short = str(image.get("id", ""))
        if short and any(full.startswith(short) for full in current_ids):
            continue
        for tag in names:
            repo, _, version = str(tag).rpartition(":")
            if version.startswith("inputs-"):
                tagged.setdefault(repo, []).append((float(str(image.get("created", 0))), tag))
    stale: list[str] = []
    for entries in tagged.values():
        stale += [tag for _, tag in sorted(entries, reverse=True)[keep:]]
    return sorted(stale)


def build_stage_ref(name: str) -> str:
    return f"localhost/{name}-build:cache"


def write_archive(cache: Path, name: str, ref: str, ident: str, version: str) -> Path:
    """build/images/<name>-<version>.oci.tar, rewritten only when the image changed."""
    folder = ROOT / "build" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{name}-{version}.oci.tar"
    stamp = folder / f"{name}-{version}.oci.tar.id"
    if archive.exists() and stamp.exists() and stamp.read_text().strip() == ident:
        return archive
    partial = folder / f".{archive.name}.partial"
    partial.unlink(missing_ok=True)
    with step(f"archive {archive.relative_to(ROOT)}"):
        run(buildah(cache, "push", ident, f"oci-archive:{partial}:{ref}"))
        partial.rename(archive)
        stamp.write_text(ident + "\n")
    return archive


def unpack(cache: Path, store: Path, ref: str, info: dict[str, object]) -> Path:
    """store/<id>/{rootfs/,config.json}, made in a sibling folder and renamed into place."""
    ident = image_id(info)
    target = store / ident
    if target.is_dir():
        return target
    partial = store / f".partial-{ident}-{os.getpid()}"
    with step(f"unpacked {ref} into {target}"):
        (partial / "rootfs").mkdir(parents=True)
        container = run(buildah(cache, "from", "--pull-never", ident)).strip()
        try:
            mounted = run(buildah(cache, "mount", container)).strip()
            run(["cp", "-a", "--", f"{mounted}/.", str(partial / "rootfs")])
        finally:
            subprocess.run(buildah(cache, "rm", container), capture_output=True, check=False)
        (partial / "config.json").write_text(json.dumps(oci_config(info), indent=2) + "\n")
        partial.rename(target)
    return target


def in_use(store: Path, mountinfo: str) -> set[str]:
    """Store folders that a running container's overlay has as its lower layer (any clone's
    sandbox or test cluster): deleting one would pull the root file system from under it."""
    used = set()
    prefix = f"lowerdir={store}/"
    for line in mountinfo.splitlines():
        for option in line.split()[-1].split(","):
            if option.startswith(prefix):
                used.add(option.removeprefix(prefix).split("/", 1)[0])
    return used


def prune(cache: Path, store: Path, current: set[str]) -> None:
    """Keep the store and buildah's storage from growing without bound."""
    folders = {p.name: p.stat().st_mtime for p in store.iterdir() if p.is_dir()}
    busy = in_use(store, Path("/proc/self/mountinfo").read_text())
    for name in to_prune(folders, current | busy, KEEP_STORE):
        shutil.rmtree(store / name)
        say(f"pruned {store / name}")
    listed = json.loads(run(buildah(cache, "images", "--json")) or "[]")
    stale = stale_content_tags(listed, current, KEEP_STORE)
    if stale:
        run(buildah(cache, "rmi", *stale))
    run(buildah(cache, "rmi", "--prune"))


def write_index(entries: dict[str, Path]) -> Path:
    index = ROOT / "build" / "images.json"
    index.parent.mkdir(parents=True, exist_ok=True)
    partial = index.with_suffix(".json.partial")
    images = {ref: str(path) for ref, path in entries.items()}
    partial.write_text(json.dumps({"images": images}, indent=2) + "\n")
    partial.rename(index)
    return index


def cache_dir() -> Path:
    return Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill")).resolve()


def main() -> int:
    started = time.monotonic()
    cache = cache_dir()
    store = cache / "images" / "store"
    store.mkdir(parents=True, exist_ok=True)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    ensure_tools()
    with (cache / "images" / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A run killed half-way leaves partial folders; under the lock, nobody else owns them.
        for partial in store.glob(".partial-*"):
            shutil.rmtree(partial)
        try:
            # So do its working containers, which would keep their images from `rmi --prune`
            # for good ("image is in use by a container").
            run(buildah(cache, "rm", "--all"))
            base_id = build_base(cache)
            pip_args, bundle = pip_build_args()
            refs = {BASE_REF: base_id}
            archives = []
            for name in IMAGES:
                ref = f"{REGISTRY}/{name}:{version}"
                refs[ref] = build_image(cache, name, ref, base_id, pip_args)
                archives.append(write_archive(cache, name, ref, refs[ref], version))
            runner_id = refs[f"{REGISTRY}/kubemill-runner:{version}"]
            for name in EXAMPLES:
                ref, ident = build_example(cache, name, base_id, runner_id, pip_args, version)
                refs[ref] = ident
            entries = {}
            for ref in refs:
                info = inspect(cache, ref)
                assert info is not None
                entries[ref] = unpack(cache, store, ref, info)
                os.utime(entries[ref])
            index = write_index(entries)
            prune(cache, store, {path.name for path in entries.values()})
        except StepFailed as failed:
            print(f"images: failed: {' '.join(failed.argv)}", file=sys.stderr)
            print(failed.stderr.rstrip(), file=sys.stderr)
            return 1
    for archive in archives:
        say(f"archive {archive}")
    say(f"store index {index} (pip CA bundle {bundle}); done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
