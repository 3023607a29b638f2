"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``testenv/build-control-plane.sh`` (the Kubernetes Go modules of one pinned
version, cached under ``~/.cache/kubemill/k8s``). Every run gets its own CA, certificates,
ServiceAccount signing keys, ports and etcd data directory, so runs never share state.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import pki, procs
from .kubeconfig import write_kubeconfig

# The folder this package is installed (editable) from: testenv/, which also holds the Go
# sources of the control plane (k8s/) and their build script.
TESTENV_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = TESTENV_ROOT / "build-control-plane.sh"
# The kubemill checkout around it, whose `make images` writes build/images.json, and which a
# running sandbox records as the one it was started from.
REPO_ROOT = TESTENV_ROOT.parent

# What a kubeadm cluster (`--controllers=*`) runs that a kubemill promise, or the harness
# itself, depends on. Without a controller its objects still exist but nothing acts on them,
# so a test of that behaviour would pass or fail for the wrong reason.
CONTROLLERS = (
    # Runs are Jobs; schedules are compared with CronJobs (`make bench-schedule`).
    "job-controller",
    "cronjob-controller",
    # Deleting a run deletes its Job and pods through owner references.
    "garbage-collector-controller",
    # A run's ttlSecondsAfterFinished is its Job's.
    "ttl-after-finished-controller",
    # Deleting a namespace deletes its runs, schedules, Jobs and pods (and tests' namespaces).
    "namespace-controller",
    # Namespaces and ServiceAccounts usable as on a cluster: the `default` ServiceAccount,
    # tokens, and the kube-root-ca.crt ConfigMap that every projected token volume reads.
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    # Deletes pods left on a Node that no longer exists, and finished pods over its threshold.
    "pod-garbage-collector-controller",
    # The operator's Deployment in the sandbox.
    "deployment-controller",
    "replicaset-controller",
    # kubemill-edit and kubemill-view reach the built-in admin, edit and view roles only
    # through aggregation (deploy/base/user-roles.yaml; tests/e2e/test_user_roles.py).
    "clusterrole-aggregation-controller",
    # A ResourceQuota is enforced at admission against the usage this controller counts; with
    # no controller, a namespace with any quota refuses every pod ("status unknown for quota")
    # instead of refusing only what exceeds it, so a Job's FailedCreate would name the wrong cause.
    "resourcequota-controller",
    # A PodDisruptionBudget's allowed disruptions come from this controller; with no
    # controller, every eviction of a pod a budget covers is refused for ever, which would
    # make a test of a budget protecting a run pass whatever the budget says.
    "disruption-controller",
    # Type-checks ValidatingAdmissionPolicies against the CRD schemas and reports mistakes in
    # their status, as on a cluster; crds/ ships policies that enforce apply-time validation.
    "validatingadmissionpolicy-status-controller",
)
# Left out, with the reason: kubemill makes no promise that depends on them, or the harness
# has nothing for them to act on.
# - node-lifecycle-controller, taint-eviction-controller: node failure; the one node is the
#   local agent, and a pod lost with it is a pod failure to kubemill like any other.
# - node-ipam-controller, ttl-controller: pod CIDRs and the kubelet's cache TTL annotation;
#   the agent gives pods the host's loopback address and caches nothing.
# - endpoints-controller, endpointslice-controller, endpointslice-mirroring-controller,
#   service-cidr-controller: kubemill has no Service, pods have loopback addresses (which
#   Endpoints refuse) and there is no kube-proxy to route a Service anyway.
# - service-lb-controller, node-route-controller, cloud-node-lifecycle-controller: cloud.
# - persistentvolume-binder-controller, persistentvolume-attach-detach-controller,
#   persistentvolume-expander-controller, persistentvolume-protection-controller,
#   persistentvolumeclaim-protection-controller, volumeattributesclass-protection-controller,
#   ephemeral-volume-controller: runs keep nothing on volumes (outputs go to S3) and the run
#   spec has no volume field; there is no storage provisioner here.
# - daemonset-controller, statefulset-controller, replicationcontroller-controller,
#   horizontal-pod-autoscaler-controller: kubemill creates none of these (no metrics server).
# - certificatesigningrequest-*-controller, podcertificaterequest-cleaner-controller,
#   kube-apiserver-serving-clustertrustbundle-publisher-controller, bootstrap-signer-controller,
#   token-cleaner-controller, legacy-serviceaccount-token-cleaner-controller: node and
#   certificate bootstrap; the harness issues every certificate itself.
# - resourceclaim-controller, resourcepoolstatusrequest-controller,
#   device-taint-eviction-controller, podgroup-protection-controller,
#   storage-version-migrator-controller, storageversion-garbage-collector-controller,
#   selinux-warning-controller: behind feature gates or off by default.

SERVICE_CIDR = "10.0.0.0/24"
# The first address of SERVICE_CIDR: the in-cluster name of the apiserver, put in its cert.
KUBERNETES_SERVICE_IP = "10.0.0.1"


class BinariesMissing(RuntimeError):
    pass


