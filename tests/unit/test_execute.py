"""The runner tells nbclient's reply for a timed-out cell from a kernel's own error (no kernel)."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

from kubemill.runner.execute import Execution, ExecutionOptions

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
