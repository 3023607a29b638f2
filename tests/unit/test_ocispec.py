"""The OCI runtime spec builders of the node agent, as tables: no cluster, no runc."""

from __future__ import annotations

from typing import Any

import pytest

from kubemill_testenv import ocispec
from kubemill_testenv.ocispec import Mount, SpecInputs, User
from kubemill_testenv.podconfig import ContainerConfigError

JSON = dict[str, Any]

PASSWD = "root:x:0:0:root:/root:/bin/bash\nkubemill:x:10001:10001::/home/kubemill:/bin/sh\n"
GROUP = "root:x:0:\nkubemill:x:10001:\nstaff:x:50:kubemill\n"


@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("python:3.11", "docker.io/library/python:3.11"),
        ("python", "docker.io/library/python:latest"),
        ("docker.io/python:3.11", "docker.io/library/python:3.11"),
        ("me/tool", "docker.io/me/tool:latest"),
        ("ghcr.io/kubemill/kubemill-runner:0.1.0", "ghcr.io/kubemill/kubemill-runner:0.1.0"),
        ("localhost/kubemill-base:bookworm", "localhost/kubemill-base:bookworm"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("python@sha256:ab", "docker.io/library/python@sha256:ab"),
    ],
)
def test_normalize_ref(ref: str, normalized: str) -> None:
    assert ocispec.normalize_ref(ref) == normalized


@pytest.mark.parametrize(
    ("ref", "folder"),
    [
        ("ghcr.io/kubemill/kubemill-runner:0.1.0", "/store/runner"),
        ("python:3.11", "/store/python"),
        ("docker.io/library/python:3.11", "/store/python"),
        ("ubuntu", "/store/ubuntu"),
        ("ghcr.io/kubemill/kubemill-runner:0.2.0", None),
    ],
)
def test_find_image(ref: str, folder: str | None) -> None:
    images = {
        "ghcr.io/kubemill/kubemill-runner:0.1.0": "/store/runner",
        "docker.io/library/python:3.11": "/store/python",
        "ubuntu:latest": "/store/ubuntu",
    }
    assert ocispec.find_image(ref, images) == folder


IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["--default"], "Env": ["PATH=/usr/bin", "A=image"]}


@pytest.mark.parametrize(
    ("container", "image", "argv"),
    [
        ({}, IMAGE, ["/entry", "--default"]),
        ({"args": ["x"]}, IMAGE, ["/entry", "x"]),
        ({"command": ["run"]}, IMAGE, ["run"]),
        ({"command": ["run"], "args": ["y"]}, IMAGE, ["run", "y"]),
        ({}, {"Cmd": ["python3"]}, ["python3"]),
        ({"args": ["$(A)", "$$(A)", "$(MISSING)"]}, IMAGE, ["/entry", "pod", "$(A)", "$(MISSING)"]),
    ],
)
def test_process_args(container: JSON, image: JSON, argv: list[str]) -> None:
    assert ocispec.process_args(container, image, {"A": "pod"}) == argv


def test_process_args_without_any_command_is_refused() -> None:
    with pytest.raises(ContainerConfigError, match="no command"):
        ocispec.process_args({}, {}, {})


def test_environment_pod_overrides_image() -> None:
    env = ocispec.environment(IMAGE, "pod-1", {"A": "pod", "B": "b"})
    assert env == ["PATH=/usr/bin", "A=pod", "HOSTNAME=pod-1", "B=b"]


@pytest.mark.parametrize(
    ("container", "image", "cwd"),
    [
        ({}, {}, "/"),
        ({}, {"WorkingDir": "/app"}, "/app"),
        ({"workingDir": "/w"}, {"WorkingDir": "/app"}, "/w"),
    ],
)
def test_working_dir(container: JSON, image: JSON, cwd: str) -> None:
    assert ocispec.working_dir(container, image) == cwd


@pytest.mark.parametrize(
    ("pod_sc", "sc", "image_user", "user"),
    [
        ({}, {}, "", User(0, 0, (0,))),
        ({}, {}, "10001:10001", User(10001, 10001, (10001, 50))),
        ({}, {}, "kubemill", User(10001, 10001, (10001, 50))),
        ({}, {}, "kubemill:staff", User(10001, 50, (50,))),
        ({}, {}, "4242", User(4242, 0, (0,))),
        ({"runAsUser": 1000}, {}, "kubemill", User(1000, 0, (0,))),
        ({"runAsUser": 1000, "runAsGroup": 7}, {}, "", User(1000, 7, (7,))),
        ({"runAsUser": 1000}, {"runAsUser": 10001}, "", User(10001, 10001, (10001, 50))),
        (
            {"runAsUser": 1000, "runAsGroup": 1000, "supplementalGroups": [5], "fsGroup": 9},
            {},
            "",
            User(1000, 1000, (1000, 5, 9)),
        ),
        ({"runAsNonRoot": True}, {}, "10001", User(10001, 10001, (10001, 50))),
    ],
)
def test_resolve_user(pod_sc: JSON, sc: JSON, image_user: str, user: User) -> None:
    pod = {"securityContext": pod_sc}
    container = {"securityContext": sc}
    assert ocispec.resolve_user(pod, container, {"User": image_user}, PASSWD, GROUP) == user


