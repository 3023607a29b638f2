"""What a person (or a log pipeline) sees while a notebook runs.

On a terminal: a tqdm bar over the code cells, with the cells' own output printed above it.
Elsewhere (a pod's log): one line when each cell starts and ends, and the cells' stdout/stderr as
they write it, so `kubectl logs -f` shows where a run is. `json` gives one object per line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from nbformat import NotebookNode

from .clock import iso
from .execute import CellTiming
from .redact import Redactor

__all__ = ["Reporter"]


def _first_line(source: str, width: int = 60) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[: width - 1] + "…"
    return ""


class Reporter:
    """Logs (stderr), cell output (stdout, or stderr when the notebook goes to stdout), bar."""

    def __init__(
        self,
        *,
        log_format: str = "text",
        progress_bar: bool | None = None,
        log_output: bool = True,
        quiet: bool = False,
        log: IO[str] | None = None,
        cell_output: IO[str] | None = None,
        redactor: Redactor | None = None,
        debug: bool = False,
    ) -> None:
        self.debug = debug
        self._json = log_format == "json"
        self._log = log or sys.stderr
        self._out = cell_output or sys.stdout
        self._log_output = log_output
        self._quiet = quiet
        self.redactor = redactor or Redactor()
        if progress_bar is None:
            progress_bar = not self._json and self._log.isatty()
        self._bar_wanted = progress_bar and not self._json
        self._bar: Any = None
        #: Called on every change to the notebook (the run points it at its checkpointer).
        self.on_change: Callable[[], None] | None = None
        # With secrets, cell output reaches the log a whole line at a time, so a secret
        # written in several pieces on one line is still masked.
        self._pending: dict[tuple[int, str], str] = {}

    # --- plain log lines ------------------------------------------------------------------

    def _emit(self, level: str, message: str, **fields: Any) -> None:
        if self._quiet and level == "info":
            return
        message = self.redactor.text(message)
        if self._json:
            record = {"time": iso(), "level": level, "message": message, **fields}
            line = json.dumps(self.redactor.tree(record), ensure_ascii=False, default=str)
        else:
            line = f"{iso()} kubemill {level.upper():7} {message}"
        if self._bar is not None:
            self._bar.write(line, file=self._log)
        else:
            self._log.write(line + "\n")
            self._log.flush()

    def info(self, message: str, **fields: Any) -> None:
        self._emit("info", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("error", message, **fields)

    def note(self, message: str) -> None:
        self.info(message)

    def _screen(self) -> tuple[int, int]:
        # A terminal that reports no size (a fresh pty, `script`) makes tqdm hide its bar.
        try:
            size = os.get_terminal_size(self._log.fileno())
            return size.columns or 80, size.lines or 24
        except (OSError, ValueError):
            return 80, 24

    # --- the execution's observer methods -------------------------------------------------

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def cell_started(self, index: int, number: int, total: int, cell: NotebookNode) -> None:
        if self._bar_wanted and self._bar is None:
            from tqdm.auto import tqdm

            columns, rows = self._screen()
            self._bar = tqdm(
                total=total,
                unit="cell",
                desc="Executing",
                file=self._log,
                ncols=columns,
                nrows=rows,
            )
        if self._bar is not None:
            self._bar.set_postfix_str(f"cell {index}", refresh=True)
            return
        self._emit(
            "info",
            f"cell {number}/{total} started: {_first_line(cell.source)}",
            event="cell_started",
            cell=index,
            number=number,
            total=total,
        )

    def cell_finished(self, index: int, number: int, total: int, timing: CellTiming) -> None:
        self._flush_pending(index)
        if self._bar is not None:
            self._bar.update(1)
            return
        self._emit(
            "info" if timing.status in ("ok", "exited") else "warning",
            f"cell {number}/{total} {timing.status} in {timing.duration:.2f}s",
            event="cell_finished",
            cell=index,
            number=number,
            total=total,
            status=timing.status,
            durationSeconds=round(timing.duration, 4),
        )

    def stream(self, index: int, name: str, text: str) -> None:
        if not self._log_output or self._quiet:
            return
        if self.redactor:
            text = self._pending.pop((index, name), "") + text
            complete, newline, rest = text.rpartition("\n")
            if rest:
                self._pending[(index, name)] = rest
            text = complete + newline
            if not text:
                return
        self._write_stream(index, name, self.redactor.text(text))

    def _flush_pending(self, index: int) -> None:
        for key in [k for k in self._pending if k[0] == index]:
            self._write_stream(index, key[1], self.redactor.text(self._pending.pop(key)))

    def _write_stream(self, index: int, name: str, text: str) -> None:
        if self._json:
            self._emit("info", text, event="output", cell=index, stream=name)
            return
        if self._bar is not None:
            with self._bar.external_write_mode(file=self._log):
                self._out.write(text)
                self._out.flush()
            return
        self._out.write(text)
        self._out.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
