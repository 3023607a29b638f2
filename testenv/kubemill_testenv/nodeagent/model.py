"""What the node agent's modules share: its configuration, one container run, the state of one
pod on this node, and the kubelet's timing constants."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..probes import ContainerProbes

MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
# How long a failed image lookup shows as ErrImagePull before ImagePullBackOff, as the kubelet's
# next pod sync would switch it.
ERR_IMAGE_PULL_SECONDS = 1.0
# The kubelet's volume manager retries a failed mount after 0.5 s, doubling up to 2m2s
# (exponentialbackoff's initialDurationBeforeRetry and maxDurationBeforeRetry).
MOUNT_BACKOFF_START = 0.5
MOUNT_BACKOFF_MAX = 122.0


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs, read once from the command line."""

    node_name: str
    workdir: Path
    kubeconfig: Path
    serving_cert: Path
    serving_key: Path
    client_ca: Path
    log_port: int
    # Where pods find the API server: the kubernetes Service's address is not routable here.
    apiserver_host: str
    apiserver_port: int
    # Image reference -> store folder (``rootfs/`` + ``config.json``), from ``make images``.
    images: dict[str, str]
    # Names this agent's cgroup subtree and nothing else, so its watchdog kills only its own.
    agent_id: str


@dataclass
class ContainerRun:
    """One start of one container (a restart is a new run)."""

    name: str
    restart_count: int
    log_path: Path
    dir: Path
    runc_id: str
    cgroup: str
    user: str = "0:0"
    popen: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    termination_log: Path | None = None
    container_id: str = ""
    image_id: str = ""
    probes: ContainerProbes | None = None
    # Set by a failed liveness/startup probe or deletion: the kill the agent has begun.
    killing: bool = False
    readers: list[threading.Thread] = field(default_factory=list)
    log_written: threading.Condition = field(default_factory=threading.Condition)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.exit_code is None

    @property
    def rootfs(self) -> Path:
        return self.dir / "bundle" / "rootfs"


@dataclass
class PodState:
    """What the pod worker knows about its pod's containers: the input of its status
    (``status.pod_status``), changed only by the worker's thread."""

    # Every run of every container, in start order.
    runs: dict[str, list[ContainerRun]] = field(default_factory=dict)
    # Container name -> (reason, message) while it waits (ContainerCreating, back-offs, ...).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Container name -> monotonic time of its next start (restarts, back-offs).
    next_start: dict[str, float] = field(default_factory=dict)
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    volumes_ready: bool = False
    init_done: bool = False
    # The agent stopped containers (deletion, deadline): a restartPolicy Always pod may end.
    killed: bool = False
