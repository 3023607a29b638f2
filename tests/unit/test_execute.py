"""The runner tells nbclient's reply for a timed-out cell from a kernel's own error (no kernel)."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

from kubemill.runner.execute import Execution, ExecutionOptions, ExitRequest, exit_request

OPTIONS = ExecutionOptions(
    kernel_name="python3",
    cwd=None,
    start_timeout=10,
    cell_timeout=1.5,
    run_timeout=None,
    allow_errors=False,
)


class Quiet:
    def changed(self) -> None: ...
    def cell_started(self, *args: Any) -> None: ...
    def cell_finished(self, *args: Any) -> None: ...
    def stream(self, *args: Any) -> None: ...
    def note(self, message: str) -> None: ...


def made_up_by_nbclient(error_on_timeout: dict[str, Any]) -> dict[str, Any]:
    """What nbclient answers for a timed-out cell under `interrupt_on_timeout`: its documented
    `error_on_timeout` reply (nbclient.client.NotebookClient._async_handle_timeout)."""
    return {"content": {**error_on_timeout, "status": "error"}, "parent_header": {"msg_id": "m"}}


KERNEL_ERROR = {
    "header": {"msg_type": "execute_reply"},
    "parent_header": {"msg_id": "m"},
    "content": {
        "status": "error",
        "execution_count": 1,
        "ename": "CellTimeoutError",
        "evalue": "raised by the notebook itself",
        "traceback": ["Traceback …", "CellTimeoutError: raised by the notebook itself"],
    },
}
KERNEL_OK = {"content": {"status": "ok", "execution_count": 1}}


@pytest.mark.parametrize(
    ("reply", "timed_out"),
    [
        (None, False),
        (KERNEL_OK, False),
        (KERNEL_ERROR, False),
        ("made up", True),
    ],
)
def test_only_nbclients_timeout_reply_counts_as_a_timeout(reply: Any, timed_out: bool) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time")])
    client = Execution(nb, OPTIONS, Quiet())._make_client()
    assert client.on_cell_executed is not None  # the public hook is wired, not a private method
    if reply == "made up":
        reply = made_up_by_nbclient(client.error_on_timeout)
    client.on_cell_executed(cell=nb.cells[0], cell_index=0, execute_reply=reply)
    assert client.timed_out is timed_out


def system_exit(evalue: str) -> dict[str, Any]:
    """IPython's execute_reply content for a SystemExit: its code as text, "" for none."""
    return {"status": "error", "ename": "SystemExit", "evalue": evalue, "traceback": []}


@pytest.mark.parametrize(
    ("content", "request_"),
    [
        (system_exit("0"), ExitRequest(0, "SystemExit 0")),  # sys.exit(0)
        (system_exit(""), ExitRequest(None, "SystemExit")),  # sys.exit(), raise SystemExit
        (system_exit("1"), None),
        (system_exit("3"), None),
        (system_exit("bad data"), None),  # sys.exit("bad data")
        (system_exit("None"), None),  # papermill's rule: "" and "0" only
        ({"status": "error", "ename": "ValueError", "evalue": "0", "traceback": []}, None),
        # exit() and quit() in ipykernel: no exception, a request that the frontend close.
        (
            {"status": "ok", "payload": [{"source": "ask_exit", "keepkernel": False}]},
            ExitRequest(None, "exit()"),
        ),
        ({"status": "ok", "payload": [{"source": "page", "data": {}}]}, None),
        ({"status": "ok", "payload": []}, None),
        ({"status": "ok"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_exit_request_reads_papermills_successful_exits(
    content: dict[str, Any] | None, request_: ExitRequest | None
) -> None:
    assert exit_request(content) == request_


def test_the_client_keeps_the_last_reply_for_exit_request() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; sys.exit()")])
    client = Execution(nb, OPTIONS, Quiet())._make_client()
    assert client.on_cell_executed is not None
    reply = {"content": system_exit(""), "parent_header": {"msg_id": "m"}}
    client.on_cell_executed(cell=nb.cells[0], cell_index=0, execute_reply=reply)
    assert exit_request(client.last_reply) == ExitRequest(None, "SystemExit")
    assert client.timed_out is False