def binary_dir(build: bool = False) -> Path:
    """Where the cached binaries are; ``build`` runs the (idempotent) build script first."""
    if build:
        subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        [str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    if not (bin_dir / "kube-apiserver").exists():
        raise BinariesMissing(
            f"no control plane binaries in {bin_dir}; run `make control-plane` "
            f"(or {BUILD_SCRIPT}) once: a cold build takes tens of minutes"
        )
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Credentials:
    ca: pki.KeyPair
    apiserver: pki.KeyPair
    admin: pki.KeyPair
    controller_manager: pki.KeyPair
    kubelet_client: pki.KeyPair
    kubelet_serving: pki.KeyPair
    service_account: pki.KeyPair


@dataclass
class ControlPlane:
    """One control plane; ``start()`` returns once the API answers and controllers run."""

    workdir: Path
    bin_dir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    controller_manager_port: int = field(default_factory=free_port)
    processes: list[procs.Managed] = field(default_factory=list)
    creds: Credentials | None = None
    startup_seconds: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def start(self, timeout: float = 60.0) -> None:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.creds = self._make_credentials()
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_file=self.creds.ca.cert,
            user="kubemill-admin",
            cert_file=self.creds.admin.cert,
            key_file=self.creds.admin.key,
        )
        write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            server=self.server,
            ca_file=self.creds.ca.cert,
            user="system:kube-controller-manager",
            cert_file=self.creds.controller_manager.cert,
            key_file=self.creds.controller_manager.key,
        )
        try:
            etcd = self._start_etcd()
            procs.wait_until(self._etcd_healthy, timeout, "etcd /health", check=etcd)
            apiserver = self._start_apiserver()
            procs.wait_until(
                self._apiserver_ready, timeout, "kube-apiserver /readyz", check=apiserver
            )
            kcm = self._start_controller_manager()
            procs.wait_until(
                self._kcm_healthy, timeout, "kube-controller-manager /healthz", check=kcm
            )
            # The serviceaccount controller's first act; until then no pod can be admitted.
            procs.wait_until(
                lambda: self._get_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                timeout,
                "the default ServiceAccount",
                check=kcm,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            capture_output=True,
            text=True,
        )

    def _make_credentials(self) -> Credentials:
        d = self.pki_dir
        ca = pki.make_ca(d)
        return Credentials(
            ca=ca,
            apiserver=pki.issue(
                ca,
                d,
                "apiserver",
                common_name="kube-apiserver",
                server=True,
                hosts=(
                    "127.0.0.1",
                    "localhost",
                    KUBERNETES_SERVICE_IP,
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
            ),
            admin=pki.issue(
                ca,
                d,
                "admin",
                common_name="kubemill-admin",
                organizations=("system:masters",),
                client=True,
            ),
            controller_manager=pki.issue(
                ca,
                d,
                "controller-manager",
                common_name="system:kube-controller-manager",
                client=True,
            ),
            kubelet_client=pki.issue(
                ca,
                d,
                "apiserver-kubelet-client",
                common_name="kube-apiserver-kubelet-client",
                organizations=("kubeadm:cluster-admins",),
                client=True,
            ),
            kubelet_serving=pki.issue(
                ca,
                d,
                "kubelet",
                common_name="kubemill-node",
                server=True,
                hosts=("127.0.0.1", "localhost"),
            ),
            service_account=pki.make_service_account_keys(d),
        )

    def _spawn(self, name: str, argv: list[str]) -> procs.Managed:
        managed = procs.spawn(
            name, argv, log_path=self.log_dir / f"{name}.log", env=_component_env()
        )
        self.processes.append(managed)
        return managed

    def _start_etcd(self) -> procs.Managed:
        url = f"http://127.0.0.1:{self.etcd_port}"
        return self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                # Test data is thrown away with the run; fsync would only cost seconds.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> procs.Managed:
        assert self.creds is not None
        c = self.creds
        return self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={c.apiserver.cert}",
                f"--tls-private-key-file={c.apiserver.key}",
                f"--client-ca-file={c.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                # Not overriding --enable-admission-plugins keeps the default set, which
                # includes ServiceAccount and PodSecurity, as on a kubeadm cluster.
                "--allow-privileged=true",
                f"--service-account-issuer=https://127.0.0.1:{self.apiserver_port}",
                f"--service-account-key-file={c.service_account.cert}",
                f"--service-account-signing-key-file={c.service_account.key}",
                f"--api-audiences=https://127.0.0.1:{self.apiserver_port}",
                f"--kubelet-client-certificate={c.kubelet_client.cert}",
                f"--kubelet-client-key={c.kubelet_client.key}",
                f"--kubelet-certificate-authority={c.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                # Endpoints may not hold loopback addresses, so the reconciler could only fail.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self) -> procs.Managed:
        assert self.creds is not None
        c = self.creds
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        return self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={c.service_account.key}",
                f"--root-ca-file={c.ca.cert}",
                # Each controller acts as its own ServiceAccount, as in a kubeadm cluster, so
                # RBAC is exercised for the controllers too.
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _etcd_healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=2)
            conn.request("GET", "/health")
            body = conn.getresponse().read()
            conn.close()
        except OSError:
            return False
        try:
            return bool(json.loads(body).get("health") == "true")
        except ValueError:
            return False

    def _admin_context(self) -> ssl.SSLContext:
        assert self.creds is not None
        ctx = ssl.create_default_context(cafile=str(self.creds.ca.cert))
        ctx.load_cert_chain(str(self.creds.admin.cert), str(self.creds.admin.key))
        return ctx

    def _get_ok(self, path: str) -> bool:
        try:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.apiserver_port, context=self._admin_context(), timeout=2
            )
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return status == 200

    def _apiserver_ready(self) -> bool:
        return self._get_ok("/readyz")

    def _kcm_healthy(self) -> bool:
        # The controller-manager serves a self-signed certificate of its own making; only
        # liveness is asked here, no credential is sent.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.controller_manager_port, context=ctx, timeout=2
            )
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return status == 200


def _component_env() -> dict[str, str]:
    # Components must not pick up a developer's proxy or kubeconfig settings.
    keep = ("PATH", "HOME", "LANG", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env
