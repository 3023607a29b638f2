"""Executing a notebook with nbclient and a real kernel, and stopping it cleanly.

nbclient runs each cell; this module adds what a batch runner needs around it: a whole-run
deadline, signal handling that interrupts the kernel before giving up, per-cell timings, and a
notification on every change so the output can be checkpointed while a cell is still running.
It drives the kernel itself instead of using `NotebookClient.async_setup_kernel`, whose own
SIGTERM handler would shut the kernel down before the output is saved.

Only nbclient's public surface is used (its traits, the `on_cell_executed` hook, and the
methods a subclass is meant to extend: `process_message`, `output`), and jupyter_client's
kernel manager to stop the kernel, so any nbclient from 0.10 on will do.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jupyter_client.kernelspec import NoSuchKernel, find_kernel_specs
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async
from nbformat import NotebookNode

from .clock import iso
from .errors import (
    BadInputError,
    CellError,
    CellTimeout,
    KernelDied,
    RunFailure,
    RunTimeout,
    Terminated,
)

__all__ = [
    "CellTiming",
    "EarlyExit",
    "Execution",
    "ExecutionOptions",
    "ExitRequest",
    "Observer",
    "exit_request",
]


@dataclass(frozen=True)
class ExecutionOptions:
    kernel_name: str  # the kernelspec to start
    cwd: str | None  # the kernel's working directory
    start_timeout: float  # seconds for the kernel to start and answer
    cell_timeout: float | None  # seconds per cell; None for no limit
    run_timeout: float | None  # seconds left for the whole run when execution starts
    allow_errors: bool  # keep going after a cell raises
    interrupt_grace: float = 5.0  # seconds an interrupted cell gets to stop before we give up
    run_timeout_total: float | None = None  # the run timeout as the user gave it, for messages


class Observer(Protocol):
    """What the execution tells the rest of the runner while it goes."""

    def changed(self) -> None: ...
    def cell_started(self, index: int, number: int, total: int, cell: NotebookNode) -> None: ...
    def cell_finished(self, index: int, number: int, total: int, timing: CellTiming) -> None: ...
    def stream(self, index: int, name: str, text: str) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass
class CellTiming:
    index: int
    cell_id: str
    start_time: float  # epoch seconds
    duration: float = 0.0
    status: str = "running"  # running | ok | error | timeout | interrupted | exited

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.cell_id,
            "startTime": iso(self.start_time),
            "durationSeconds": round(self.duration, 4),
            "status": self.status,
        }


@dataclass(frozen=True)
class ExitRequest:
    """A cell asking to end the notebook successfully, as papermill lets it."""

    code: int | None  # SystemExit's code, 0; None when it had none
    how: str  # what the cell did, for messages: "SystemExit 0", "SystemExit", "exit()"


#: SystemExit values that end a notebook successfully: IPython reports the exception's code as
#: the error's evalue, "" for none; papermill's `raise_for_execution_errors` accepts these two.
_SUCCESS_EXIT_VALUES = {"": None, "0": 0}


def exit_request(reply: Mapping[str, Any] | None) -> ExitRequest | None:
    """Whether a cell's execute_reply content asks to end the notebook successfully.

    IPython catches a SystemExit itself and answers with an error reply (ename "SystemExit",
    evalue its code as text), so `sys.exit()`, `sys.exit(0)` and `raise SystemExit` arrive as
    errors; any other code or message (`sys.exit(1)`, `sys.exit("bad data")`) stays an error.
    The text is all a kernel gives, so `sys.exit("0")` reads as `sys.exit(0)`, as in papermill.
    `exit()` and `quit()` raise nothing: ipykernel answers "ok" with an `ask_exit` payload, its
    request that the frontend close. nbclient ignores it and papermill runs on; a batch run
    has nothing else to close, so it ends the notebook as the user asked.
    """
    if not reply:
        return None
    if reply.get("status") == "error" and reply.get("ename") == "SystemExit":
        evalue = reply.get("evalue")
        if isinstance(evalue, str) and evalue in _SUCCESS_EXIT_VALUES:
            code = _SUCCESS_EXIT_VALUES[evalue]
            return ExitRequest(code, "SystemExit" if code is None else f"SystemExit {code}")
        return None
    if reply.get("status") == "ok":
        payloads = reply.get("payload") or []
        if any(isinstance(p, dict) and p.get("source") == "ask_exit" for p in payloads):
            return ExitRequest(None, "exit()")
    return None


@dataclass(frozen=True)
class EarlyExit:
    """Where and how a cell ended the notebook successfully, and what it left unrun."""

    cell_id: str  # the cell that asked (ids, not indices: banners shift indices)
    number: int  # its execution count
    request: ExitRequest
    skipped: tuple[str, ...]  # the ids of the code cells after it, not run

    @property
    def message(self) -> str:
        return f"the notebook stopped early at cell In [{self.number}] ({self.request.how})"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    """A traceback without terminal colours, for status, logs and JSON."""
    return _ANSI.sub("", text)


class _Client(NotebookClient):
    """nbclient with a callback on every output, for live logs and checkpoints, and a flag that
    says a cell ran out of time."""

    def __init__(self, nb: NotebookNode, observer: Observer, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self._observer = observer
        self.timed_out = False
        #: The content of the last cell's execute_reply, for `exit_request`.
        self.last_reply: dict[str, Any] | None = None
        self.on_cell_executed = self._executed

    def _executed(self, cell: NotebookNode, cell_index: int, execute_reply: Any) -> None:
        """nbclient's `on_cell_executed` hook: notice the reply it made up for a timed-out cell.

        On a cell timeout nbclient interrupts the kernel (`interrupt_on_timeout`) and, instead
        of waiting for the kernel's reply, answers with an error reply made of
        `error_on_timeout`; this hook sees that reply whether or not errors are allowed. A
        kernel's own error reply always differs: it has the exception's name, value and a
        traceback, and no kernel names its exception after a sentence of ours.
        """
        content = (execute_reply or {}).get("content") or {}
        self.last_reply = dict(content)
        expected = self.error_on_timeout or {}
        made_up = all(content.get(key) == value for key, value in expected.items())
        if expected and content.get("status") == "error" and made_up:
            self.timed_out = True

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        try:
            return super().process_message(msg, cell, cell_index)
        finally:
            self._observer.changed()

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        out = super().output(outs, msg, display_id, cell_index)
        if out is not None and out.get("output_type") == "stream":
            self._observer.stream(cell_index, str(out.get("name")), str(out.get("text", "")))
        return out


@dataclass
class Execution:
    """One execution of one notebook; `run()` returns normally only if every cell succeeded."""

    nb: NotebookNode
    options: ExecutionOptions
    observer: Observer
    kernel_info: dict[str, Any] = field(default_factory=dict)
    timings: list[CellTiming] = field(default_factory=list)
    current_cell: int | None = None  # index of the running cell
    current_number: int | None = None  # and its execution count
    cell_errors: int = 0  # errors tolerated under allow_errors
    early_exit: EarlyExit | None = None  # a cell ended the notebook successfully
    _stop: Callable[[int | None, int | None], RunFailure] | None = None
    _force: bool = False
    _client: _Client | None = None
    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        if self._stop is not None:  # a signal came before the kernel was even started
            raise self._stop(None, None)
        timer = None
        if self.options.run_timeout:
            timer = loop.call_later(self.options.run_timeout, self._on_run_timeout)
        self._task = asyncio.create_task(self._run_kernel())
        try:
            await self._task
        except asyncio.CancelledError:
            if self._stop is None:
                raise
        finally:
            if timer is not None:
                timer.cancel()
            self.observer.note(f"kernel stopped after {time.monotonic() - started:.2f}s")
        # A stop request fails the run even when the interrupted cell went on to finish.
        if self._stop is not None:
            raise self._stop(self.current_cell, self.current_number)

    # --- stopping -------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT, delivered by the runner's signal handler through the event loop."""
        name = signal.Signals(signum).name
        self.request_stop(lambda c, n: Terminated.by(name, c, n), f"received {name}")

    def _on_run_timeout(self) -> None:
        seconds = self.options.run_timeout_total or self.options.run_timeout or 0
        self.request_stop(lambda c, n: RunTimeout.after(seconds, c, n), "run timeout reached")

    def request_stop(
        self, failure: Callable[[int | None, int | None], RunFailure], why: str
    ) -> None:
        """Interrupt the running cell, and cancel if it does not stop within the grace time.

        A second request cancels at once: a user pressing Ctrl-C twice means it.
        """
        if self._task is None:
            self._stop = self._stop or failure  # run() has not started: it fails at once
            return
        if self._task.done():
            return
        if self._stop is not None:
            self.observer.note(f"{why} again: stopping now")
            self._force = True
            self._task.cancel()
            return
        self._stop = failure
        self.observer.note(f"{why}: interrupting the kernel")
        asyncio.get_running_loop().create_task(self._interrupt_then_cancel())

    async def _interrupt_then_cancel(self) -> None:
        assert self._task is not None
        client = self._client
        if client is not None and client.km is not None and self.current_cell is not None:
            try:
                await ensure_async(client.km.interrupt_kernel())
            except Exception as exc:
                self.observer.note(f"could not interrupt the kernel: {exc}")
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.options.interrupt_grace)
        except TimeoutError:
            self.observer.note(
                f"the cell did not stop within {self.options.interrupt_grace:g}s of the "
                "interrupt: abandoning it"
            )
            self._task.cancel()
        except BaseException:
            pass  # the task's own outcome is reported by run()

    # --- running --------------------------------------------------------------------------

    def _make_client(self) -> _Client:
        options = self.options
        return _Client(
            self.nb,
            self.observer,
            kernel_name=options.kernel_name,
            # nbclient counts whole seconds; round up so 0.5 s is not "no limit".
            timeout=math.ceil(options.cell_timeout) if options.cell_timeout else None,
            startup_timeout=max(1, math.ceil(options.start_timeout)),
            allow_errors=options.allow_errors,
            # A timed-out cell is interrupted, and nbclient answers for it at once with this
            # error; the interrupt's own traceback, which shows the line the cell was stuck on,
            # still reaches the output while nbclient waits for the cell's last messages.
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": "CellTimeoutError",
                "evalue": f"the cell did not finish within {options.cell_timeout or 0:g}s",
                "traceback": [],
            },
            record_timing=True,
            resources={"metadata": {"path": options.cwd}} if options.cwd else {},
        )

    async def _run_kernel(self) -> None:
        client = self._client = self._make_client()
        client.km = client.create_kernel_manager()
        # Unix sockets in a private directory (mode 0700): no other process can reach the
        # kernel, unlike loopback TCP, and ipykernel stops warning about unencrypted traffic.
        # The path is absolute because the kernel may run in another working directory.
        sockets = tempfile.mkdtemp(prefix="kubemill-kernel-")
        client.km.transport = "ipc"
        client.km.ip = os.path.join(sockets, "kernel")
        failed = False
        try:
            await self._start_kernel(client)
            await self._execute_cells(client)
        except BaseException:
            failed = True
            raise
        finally:
            # A kernel that failed us, or that we were told to stop, gets no graceful shutdown:
            # it may be busy or stuck.
            now = failed or self._stop is not None
            await asyncio.shield(self._shutdown(client, now=now))
            shutil.rmtree(sockets, ignore_errors=True)

    @staticmethod
    async def _shutdown(client: _Client, *, now: bool) -> None:
        """Stop the kernel and release its channels and connection files, each step on its own:
        a kernel that is already gone needs no shutdown, and its files still need removing."""
        km, kc = client.km, client.kc
        client.km = client.kc = None
        if km is None:
            return
        with contextlib.suppress(Exception):
            if await ensure_async(km.is_alive()):
                await ensure_async(km.shutdown_kernel(now=now))
        with contextlib.suppress(Exception):
            await ensure_async(km.cleanup_resources())
        if kc is not None:
            with contextlib.suppress(Exception):
                kc.stop_channels()  # synchronous, in the async client too

    async def _start_kernel(self, client: _Client) -> None:
        name = self.options.kernel_name
        try:
            await client.async_start_new_kernel()
        except (FileNotFoundError, PermissionError) as exc:
            raise KernelDied(
                f"kernel {name!r} could not be started ({exc}); check the program in its "
                "kernelspec (jupyter kernelspec list)"
            ) from None
        except NoSuchKernel:
            known = ", ".join(sorted(find_kernel_specs())) or "none"
            raise BadInputError(
                f"no Jupyter kernel named {name!r} is installed (installed: {known}); "
                "pass -k NAME or install the kernel (python -m ipykernel install --user)"
            ) from None
        try:
            await client.async_start_new_kernel_client()
        except RuntimeError as exc:
            raise KernelDied(
                f"kernel {name!r} did not become ready within {self.options.start_timeout:g}s "
                f"({exc}); raise --start-timeout or check the kernel's installation"
            ) from None
        assert client.kc is not None
        reply = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
        if reply is not None:
            self.kernel_info = dict(reply["content"])
            if "language_info" in self.kernel_info:
                self.nb.metadata["language_info"] = self.kernel_info["language_info"]

    async def _execute_cells(self, client: _Client) -> None:
        code = [
            i for i, c in enumerate(self.nb.cells) if c.cell_type == "code" and c.source.strip()
        ]
        total = len(code)
        for number, index in enumerate(code, start=1):
            if self._stop is not None:
                return
            cell = self.nb.cells[index]
            timing = CellTiming(index, str(cell.get("id", "")), time.time())
            self.timings.append(timing)
            self.current_cell, self.current_number = index, number
            self.observer.cell_started(index, number, total, cell)
            self.observer.changed()
            began = time.monotonic()
            client.last_reply = None
            exited: ExitRequest | None = None
            try:
                await client.async_execute_cell(cell, index, execution_count=number)
                if client.timed_out:  # tolerated as an error under allow_errors, but not here
                    raise CellTimeoutError("cell timeout")
                timing.status = "ok"
                # Under allow_errors a SystemExit comes back as an output, not an exception;
                # it still ends the notebook, and is no error to tolerate.
                exited = exit_request(client.last_reply) if self._stop is None else None
                if exited is not None:
                    timing.status = "exited"
                elif any(o.get("output_type") == "error" for o in cell.outputs):
                    timing.status = "error"
                    self.cell_errors += 1
            except CellExecutionError as exc:
                if client.timed_out:
                    timing.status = "timeout"
                    raise CellTimeout.after(
                        math.ceil(self.options.cell_timeout or 0), index, number
                    ) from None
                exited = exit_request(client.last_reply) if self._stop is None else None
                if exited is not None:
                    timing.status = "exited"  # and the loop ends below, after the finally
                elif self._stop is None:
                    timing.status = "error"
                    raise CellError(
                        cell=index,
                        number=number,
                        ename=exc.ename,
                        evalue=exc.evalue,
                        traceback=_plain(exc.traceback),
                    ) from None
                else:
                    timing.status = "interrupted"
                    return  # run() turns the stop request into its failure
            except CellTimeoutError:
                timing.status = "timeout"
                raise CellTimeout.after(
                    math.ceil(self.options.cell_timeout or 0), index, number
                ) from None
            except DeadKernelError:
                timing.status = "interrupted" if self._stop is not None else "error"
                if self._stop is not None:
                    return
                raise KernelDied(
                    f"the kernel died while cell In [{number}] was running (os._exit, a crash "
                    "in native code, or the out-of-memory killer; check the memory limit)",
                    cell=index,
                    number=number,
                ) from None
            except asyncio.CancelledError:
                timing.status = "interrupted"
                raise
            finally:
                timing.duration = time.monotonic() - began
                cell.metadata["kubemill"] = {
                    "startTime": iso(timing.start_time),
                    "durationSeconds": round(timing.duration, 4),
                    "status": timing.status,
                }
                self.observer.cell_finished(index, number, total, timing)
                self.observer.changed()
            if exited is not None:
                self._exit_early(exited, cell, number, [self.nb.cells[i] for i in code[number:]])
                break
        self.current_cell = self.current_number = None

    def _exit_early(
        self, request: ExitRequest, cell: NotebookNode, number: int, rest: list[NotebookNode]
    ) -> None:
        """Record the early exit, and mark the code cells it leaves unrun as skipped, so an
        empty cell in the output says why it is empty."""
        for later in rest:
            later.metadata["kubemill"] = {"status": "skipped"}
        self.early_exit = EarlyExit(
            str(cell.get("id", "")), number, request, tuple(str(c.get("id", "")) for c in rest)
        )
        self.observer.note(f"{self.early_exit.message}: {len(rest)} code cell(s) after it not run")
