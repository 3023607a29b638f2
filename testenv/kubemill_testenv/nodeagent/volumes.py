"""What a container sees of its pod: the pod's volumes bound in (``subPath``, read-only kinds),
the ``/etc`` files the kubelet writes for a host-network pod, its termination-message file, and
the OCI spec (``ocispec.build_spec``) assembled from those with its user, capabilities and
seccomp profile. The volumes themselves are materialised by ``podconfig.PodSources``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import ocispec, runtime
from ..kube import JSON
from ..podconfig import ContainerConfigError, PodSources
from .images import Image, read_image_file
from .model import ContainerRun

# Volume kinds the kubelet always mounts read-only, whatever the volumeMount says.
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")


def hostname(pod_spec: JSON, pod_name: str) -> str:
    return str(pod_spec.get("hostname") or pod_name)[:63]


def pod_files(pod_dir: Path, host: str) -> Path:
    """``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` for the pod's containers,
    as the kubelet writes them for a host-network pod."""
    files = pod_dir / "etc"
    if not files.exists():
        files.mkdir(parents=True)
        (files / "hosts").write_text(
            "# Kubernetes-managed hosts file (host network).\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.0.1\t{host}\n"
        )
        (files / "hostname").write_text(f"{host}\n")
        resolv = Path("/etc/resolv.conf")
        (files / "resolv.conf").write_text(resolv.read_text() if resolv.exists() else "")
    return files


def volume_mount(pod_spec: JSON, vm: JSON, sources: PodSources) -> ocispec.Mount:
    name = vm["name"]
    volume = next((v for v in pod_spec.get("volumes") or [] if v["name"] == name), None)
    if volume is None:
        raise ContainerConfigError(f"volume {name!r} not found")
    source = sources.volume_path(volume)
    read_only = bool(vm.get("readOnly"))
    if any(k in volume for k in READ_ONLY_KINDS):
        read_only = True
    if vm.get("subPath"):
        source = source / vm["subPath"]
        if not source.exists():
            source.mkdir(parents=True, mode=0o777)
    return ocispec.Mount(str(source), vm["mountPath"], read_only)


def container_spec(
    c: JSON,
    image: Image,
    run: ContainerRun,
    *,
    pod_spec: JSON,
    pod_name: str,
    pod_dir: Path,
    sources: PodSources,
    seccomp_profile: Callable[[], JSON],
) -> JSON:
    """The OCI spec of one run of ``c``; sets the run's user and termination-message file.

    Raises ``ContainerConfigError`` for what the kubelet refuses (a user it cannot verify, a
    missing reference or volume), which keeps the container waiting."""
    passwd = read_image_file(image.rootfs, "etc/passwd")
    group = read_image_file(image.rootfs, "etc/group")
    user = ocispec.resolve_user(pod_spec, c, image.config, passwd, group)
    run.user = f"{user.uid}:{user.gid}"
    caps = ocispec.capability_set(c)
    seccomp = None
    if ocispec.seccomp_type(pod_spec, c) == "RuntimeDefault":
        seccomp = ocispec.seccomp_to_oci(seccomp_profile(), caps)
    env = sources.environment(c)
    host = hostname(pod_spec, pod_name)
    tl = run.dir / "termination-log"
    tl.touch()
    tl.chmod(0o666)
    run.termination_log = tl
    files = pod_files(pod_dir, host)
    mounts = [
        ocispec.Mount(str(files / "hosts"), "/etc/hosts"),
        ocispec.Mount(str(files / "hostname"), "/etc/hostname"),
        ocispec.Mount(str(files / "resolv.conf"), "/etc/resolv.conf"),
        ocispec.Mount(str(tl), c.get("terminationMessagePath", "/dev/termination-log")),
    ]
    mounts += [volume_mount(pod_spec, vm, sources) for vm in c.get("volumeMounts") or []]
    inputs = ocispec.SpecInputs(
        container=c,
        pod_spec=pod_spec,
        image_config=image.config,
        rootfs=str(run.rootfs),
        env=env,
        hostname=host,
        user=user,
        mounts=tuple(mounts),
        cgroups_path=run.cgroup,
        seccomp=seccomp,
        poststart=runtime.poststart_hook(run.dir / "started.fifo"),
    )
    return ocispec.build_spec(inputs)
