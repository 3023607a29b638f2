"""The `kubemill` command: the runner's commands, and the schedule commands.

The schedule commands live on the operator side (they use its slot computation and, for trigger
and backfill, the Kubernetes client); they are imported only when asked for, so `kubemill run`
stays as light as the runner itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

SCHEDULE_COMMANDS = ("schedule", "trigger", "backfill")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SCHEDULE_COMMANDS:
        from kubemill.operator.ctl import main as schedule_main

        return schedule_main(args)
    from kubemill.runner.cli import main as runner_main

    return runner_main(args)
