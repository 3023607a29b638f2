"""The viewer's page layout: one style sheet, one document shell, one way to write a time, a
size and a duration, shared by the folder pages, the notebook pages and the runs view."""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime

__all__ = [
    "STYLE",
    "document",
    "document_shell",
    "duration",
    "esc",
    "size",
    "time_html",
    "views_nav",
]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1f2328}
header{padding:.6rem 1rem;border-bottom:1px solid #d0d7de;background:#f6f8fa}
header a{color:#0969da;text-decoration:none}
header .views{float:right}
main{padding:1rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:top}
td.size,th.size,td.duration{text-align:right}
.nav a{margin-right:1rem}
.error{color:#cf222e}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.6rem 1rem}
.muted{color:#57606a;font-size:.85em}
.status-Failed{color:#cf222e}
.status-Succeeded{color:#1a7f37}
.status-Running{color:#9a6700}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;align-items:flex-start;
margin-bottom:1rem}
form.filters fieldset{border:1px solid #d0d7de;max-height:9rem;overflow:auto;margin:0}
form.filters label{display:block;white-space:nowrap}
td.values{font-family:ui-monospace,monospace;font-size:.85em;max-width:22rem;
overflow-wrap:anywhere}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def document(title: str, body: str, head: str = "") -> str:
    start, end = document_shell(title, head)
    return f"{start}{body}{end}"


def document_shell(title: str, head: str = "") -> tuple[str, str]:
    """What `document` puts before and after the body: for a body that is sent as the bytes
    it was stored as (a cached notebook page), never decoded into text."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style>{head}</head><body>",
        "</body></html>",
    )


def size(value: int | None) -> str:
    if value is None:
        return ""
    scaled = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if scaled < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{scaled:.1f} {unit}"
        scaled /= 1024
    raise AssertionError("unreachable")


def time_html(moment: datetime | None) -> str:
    if moment is None:
        return ""
    utc = moment.astimezone(UTC)
    return f'<time datetime="{utc.isoformat()}">{utc:%Y-%m-%d %H:%M:%S} UTC</time>'


def duration(value: float) -> str:
    """Seconds as a person reads them: 850 ms, 12.30 s, 4m 05s, 1h 02m 00s ("?" for what is
    not a finite number of seconds)."""
    if not math.isfinite(value):
        return "?"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def views_nav(files: str, runs: str) -> str:
    """The two ways into a store, on top of every listing: its folders and its runs."""
    return (
        f'<nav class="views"><a href="{esc(files)}">files</a> · '
        f'<a href="{esc(runs)}">runs</a></nav>'
    )
