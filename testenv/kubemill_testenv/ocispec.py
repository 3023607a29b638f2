"""The OCI runtime spec (1.0.2) a container runs under, built from the pod the way containerd does.

Everything here is a pure function over dicts: the node agent gathers the inputs (the pod, the
image's config and ``/etc/passwd``/``/etc/group``, the environment ``PodSources`` built, the host
paths of volumes and per-pod files) and writes the result as a bundle's ``config.json`` for runc.
Unit-tested with tables in ``tests/unit/test_ocispec.py``; no cluster, no runc needed.

Where Kubernetes leaves a choice to the runtime, containerd 1.7's CRI plugin is the model: its
default capability set, its seccomp ``RuntimeDefault`` (the containers-common profile, which is
Docker's), image environment overridden by the pod's, ``HOSTNAME`` set to the pod's hostname.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .podconfig import ContainerConfigError, expand, quantity

JSON = dict[str, Any]

# containerd's default capabilities (pkg/oci/spec.go, defaultUnixCaps): what a container has
# unless its securityContext adds or drops some.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Every capability Linux 6.x knows, for `add: [ALL]` and `privileged`.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# containerd's defaults: kernel interfaces a container must not read or write.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

# Seconds runc lets the poststart hook run; it only writes one line to the agent's FIFO.
HOOK_TIMEOUT = 60
# The CFS period the kubelet uses; a CPU limit becomes a quota per this period.
CPU_PERIOD = 100_000
# The kubelet's floor for cpu.shares (a container without a CPU request gets this).
MIN_SHARES = 2
# The kubelet's floor for a CFS quota (1 ms per period).
MIN_QUOTA = 1000

# Seccomp profile architecture names (Go's GOARCH, as the profile's includes use them) for a
# machine, and the libseccomp architectures the filter must cover: a 64-bit x86 kernel also runs
# 32-bit and x32 binaries, whose syscalls arrive with other numbers.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container."""

    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class SpecInputs:
    """What ``build_spec`` needs, all gathered by the agent beforehand."""

    container: JSON
    pod_spec: JSON
    image_config: JSON
    rootfs: str
    env: dict[str, str]
    hostname: str
    user: User
    mounts: tuple[Mount, ...]
    cgroups_path: str
    seccomp: JSON | None = None
    # The hook runc runs on the host once the process started: (path, argv0, args...).
    poststart: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)


# -- images -------------------------------------------------------------------------------------


def normalize_ref(ref: str) -> str:
    """Docker's reference normalization: ``python:3.11`` is ``docker.io/library/python:3.11``."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}"
    if name.startswith("docker.io/") and name.count("/") == 1:
        name = "docker.io/library/" + name[len("docker.io/") :]
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def find_image(ref: str, images: Mapping[str, str]) -> str | None:
    """The store folder of ``ref``: exact match first, then under docker's normalization."""
    if ref in images:
        return images[ref]
    wanted = normalize_ref(ref)
    for candidate, folder in images.items():
        if normalize_ref(candidate) == wanted:
            return folder
    return None


# -- process ------------------------------------------------------------------------------------


