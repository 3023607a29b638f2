"""Kubeconfig files: the admin's, and minted ones for any ServiceAccount.

A minted kubeconfig carries a short-lived bound token from the TokenRequest API, exactly what a
pod of that ServiceAccount gets, so the operator can be run outside the cluster with precisely
the RBAC it would have inside.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str | None = None,
    cluster: str = "kubemill",
    namespace: str | None = None,
) -> Path:
    credentials: dict[str, Any] = {}
    if cert_file is not None and key_file is not None:
        credentials["client-certificate"] = str(cert_file)
        credentials["client-key"] = str(key_file)
    if token is not None:
        credentials["token"] = token
    context: dict[str, Any] = {"cluster": cluster, "user": user}
    if namespace is not None:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    # Embedded, so the file still works when copied elsewhere.
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def api_client(kubeconfig: Path) -> client.ApiClient:
    """A client bound to one kubeconfig, never to the process-wide default configuration."""
    return config.new_client_from_config(config_file=str(kubeconfig))


def mint_service_account_kubeconfig(
    admin: client.ApiClient,
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    path: Path,
    expiration_seconds: int = 3600,
) -> Path:
    """Write a kubeconfig that authenticates as ``system:serviceaccount:<ns>:<sa>``."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    response = client.CoreV1Api(admin).create_namespaced_service_account_token(
        service_account, namespace, request
    )
    token: str = response.status.token
    source = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in source["contexts"] if c["name"] == source["current-context"])
    cluster = next(c for c in source["clusters"] if c["name"] == context["context"]["cluster"])
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": f"{namespace}-{service_account}", "user": {"token": token}}],
        "contexts": [
            {
                "name": cluster["name"],
                "context": {
                    "cluster": cluster["name"],
                    "user": f"{namespace}-{service_account}",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": cluster["name"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path
