"""Every way a run can fail, each tied to its exit code.

Raised deep inside the runner, converted to a one-line message and an exit code at the CLI edge.
"""

from __future__ import annotations

from typing import Any

from .contract import ExitCode

__all__ = [
    "BadInputError",
    "CellError",
    "CellTimeout",
    "InputNotFound",
    "InternalError",
    "KernelDied",
    "RunFailure",
    "RunTimeout",
    "RunnerError",
    "StorageError",
    "Terminated",
]


class RunnerError(Exception):
    """Base of all expected failures; `exit_code` says which kind."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """What goes into the summary's and the metadata's `failure` object."""
        return {"reason": self.exit_code.reason, "message": self.message}


class InternalError(RunnerError):
    """A bug in kubemill; the run still saves what it has and reports this."""

    exit_code = ExitCode.INTERNAL


class BadInputError(RunnerError):
    """Arguments, parameters, notebook or kernel are wrong; the message says how to fix them."""

    exit_code = ExitCode.BAD_INPUT


class InputNotFound(BadInputError):
    """The input does not exist (no such file, S3 key or HTTP resource).

    Bad input to the runner like any other, but its own type, so a reader such as
    `kubemill.testing` can tell "not there (yet)" from "there but unreadable" without parsing
    the message.
    """


class StorageError(RunnerError):
    """Reading the input or writing the output failed."""

    exit_code = ExitCode.STORAGE


class RunFailure(RunnerError):
    """A failure during execution; the output notebook is saved before it is reported."""

    def __init__(self, message: str, *, cell: int | None = None, number: int | None = None) -> None:
        super().__init__(message)
        #: Zero-based index of the cell in the *output* notebook, when one cell is to blame.
        self.cell = cell
        #: Its execution count, the `In [N]` a person sees next to it.
        self.number = number
        #: The nbformat id of that cell, filled in once the output notebook is final.
        self.cell_id: str | None = None

    def details(self) -> dict[str, Any]:
        out = super().details()
        if self.cell is not None:
            out["cell"] = self.cell
        if self.cell_id is not None:
            out["cellId"] = self.cell_id
        if self.number is not None:
            out["executionCount"] = self.number
        return out


class CellError(RunFailure):
    """A cell raised an exception."""

    exit_code = ExitCode.CELL_ERROR

    def __init__(self, *, cell: int, number: int, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(f"cell In [{number}] raised {ename}: {evalue}", cell=cell, number=number)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback

    def details(self) -> dict[str, Any]:
        out = super().details()
        out.update(ename=self.ename, evalue=self.evalue, traceback=self.traceback)
        return out


class CellTimeout(RunFailure):
    """A cell ran longer than the per-cell timeout."""

    exit_code = ExitCode.CELL_TIMEOUT

    @classmethod
    def after(cls, seconds: float, cell: int, number: int) -> CellTimeout:
        return cls(
            f"cell In [{number}] did not finish within the cell timeout of {seconds:g}s "
            "(raise --cell-timeout, or 0 for none)",
            cell=cell,
            number=number,
        )


class RunTimeout(RunFailure):
    """The whole run ran longer than its timeout."""

    exit_code = ExitCode.RUN_TIMEOUT

    @classmethod
    def after(cls, seconds: float, cell: int | None, number: int | None) -> RunTimeout:
        where = f" while cell In [{number}] was running" if number is not None else ""
        return cls(
            f"the run did not finish within its timeout of {seconds:g}s{where} "
            "(raise --timeout, or 0 for none)",
            cell=cell,
            number=number,
        )


class KernelDied(RunFailure):
    """The kernel process died or could not be started."""

    exit_code = ExitCode.KERNEL_DIED


class Terminated(RunFailure):
    """The runner was asked to stop by a signal."""

    exit_code = ExitCode.TERMINATED

    @classmethod
    def by(cls, signal_name: str, cell: int | None, number: int | None) -> Terminated:
        where = f" while cell In [{number}] was running" if number is not None else ""
        return cls(f"stopped by {signal_name}{where}", cell=cell, number=number)