def process_args(container: JSON, image_config: JSON, env: Mapping[str, str]) -> list[str]:
    """Kubernetes' rules: ``command`` replaces the Entrypoint and drops the image's Cmd,
    ``args`` replace Cmd; ``$(VAR)`` in both sees the container's environment."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        argv = [*command, *args]
    else:
        entrypoint = list(image_config.get("Entrypoint") or [])
        argv = [*entrypoint, *(args or list(image_config.get("Cmd") or []))]
    if not argv:
        raise ContainerConfigError("no command specified")
    return [expand(a, env) for a in argv]


def environment(image_config: JSON, hostname: str, pod_env: Mapping[str, str]) -> list[str]:
    """The image's Env, then ``HOSTNAME`` (containerd sets it), then the pod's (later wins)."""
    merged: dict[str, str] = {}
    for entry in image_config.get("Env") or []:
        name, _, value = entry.partition("=")
        merged[name] = value
    merged["HOSTNAME"] = hostname
    merged.update(pod_env)
    return [f"{k}={v}" for k, v in merged.items()]


def working_dir(container: JSON, image_config: JSON) -> str:
    return str(container.get("workingDir") or image_config.get("WorkingDir") or "/")


# -- user ---------------------------------------------------------------------------------------


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _lookup_user(name_or_id: str, passwd: str) -> tuple[int, int, str] | None:
    for row in _table(passwd):
        if len(row) >= 4 and (row[0] == name_or_id or row[2] == name_or_id):
            return int(row[2]), int(row[3]), row[0]
    return None


def _lookup_group(name_or_id: str, group: str) -> int | None:
    for row in _table(group):
        if len(row) >= 3 and (row[0] == name_or_id or row[2] == name_or_id):
            return int(row[2])
    if name_or_id.isdigit():
        return int(name_or_id)
    return None


def _member_gids(user_name: str, group: str) -> list[int]:
    return [
        int(row[2]) for row in _table(group) if len(row) >= 4 and user_name in row[3].split(",")
    ]


def resolve_user(
    pod_spec: JSON, container: JSON, image_config: JSON, passwd: str, group: str
) -> User:
    """uid, gid and groups as containerd derives them: ``runAsUser`` or else the image's
    ``User`` (numeric or a name from the image's own ``/etc/passwd``), the gid from
    ``runAsGroup``, the ``uid:gid`` form or the user's passwd entry (0 when unknown), plus the
    user's groups in the image's ``/etc/group``, ``supplementalGroups`` and ``fsGroup``.
    ``runAsNonRoot`` refuses uid 0 (and a user name it cannot check) like the kubelet."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    run_as_group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    image_user = str(image_config.get("User") or "")
    name = ""
    gid: int | None = None
    if run_as_user is not None:
        uid = int(run_as_user)
        found = _lookup_user(str(uid), passwd)
        if found is not None:
            gid, name = found[1], found[2]
    else:
        user_part, _, group_part = image_user.partition(":")
        if (
            sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            and user_part
            and (not user_part.isdigit())
        ):
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({user_part}), "
                "cannot verify user is non-root"
            )
        if not user_part:
            uid, gid, name = 0, 0, "root"
        else:
            found = _lookup_user(user_part, passwd)
            if found is not None:
                uid, gid, name = found
            elif user_part.isdigit():
                uid = int(user_part)
            else:
                raise ContainerConfigError(
                    f"unable to find user {user_part}: no matching entries in passwd file"
                )
        if group_part:
            resolved = _lookup_group(group_part, group)
            if resolved is None:
                raise ContainerConfigError(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            gid = resolved
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
        if run_as_user is not None:
            raise ContainerConfigError("container's runAsUser breaks non-root policy")
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    if run_as_group is not None:
        gid = int(run_as_group)
    gid = gid if gid is not None else 0
    gids = [gid, *(_member_gids(name, group) if name else [])]
    gids += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        gids.append(int(pod_sc["fsGroup"]))
    return User(uid, gid, tuple(dict.fromkeys(gids)))


# -- security -----------------------------------------------------------------------------------


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


def capability_set(container: JSON) -> list[str]:
    """containerd's default set, with ``drop: [ALL]``/``add: [ALL]`` applied first and the
    individual adds and drops after, so ``add: [ALL], drop: [CHOWN]`` is all but CHOWN."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return list(ALL_CAPABILITIES)
    caps_spec = sc.get("capabilities") or {}
    add = [str(c).upper() for c in caps_spec.get("add") or []]
    drop = [str(c).upper() for c in caps_spec.get("drop") or []]
    caps = list(DEFAULT_CAPABILITIES)
    if "ALL" in drop:
        caps = []
    if "ALL" in add:
        caps = list(ALL_CAPABILITIES)
    for c in add:
        if c != "ALL" and _cap(c) not in caps:
            caps.append(_cap(c))
    dropped = {_cap(c) for c in drop if c != "ALL"}
    return [c for c in caps if c not in dropped]


def capabilities(caps: list[str], uid: int) -> JSON:
    """Bounding is the set; a non-root process starts with none effective or permitted (as
    containerd does since 1.6.18), so it cannot use them without a file capability."""
    granted = list(caps) if uid == 0 else []
    return {
        "bounding": list(caps),
        "effective": granted,
        "permitted": granted,
        "inheritable": [],
        "ambient": [],
    }


def seccomp_type(pod_spec: JSON, container: JSON) -> str:
    """The container's profile type, else the pod's; unset means Unconfined (Kubernetes)."""
    sc = container.get("securityContext") or {}
    pod_sc = pod_spec.get("securityContext") or {}
    if sc.get("privileged"):
        return "Unconfined"
    profile = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    kind = str(profile.get("type") or "Unconfined")
    if kind == "Localhost":
        raise ContainerConfigError("seccomp profile type Localhost is not supported on this node")
    return kind


def _applies(rule: JSON, caps: Iterable[str], goarch: str) -> bool:
    caps = set(caps)
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and goarch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if excludes.get("arches") and goarch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and set(excludes["caps"]) & caps)


def seccomp_to_oci(profile: JSON, caps: Iterable[str], machine: str = "x86_64") -> JSON:
    """A containers-common/Docker seccomp profile as the OCI ``linux.seccomp`` for one machine:
    its architectures from ``archMap``, and only the rules whose ``includes``/``excludes`` (by
    capability and architecture) hold for this container."""
    goarch = _GOARCH.get(machine, machine)
    scmp_arch = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}.get(goarch, "")
    architectures: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            architectures = [scmp_arch, *(entry.get("subArchitectures") or [])]
    if not architectures:
        architectures = list(profile.get("architectures") or [])
    cap_list = list(caps)
    out: JSON = {"defaultAction": profile["defaultAction"], "architectures": architectures}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, cap_list, goarch):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        converted: JSON = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            converted["errnoRet"] = int(rule["errnoRet"])
        if rule.get("args"):
            converted["args"] = [
                {"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo", 0),
                 "op": a["op"]}
                for a in rule["args"]
            ]  # fmt: skip
        syscalls.append(converted)
    out["syscalls"] = syscalls
    return out


# -- mounts, resources, cgroups -----------------------------------------------------------------


def system_mounts() -> list[JSON]:
    """The file systems every container gets (runc's and containerd's defaults)."""
    nse = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nse},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nse, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nse},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nse, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*nse, "relatime", "ro"]},
    ]  # fmt: skip


def bind_mounts(mounts: Iterable[Mount]) -> list[JSON]:
    """Binds, parents before children (containerd sorts by path depth), so a volume mounted
    inside another volume's path is not hidden by it."""
    ordered = sorted(mounts, key=lambda m: len([p for p in m.destination.split("/") if p]))
    return [
        {
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", "ro" if m.read_only else "rw"],
        }
        for m in ordered
    ]


def resources(container: JSON) -> JSON:
    """``limits.memory`` is the memory limit (and memory+swap, so nothing swaps), ``limits.cpu``
    a CFS quota per 100 ms, ``requests.cpu`` the shares, each as the kubelet computes them."""
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    out: JSON = {}
    if "memory" in limits:
        memory = int(quantity(str(limits["memory"])))
        out["memory"] = {"limit": memory, "swap": memory}
    cpu: JSON = {}
    request = requests.get("cpu", limits.get("cpu"))
    milli = math.ceil(quantity(str(request)) * 1000) if request is not None else 0
    cpu["shares"] = max(MIN_SHARES, milli * 1024 // 1000)
    if "cpu" in limits:
        limit_milli = math.ceil(quantity(str(limits["cpu"])) * 1000)
        cpu["quota"] = max(MIN_QUOTA, limit_milli * CPU_PERIOD // 1000)
        cpu["period"] = CPU_PERIOD
    out["cpu"] = cpu
    return out


def pod_cgroup(agent_id: str, pod_uid: str) -> str:
    """The pod's parent cgroup: runc removes each run's leaf, the agent this one."""
    return f"/kubemill/{agent_id}/pod{pod_uid}"


def cgroups_path(agent_id: str, pod_uid: str, container: str, restart: int) -> str:
    """One cgroup per container run, under one per pod, under one per agent: the agent's
    watchdog can find (and kill) everything it ever started by walking its subtree."""
    return f"{pod_cgroup(agent_id, pod_uid)}/{container}-{restart}"


# -- the whole spec -----------------------------------------------------------------------------


def build_spec(i: SpecInputs) -> JSON:
    c = i.container
    sc = c.get("securityContext") or {}
    caps = capability_set(c)
    allow_escalation = sc.get("allowPrivilegeEscalation")
    process: JSON = {
        "terminal": False,
        "user": {
            "uid": i.user.uid,
            "gid": i.user.gid,
            "additionalGids": list(i.user.additional_gids),
        },
        "args": process_args(c, i.image_config, i.env),
        "env": environment(i.image_config, i.hostname, i.env),
        "cwd": working_dir(c, i.image_config),
        "capabilities": capabilities(caps, i.user.uid),
        "noNewPrivileges": allow_escalation is False,
    }
    linux: JSON = {
        "cgroupsPath": i.cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}], **resources(c)},
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
    }
    if not sc.get("privileged"):
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if i.seccomp is not None:
        linux["seccomp"] = i.seccomp
    spec: JSON = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": i.rootfs, "readonly": bool(sc.get("readOnlyRootFilesystem"))},
        "hostname": i.hostname,
        "mounts": system_mounts() + bind_mounts(i.mounts),
        "linux": linux,
    }
    if i.poststart:
        # A timeout, so a hook that cannot deliver (the agent gave up waiting) cannot hang runc.
        hook = {"path": i.poststart[0], "args": list(i.poststart[1:]), "timeout": HOOK_TIMEOUT}
        spec["hooks"] = {"poststart": [hook]}
    if i.annotations:
        spec["annotations"] = dict(i.annotations)
    return spec
