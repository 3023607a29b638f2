"""``python -P -m kubemill_testenv.nodeagent``: the node agent's command line (``cluster.py``
starts it; ``-P`` keeps the working directory, perhaps a checkout whose ``operator/`` would shadow
the standard library's module, off the import path)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import uuid
from pathlib import Path
from typing import Any

from .. import runtime
from ..kubeconfig import api_client
from .agent import NodeAgent
from .images import load_images
from .logs import serve_logs
from .model import AgentConfig

DESCRIPTION = "A node agent that runs pods from their images under runc and reports status."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -P -m kubemill_testenv.nodeagent", description=DESCRIPTION
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", default="kubemill-node")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--serving-cert", type=Path, required=True)
    parser.add_argument("--serving-key", type=Path, required=True)
    parser.add_argument("--client-ca", type=Path, required=True)
    parser.add_argument("--log-port", type=int, required=True)
    parser.add_argument("--apiserver-host", default="127.0.0.1")
    parser.add_argument("--apiserver-port", type=int, required=True)
    parser.add_argument(
        "--images", type=Path, required=True, help="build/images.json written by make images"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AgentConfig(
        node_name=args.node_name,
        workdir=args.workdir.resolve(),
        kubeconfig=args.kubeconfig,
        serving_cert=args.serving_cert,
        serving_key=args.serving_key,
        client_ca=args.client_ca,
        log_port=args.log_port,
        apiserver_host=args.apiserver_host,
        apiserver_port=args.apiserver_port,
        images=load_images(args.images),
        agent_id=uuid.uuid4().hex[:12],
    )
    config.workdir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(config, api_client(args.kubeconfig))
    # Containers an earlier agent left behind (it was killed before its watchdog finished).
    agent.runc.clean_all()
    for point in runtime.mounts_under(config.workdir):
        runtime.unmount(Path(point))
    # Held for the agent's life and never inherited: its EOF tells the watchdog we are gone.
    agent.watchdog = runtime.start_watchdog(
        agent.runc, f"/kubemill/{config.agent_id}", config.workdir
    )

    def stop(signum: int, _frame: Any) -> None:
        agent.shutdown()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve_logs(
        config.log_port, config.serving_cert, config.serving_key, config.client_ca, agent.locate_log
    )
    agent.run()


if __name__ == "__main__":
    main()