@pytest.mark.parametrize(
    ("pod_sc", "image_user", "message"),
    [
        ({"runAsNonRoot": True}, "", "image will run as root"),
        ({"runAsNonRoot": True}, "kubemill", "non-numeric user"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "breaks non-root policy"),
        ({}, "nobody-here", "unable to find user"),
    ],
)
def test_resolve_user_refusals(pod_sc: JSON, image_user: str, message: str) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        ocispec.resolve_user({"securityContext": pod_sc}, {}, {"User": image_user}, PASSWD, GROUP)


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ({}, set(ocispec.DEFAULT_CAPABILITIES)),
        ({"drop": ["ALL"]}, set()),
        ({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, {"CAP_NET_BIND_SERVICE"}),
        ({"add": ["SYS_ADMIN"]}, {*ocispec.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"}),
        (
            {"drop": ["CHOWN", "KILL"]},
            set(ocispec.DEFAULT_CAPABILITIES) - {"CAP_CHOWN", "CAP_KILL"},
        ),
        ({"add": ["ALL"], "drop": ["CHOWN"]}, set(ocispec.ALL_CAPABILITIES) - {"CAP_CHOWN"}),
    ],
)
def test_capability_set(capabilities: JSON, expected: set[str]) -> None:
    caps = ocispec.capability_set({"securityContext": {"capabilities": capabilities}})
    assert set(caps) == expected
    assert len(caps) == len(set(caps))


@pytest.mark.parametrize(
    ("uid", "granted"),
    [(0, ["CAP_KILL"]), (10001, [])],
)
def test_capabilities_effective_only_for_root(uid: int, granted: list[str]) -> None:
    caps = ocispec.capabilities(["CAP_KILL"], uid)
    assert caps["bounding"] == ["CAP_KILL"]
    assert caps["effective"] == caps["permitted"] == granted
    assert caps["inheritable"] == caps["ambient"] == []


@pytest.mark.parametrize(
    ("pod_sc", "sc", "kind"),
    [
        ({}, {}, "Unconfined"),
        ({"seccompProfile": {"type": "RuntimeDefault"}}, {}, "RuntimeDefault"),
        (
            {"seccompProfile": {"type": "RuntimeDefault"}},
            {"seccompProfile": {"type": "Unconfined"}},
            "Unconfined",
        ),
        ({}, {"seccompProfile": {"type": "RuntimeDefault"}, "privileged": True}, "Unconfined"),
    ],
)
def test_seccomp_type(pod_sc: JSON, sc: JSON, kind: str) -> None:
    assert ocispec.seccomp_type({"securityContext": pod_sc}, {"securityContext": sc}) == kind


def test_seccomp_localhost_is_refused() -> None:
    container = {"securityContext": {"seccompProfile": {"type": "Localhost"}}}
    with pytest.raises(ContainerConfigError, match="not supported"):
        ocispec.seccomp_type({}, container)


PROFILE: JSON = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [
        {
            "architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        },
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}},
        {"names": ["vmsplice"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["breakpoint"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {
            "names": ["chroot"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "excludes": {"caps": ["CAP_SYS_CHROOT"]},
        },
        {"names": ["not_s390"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
    ],
}


@pytest.mark.parametrize(
    ("caps", "present", "absent"),
    [
        (["CAP_SYS_CHROOT"], {("chroot", "SCMP_ACT_ALLOW")}, {("chroot", "SCMP_ACT_ERRNO")}),
        ([], {("chroot", "SCMP_ACT_ERRNO")}, {("chroot", "SCMP_ACT_ALLOW")}),
    ],
)
def test_seccomp_to_oci(
    caps: list[str], present: set[tuple[str, str]], absent: set[tuple[str, str]]
) -> None:
    oci = ocispec.seccomp_to_oci(PROFILE, caps, "x86_64")
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == 38
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    rules = {(name, r["action"]) for r in oci["syscalls"] for name in r["names"]}
    assert present <= rules
    assert not absent & rules
    names = {name for r in oci["syscalls"] for name in r["names"]}
    assert "arch_prctl" in names
    assert "breakpoint" not in names
    assert "not_s390" not in names
    personality = next(r for r in oci["syscalls"] if r["names"] == ["personality"])
    assert personality["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
    vmsplice = next(r for r in oci["syscalls"] if r["names"] == ["vmsplice"])
    assert vmsplice["errnoRet"] == 1
    assert all(set(r) <= {"names", "action", "errnoRet", "args"} for r in oci["syscalls"])


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, {"cpu": {"shares": 2}}),
        (
            {"limits": {"memory": "64Mi"}},
            {"memory": {"limit": 64 * 2**20, "swap": 64 * 2**20}, "cpu": {"shares": 2}},
        ),
        ({"requests": {"cpu": "250m"}}, {"cpu": {"shares": 256}}),
        (
            {"limits": {"cpu": "500m"}},
            {"cpu": {"shares": 512, "quota": 50_000, "period": 100_000}},
        ),
        (
            {"limits": {"cpu": "2", "memory": "1G"}, "requests": {"cpu": "1"}},
            {
                "cpu": {"shares": 1024, "quota": 200_000, "period": 100_000},
                "memory": {"limit": 10**9, "swap": 10**9},
            },
        ),
        ({"limits": {"cpu": "1m"}}, {"cpu": {"shares": 2, "quota": 1000, "period": 100_000}}),
    ],
)
def test_resources(resources: JSON, expected: JSON) -> None:
    assert ocispec.resources({"resources": resources}) == expected


def test_cgroups_path() -> None:
    assert ocispec.cgroups_path("abc", "u-1", "main", 2) == "/kubemill/abc/podu-1/main-2"


def test_bind_mounts_parents_first_with_access() -> None:
    mounts = ocispec.bind_mounts(
        [Mount("/h/b", "/data/sub", True), Mount("/h/a", "/data"), Mount("/h/t", "/dev/tl")]
    )
    assert [m["destination"] for m in mounts] == ["/data", "/data/sub", "/dev/tl"]
    assert mounts[0]["options"] == ["rbind", "rprivate", "rw"]
    assert mounts[1]["options"] == ["rbind", "rprivate", "ro"]
    assert all(m["type"] == "bind" for m in mounts)


def inputs(container: JSON, **overrides: Any) -> SpecInputs:
    base: dict[str, Any] = {
        "container": {"name": "main", **container},
        "pod_spec": {},
        "image_config": IMAGE,
        "rootfs": "/run/bundle/rootfs",
        "env": {"A": "pod"},
        "hostname": "pod-1",
        "user": User(10001, 10001, (10001,)),
        "mounts": (Mount("/host/tl", "/dev/termination-log"),),
        "cgroups_path": "/kubemill/a/podu/main-0",
    }
    base.update(overrides)
    return SpecInputs(**base)


@pytest.mark.parametrize(
    ("sc", "readonly", "no_new_privs"),
    [
        ({}, False, False),
        ({"readOnlyRootFilesystem": True}, True, False),
        ({"allowPrivilegeEscalation": False}, False, True),
        ({"allowPrivilegeEscalation": True}, False, False),
    ],
)
def test_build_spec_root_and_privileges(sc: JSON, readonly: bool, no_new_privs: bool) -> None:
    spec = ocispec.build_spec(inputs({"securityContext": sc}))
    assert spec["root"] == {"path": "/run/bundle/rootfs", "readonly": readonly}
    assert spec["process"]["noNewPrivileges"] is no_new_privs


def test_build_spec_whole() -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    spec = ocispec.build_spec(
        inputs(
            {"args": ["go"], "resources": {"limits": {"memory": "64Mi"}}},
            seccomp=seccomp,
            poststart=("/bin/sh", "sh", "-c", "echo > fifo"),
        )
    )
    assert spec["ociVersion"] == "1.0.2"
    assert spec["hostname"] == "pod-1"
    process = spec["process"]
    assert process["args"] == ["/entry", "go"]
    assert "A=pod" in process["env"]
    assert "HOSTNAME=pod-1" in process["env"]
    assert process["user"] == {"uid": 10001, "gid": 10001, "additionalGids": [10001]}
    assert process["capabilities"]["effective"] == []
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/kubemill/a/podu/main-0"
    assert linux["resources"]["memory"]["limit"] == 64 * 2**20
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert linux["seccomp"] == seccomp
    destinations = [m["destination"] for m in spec["mounts"]]
    for path in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"):
        assert path in destinations
    assert destinations[-1] == "/dev/termination-log"
    assert spec["hooks"] == {
        "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo > fifo"], "timeout": 60}]
    }


def test_build_spec_without_seccomp_or_hooks() -> None:
    spec = ocispec.build_spec(inputs({}))
    assert "seccomp" not in spec["linux"]
    assert "hooks" not in spec
