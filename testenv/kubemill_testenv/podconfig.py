"""What a pod's containers are given: their environment and the contents of their volumes.

Both are built the way the kubelet builds them, from the pod and the ConfigMaps, Secrets and
ServiceAccount tokens it references, read from the API server when a container starts.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import kube
from .kube import JSON


class ContainerConfigError(Exception):
    """The container cannot start until something in the cluster changes (kubelet retries)."""


def find_container(spec: JSON, name: str) -> JSON | None:
    """A copy of the container (init or regular) called `name` in a pod spec, if any."""
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        if c["name"] == name:
            return dict(c)
    return None


class PodSources:
    def __init__(
        self,
        api: client.ApiClient,
        pod: JSON,
        *,
        node_name: str,
        volumes_dir: Path,
        service_env: dict[str, str],
    ) -> None:
        self.api = api
        self.pod = pod
        self.node_name = node_name
        self.volumes_dir = volumes_dir
        self.service_env = service_env

    @property
    def spec(self) -> JSON:
        spec: JSON = self.pod["spec"]
        return spec

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    def container(self, name: str) -> JSON | None:
        return find_container(self.spec, name)

    def volume_path(self, volume: JSON) -> Path:
        if "hostPath" in volume:
            host_path: str = volume["hostPath"]["path"]
            return Path(host_path)
        return self.volumes_dir / str(volume["name"])

    def environment(self, c: JSON) -> dict[str, str]:
        # kubelet's order: the kubernetes Service, then envFrom, then env (later wins);
        # $(VAR) in a value sees everything defined before it.
        env: dict[str, str] = dict(self.service_env)
        for source in c.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._config_map(ref["name"], bool(ref.get("optional")))
            else:
                ref = source["secretRef"]
                data = self._secret(ref["name"], bool(ref.get("optional")))
            for key, value in (data or {}).items():
                if _valid_env_name(prefix + key):
                    env[prefix + key] = value
        for var in c.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            resolved = self._value_from(var["valueFrom"], c)
            if resolved is not None:
                env[name] = resolved
        return env

    def _value_from(self, source: JSON, c: JSON) -> str | None:
        if "fieldRef" in source:
            return self.field(source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self.resource_field(source["resourceFieldRef"], c)
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = self._config_map(ref["name"], bool(ref.get("optional")))
            return self._key(data, ref, "configmap")
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = self._secret(ref["name"], bool(ref.get("optional")))
            return self._key(data, ref, "secret")
        raise ContainerConfigError(f"unsupported valueFrom: {sorted(source)}")

    @staticmethod
    def _key(data: dict[str, str] | None, ref: JSON, kind: str) -> str | None:
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
        return data[ref["key"]]

    def field(self, path: str) -> str:
        meta = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1]) or {}
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(items.items()))
        raise ContainerConfigError(f"unsupported fieldRef {path}")

    def resource_field(self, ref: JSON, c: JSON | None) -> str:
        container = c
        if ref.get("containerName"):
            container = self.container(ref["containerName"])
        resource: str = ref["resource"]
        kind, _, what = resource.partition(".")
        value = ((container or {}).get("resources", {}).get(kind) or {}).get(what)
        if value is None:
            value = str(os.cpu_count() or 1) if what == "cpu" else str(memory_bytes())
        divisor = ref.get("divisor", "1")
        amount = quantity(str(value)) / quantity(str(divisor))
        return str(max(1, int(-(-amount // 1)))) if what == "cpu" else str(int(amount))

    def _config_map(self, name: str, optional: bool) -> dict[str, str] | None:
        obj = kube.get_or_none(self.api, f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'configmap "{name}" not found')
        data: dict[str, str] = dict(obj.get("data") or {})
        return data

    def _secret(self, name: str, optional: bool) -> dict[str, str] | None:
        raw = self._secret_bytes(name, optional)
        if raw is None:
            return None
        return {k: v.decode(errors="replace") for k, v in raw.items()}

    def _secret_bytes(self, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = kube.get_or_none(self.api, f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'secret "{name}" not found')
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    # -- volumes --------------------------------------------------------------------------

    def prepare_volumes(self) -> None:
        """Set up every volume; ContainerConfigError worded as the kubelet's FailedMount is
        (`MountVolume.SetUp failed for volume "x" : configmap "y" not found`)."""
        for volume in self.spec.get("volumes") or []:
            try:
                self._prepare_volume(volume)
            except ContainerConfigError as e:
                raise ContainerConfigError(
                    f'MountVolume.SetUp failed for volume "{volume["name"]}" : {e}'
                ) from e

    def _prepare_volume(self, volume: JSON) -> None:
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        path = self.volume_path(volume)
        if "hostPath" in volume:
            kind = volume["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif not path.exists():
                raise ContainerConfigError(f"hostPath {path} does not exist")
            return
        files: dict[str, tuple[bytes, int]] | None
        if "emptyDir" in volume:
            path.mkdir(parents=True, exist_ok=True)
            # The kubelet makes emptyDirs world-writable, so any runAsUser can use them.
            path.chmod(0o777)
            if fs_group is not None:
                os.chown(path, -1, int(fs_group))
                path.chmod(0o2777)
            return
        if "configMap" in volume:
            files = self._projected_config_map(volume["configMap"], volume["configMap"])
        elif "secret" in volume:
            v = volume["secret"]
            files = self._projected_secret({**v, "name": v["secretName"]}, v)
        elif "downwardAPI" in volume:
            files = self._projected_downward(volume["downwardAPI"], volume["downwardAPI"])
        elif "projected" in volume:
            files = self._projected(volume["projected"])
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise ContainerConfigError(f"volume {volume['name']}: unsupported type {kinds}")
        _write_files(path, files or {}, fs_group)

    def _items(
        self, data: dict[str, bytes] | None, source: JSON, volume: JSON, what: str
    ) -> dict[str, tuple[bytes, int]]:
        mode = int(volume.get("defaultMode", 0o644))
        if data is None:
            return {}
        items = source.get("items")
        if not items:
            return {k: (v, mode) for k, v in data.items()}
        out = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise ContainerConfigError(f"{what}: key {item['key']!r} not found")
            out[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
        return out

    def _projected_config_map(self, source: JSON, volume: JSON) -> dict[str, tuple[bytes, int]]:
        data = self._config_map(source["name"], bool(source.get("optional")))
        encoded = {k: v.encode() for k, v in data.items()} if data is not None else None
        return self._items(encoded, source, volume, f"configmap {source['name']}")

    def _projected_secret(self, source: JSON, volume: JSON) -> dict[str, tuple[bytes, int]]:
        data = self._secret_bytes(source["name"], bool(source.get("optional")))
        return self._items(data, source, volume, f"secret {source['name']}")

    def _projected_downward(self, source: JSON, volume: JSON) -> dict[str, tuple[bytes, int]]:
        mode = int(volume.get("defaultMode", 0o644))
        out = {}
        for item in source.get("items") or []:
            if "fieldRef" in item:
                value = self.field(item["fieldRef"]["fieldPath"])
            else:
                value = self.resource_field(item["resourceFieldRef"], None)
            out[item["path"]] = (value.encode(), int(item.get("mode", mode)))
        return out

    def _projected(self, projected: JSON) -> dict[str, tuple[bytes, int]]:
        out: dict[str, tuple[bytes, int]] = {}
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                token = self._token(sat.get("audience"), int(sat.get("expirationSeconds", 3600)))
                mode = int(projected.get("defaultMode", 0o644))
                out[sat["path"]] = (token.encode(), mode)
            elif "configMap" in source:
                out.update(self._projected_config_map(source["configMap"], projected))
            elif "secret" in source:
                out.update(self._projected_secret(source["secret"], projected))
            elif "downwardAPI" in source:
                out.update(self._projected_downward(source["downwardAPI"], projected))
            else:
                raise ContainerConfigError(f"unsupported projected source {sorted(source)}")
        return out

    def _token(self, audience: str | None, expiration: int) -> str:
        sa = self.spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else None,
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            },
        }
        try:
            response = kube.request(
                self.api,
                "POST",
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token",
                body=body,
            )
        except ApiException as e:
            raise ContainerConfigError(f"failed to fetch token: {e.reason}") from e
        token: str = response["status"]["token"]
        return token


def _write_files(root: Path, files: dict[str, tuple[bytes, int]], fs_group: Any) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for rel, (content, mode) in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(content)
        if fs_group is not None:
            os.chown(tmp, -1, int(fs_group))
            mode |= 0o040
        tmp.chmod(mode)
        tmp.replace(target)


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes."""
    out = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i):
            end = value.find(")", i + 2)
            if end == -1:
                out.append(value[i:])
                break
            name = value[i + 2 : end]
            out.append(env.get(name, value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _valid_env_name(name: str) -> bool:
    return bool(re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", name))


_SUFFIXES = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(q: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", q)
    if not m:
        raise ContainerConfigError(f"bad quantity {q!r}")
    return float(m.group(1)) * _SUFFIXES.get(m.group(2), 1.0)


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
