"""The pure parts of hack/images.py: what decides that an image is rebuilt, and what is pruned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import hack_scripts

ROOT = Path(__file__).resolve().parents[2]
images = hack_scripts.load("images")
BASE_ID = "a" * 64


def _tree(root: Path) -> None:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "sub.egg-info").mkdir()
    (root / "Dockerfile").write_text("FROM x\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "b.py").write_text("B = 2\n")
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "sub.egg-info" / "PKG-INFO").write_text("x\n")


def _hash(root: Path, base_id: str = BASE_ID) -> str:
    files = images.context_files(root, ("pyproject.toml", "pkg"))
    return str(images.inputs_hash(root, "Dockerfile", files, base_id))


def test_context_files_leave_out_caches_and_build_metadata(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert images.context_files(tmp_path, ("pyproject.toml", "pkg")) == [
        "pkg/a.py",
        "pkg/b.py",
        "pyproject.toml",
    ]


@pytest.mark.parametrize(
    ("change", "rebuilds"),
    [
        (lambda root: None, False),
        (lambda root: (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"1"), False),
        (lambda root: (root / "pkg" / "a.py").write_text("A = 2\n"), True),
        (lambda root: (root / "Dockerfile").write_text("FROM y\n"), True),
        (lambda root: (root / "pkg" / "c.py").write_text(""), True),
        (lambda root: (root / "pkg" / "b.py").rename(root / "pkg" / "c.py"), True),
        # The same bytes, moved from the end of one file to the start of the next.
        (
            lambda root: (
                (root / "pkg" / "a.py").write_text("A = 1\nB"),
                (root / "pkg" / "b.py").write_text(" = 2\n"),
            ),
            True,
        ),
        (lambda root: (root / "pkg" / "a.py").chmod(0o755), True),
    ],
)
def test_inputs_hash_changes_exactly_when_the_build_could(
    tmp_path: Path, change: object, rebuilds: bool
) -> None:
    _tree(tmp_path)
    before = _hash(tmp_path)
    change(tmp_path)  # type: ignore[operator]
    assert (_hash(tmp_path) != before) is rebuilds


def test_inputs_hash_follows_the_base_image(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _hash(tmp_path) != _hash(tmp_path, "b" * 64)


def test_context_is_what_dockerignore_lets_in() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == set(images.CONTEXT)


def test_base_key_ignores_package_order_but_not_the_recipe() -> None:
    key = images.base_key("bookworm", ["b", "a"], 1)
    assert key == images.base_key("bookworm", ["a", "b"], 1)
    assert key != images.base_key("bookworm", ["a", "b"], 2)
    assert key != images.base_key("trixie", ["a", "b"], 1)


@pytest.mark.parametrize(
    ("listing", "environ", "bundle"),
    [
        ("", {}, "/etc/ssl/certs/ca-certificates.crt"),
        ("global.cert='/a.pem'\n:env:.cert='/b.pem'\n", {"PIP_CERT": "/p.pem"}, "/b.pem"),
        ("", {"PIP_CERT": "/p.pem", "REQUESTS_CA_BUNDLE": "/r.pem"}, "/p.pem"),
        ("", {"REQUESTS_CA_BUNDLE": "/r.pem", "SSL_CERT_FILE": "/s.pem"}, "/r.pem"),
        ("", {"SSL_CERT_FILE": "/s.pem"}, "/s.pem"),
    ],
)
def test_ca_bundle_is_the_one_host_pip_uses(
    listing: str, environ: dict[str, str], bundle: str
) -> None:
    assert images.ca_bundle(images.parse_pip_config(listing), environ) == bundle


@pytest.mark.parametrize(
    ("listing", "environ", "index"),
    [
        ("global.cert='/a.pem'\n", {}, None),
        ("global.index-url='https://config.invalid/simple'\n", {}, "https://config.invalid/simple"),
        (
            "global.index-url='https://config.invalid/'\n",
            {"PIP_INDEX_URL": "https://env.invalid/"},
            "https://env.invalid/",
        ),
    ],
)
def test_index_url_is_passed_only_when_configured(
    listing: str, environ: dict[str, str], index: str | None
) -> None:
    assert images.index_url(images.parse_pip_config(listing), environ) == index


def test_prune_keeps_current_and_newest_and_foreign_folders() -> None:
    ids = [f"{n:064x}" for n in range(10)]
    folders = {ident: float(n) for n, ident in enumerate(ids)}
    folders["dev-base"] = -1.0
    pruned = images.to_prune(folders, {ids[0]}, 6)
    # ids 9..4 are the six newest; 0 is current; 1..3 go; a folder not named by an ID stays.
    assert pruned == sorted(ids[1:4])


def test_build_stage_id_is_the_last_one_printed_before_the_final_stage() -> None:
    log = "\n".join(
        [
            "[1/2] STEP 1/7: FROM localhost/kubemill-base:bookworm AS build",
            "[1/2] STEP 5/7: RUN pip install /src",
            "--> Using cache 6b71876a167b4abb430b9d720f21db979d6eaa77ff6ad5f560c0c71b2391c08e",
            "--> 6b71876a167",
            "[1/2] STEP 7/7: RUN pip install --no-deps /src",
            "Successfully installed kubemill-0.1.0",
            "--> 8d68336ee22",
            "[2/2] STEP 1/9: FROM localhost/kubemill-base:bookworm",
            "--> c544cb87d0c",
        ]
    )
    assert images.build_stage_id(log) == "8d68336ee22"
    assert images.build_stage_id("STEP 1/3: FROM x\n--> 8d68336ee22\n") is None


def test_store_folders_under_a_running_overlay_are_in_use() -> None:
    store = Path("/c/images/store")
    a, b = "a" * 64, "b" * 64
    mountinfo = "\n".join(
        [
            f"812 30 0:55 / /n/pods/x/bundle/rootfs rw - overlay overlay rw,lowerdir={store}/{a}"
            f"/rootfs,upperdir=/n/pods/x/upper,workdir=/n/pods/x/work",
            f"813 30 0:56 / /elsewhere rw - overlay overlay rw,lowerdir=/other/store/{b}/rootfs",
            "25 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        ]
    )
    assert images.in_use(store, mountinfo) == {a}


def test_content_tags_keep_the_current_images_and_the_newest_of_each_name() -> None:
    current = "c" * 64

    def image(ident: str, created: int, *names: str) -> dict[str, object]:
        return {"id": ident, "created": created, "names": list(names)}

    listed = [
        image(
            current[:12],
            50,
            "ghcr.io/x/kubemill-runner:0.1.0",
            "localhost/kubemill-runner:inputs-cur",
        ),
        image("111111111111", 10, "localhost/kubemill-runner:inputs-old"),
        image("222222222222", 40, "localhost/kubemill-runner:inputs-new"),
        image("333333333333", 30, "localhost/kubemill-runner:inputs-mid"),
        image(
            "444444444444", 5, "localhost/kubemill-operator:inputs-op", "localhost/base:bookworm"
        ),
    ]
    stale = images.stale_content_tags(listed, {current}, keep=2)
    assert stale == ["localhost/kubemill-runner:inputs-old"]
    assert images.stale_content_tags(listed, {current}, keep=0) == [
        "localhost/kubemill-operator:inputs-op",
        "localhost/kubemill-runner:inputs-mid",
        "localhost/kubemill-runner:inputs-new",
        "localhost/kubemill-runner:inputs-old",
    ]


def test_example_images_rebuild_on_what_they_are_made_from() -> None:
    """The pandas image is the runner plus pip: a new runner rebuilds it, the base alone does
    not. The python image is the base plus kubemill's wheel: the reverse."""
    pandas, python = images.EXAMPLES
    runner_a, runner_b = "1" * 64, "2" * 64
    assert images.example_inputs(pandas, BASE_ID, runner_a) != images.example_inputs(
        pandas, BASE_ID, runner_b
    )
    assert images.example_inputs(pandas, BASE_ID, runner_a) == images.example_inputs(
        pandas, "b" * 64, runner_a
    )
    assert images.example_inputs(python, BASE_ID, runner_a) == images.example_inputs(
        python, BASE_ID, runner_b
    )
    assert images.example_inputs(python, BASE_ID, runner_a) != images.example_inputs(
        python, "b" * 64, runner_a
    )
    # kubemill's sources are the wheel's inputs, so they are the python image's.
    assert images.inputs_hash(
        ROOT, images.EXAMPLES[python], images.context_files(ROOT), BASE_ID
    ) == images.example_inputs(python, BASE_ID, runner_a)
