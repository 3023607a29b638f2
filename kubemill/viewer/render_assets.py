"""The renderer's fixed CSS and JavaScript, as strings: no bundler, no package data, no CDN.

The page works without any script (the code toggle is a CSS checkbox, big images load with the
browser's own `loading="lazy"`); `VIEWER_JS`, served by the viewer at `{base}/static/viewer.js`,
adds what needs one: sizing sandboxed output frames to their content, and loading a big output
when its "show output" box is opened.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = [
    "FRAME_CSS",
    "FRAME_SCRIPT",
    "FRAME_SCRIPT_CSP_HASH",
    "PAGE_CSS",
    "VIEWER_JS",
    "ansi_css",
]

#: Runs inside each sandboxed output frame (opaque origin: it can only post a message) and
#: tells the page how tall the frame's content is, so the page can drop the frame's scrollbar:
#: on load, on every resize, and when the page asks (a frame may load before the page's
#: script listens).
#: A `srcdoc` frame inherits the page's Content-Security-Policy, so the page's `script-src`
#: must allow this exact text by its hash, FRAME_SCRIPT_CSP_HASH; without it the frames keep
#: their default height and scroll.
FRAME_SCRIPT = (
    "(function(){function s(){parent.postMessage({kubemillFrameHeight:"
    "document.documentElement.getBoundingClientRect().height},'*')}"
    "addEventListener('load',s);"
    "addEventListener('message',function(e){if(e.source===parent){s()}});"
    "if(window.ResizeObserver){new ResizeObserver(s).observe(document.documentElement)}})();"
)

#: The CSP source expression that allows FRAME_SCRIPT, for the page's `script-src`.
FRAME_SCRIPT_CSP_HASH = (
    "'sha256-" + base64.b64encode(hashlib.sha256(FRAME_SCRIPT.encode()).digest()).decode() + "'"
)

#: Served at `{base}/static/viewer.js` (Content-Type text/javascript). The page's own script:
#: frames post their height (only a number is accepted, and only from one of this page's output
#: frames; the page asks each frame once it listens), and an opened "show output" box loads its
#: frame or image (`data-src` to `src`).
VIEWER_JS = """\
"use strict";
(function () {
  var MAX_FRAME_HEIGHT = 4000;
  window.addEventListener("message", function (event) {
    var data = event.data;
    var height = data && data.kubemillFrameHeight;
    if (typeof height !== "number" || !isFinite(height)) {
      return;
    }
    var frames = document.querySelectorAll("iframe.km-frame");
    for (var i = 0; i < frames.length; i++) {
      if (frames[i].contentWindow === event.source) {
        var px = Math.min(Math.max(Math.ceil(height) + 4, 24), MAX_FRAME_HEIGHT);
        frames[i].style.height = px + "px";
      }
    }
  });
  function ask(frame) {
    if (frame.contentWindow) {
      frame.contentWindow.postMessage({kubemillFrameHeightRequest: true}, "*");
    }
  }
  var frames = document.querySelectorAll("iframe.km-frame");
  for (var i = 0; i < frames.length; i++) {
    frames[i].addEventListener("load", function (event) { ask(event.target); });
    ask(frames[i]);
  }
  document.addEventListener("toggle", function (event) {
    var box = event.target;
    if (!box.open || !box.classList || !box.classList.contains("km-lazy")) {
      return;
    }
    var pending = box.querySelectorAll("[data-src]");
    for (var i = 0; i < pending.length; i++) {
      pending[i].setAttribute("src", pending[i].getAttribute("data-src"));
      pending[i].removeAttribute("data-src");
    }
  }, true);
})();
"""

_ANSI_COLOURS = {
    "black": ("#3e424d", "#282c36"),
    "red": ("#e75c58", "#b22b31"),
    "green": ("#00a250", "#007427"),
    "yellow": ("#ddb62b", "#b27d12"),
    "blue": ("#208ffb", "#0065ca"),
    "magenta": ("#d160c4", "#a03196"),
    "cyan": ("#60c6c8", "#258f8f"),
    "white": ("#c5c1b4", "#a1a6b2"),
}


def ansi_css() -> str:
    """The classes nbconvert's `ansi2html` writes (JupyterLab's colours)."""
    rules = []
    for name, (normal, intense) in _ANSI_COLOURS.items():
        rules.append(f".ansi-{name}-fg{{color:{normal}}}.ansi-{name}-bg{{background:{normal}}}")
        rules.append(
            f".ansi-{name}-intense-fg{{color:{intense}}}"
            f".ansi-{name}-intense-bg{{background:{intense}}}"
        )
    rules.append(".ansi-bold{font-weight:bold}.ansi-underline{text-decoration:underline}")
    return "".join(rules)


#: The page's styles. `.km-toggle:checked ~ .km-cells .km-input` is the code toggle: a checkbox
#: placed before the cells hides every input with no script at all.
PAGE_CSS = """\
.km-nb{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45;color:#1f2328;
max-width:1100px;margin:0 auto}
.km-nb pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;
margin:0;white-space:pre-wrap;word-break:break-word}
.km-header{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:0 0 12px}
.km-header h1{font-size:1.3em;margin:0 0 6px}
.km-header h2{font-size:1em;margin:12px 0 4px}
.km-state{display:inline-block;font-weight:600;padding:1px 8px;border-radius:10px;
background:#eaeef2}
.km-state-succeeded{background:#dafbe1;color:#116329}
.km-state-failed{background:#ffebe9;color:#a40e26}
.km-state-running{background:#fff8c5;color:#7d4e00}
.km-banner{border-left:4px solid #cf222e;background:#ffebe9;padding:8px 12px;margin:8px 0}
.km-banner-early{border-left-color:#1a7f37;background:#dafbe1}
.km-banner-running{border-left-color:#bf8700;background:#fff8c5}
.km-facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
.km-facts dt{color:#59636e}.km-facts dd{margin:0;word-break:break-all}
.km-table{border-collapse:collapse;font-size:13px}
.km-table td,.km-table th{border:1px solid #d0d7de;padding:2px 8px;text-align:left;
vertical-align:top}
.km-table pre{max-height:12em;overflow:auto}
.km-toggle{position:absolute;opacity:0;width:1px;height:1px}
.km-toggle-label{display:inline-block;margin:0 0 8px;cursor:pointer;user-select:none}
.km-toggle:focus-visible + .km-toggle-label{outline:2px solid #0969da}
.km-toggle:checked + .km-toggle-label .km-state{background:#0969da;color:#fff}
.km-toggle:checked ~ .km-cells .km-input{display:none}
.km-cell{margin:0 0 10px;position:relative}
.km-prompt{font-family:ui-monospace,monospace;font-size:12px;color:#59636e}
.km-time{margin-left:8px}.km-time-error,.km-time-timeout{color:#a40e26}
.km-time-skipped,.km-time-interrupted{color:#7d4e00}
.km-input .highlight{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;
padding:6px 8px;overflow:auto}
.km-failed .km-input .highlight{border-color:#cf222e;border-width:2px}
.km-outputs{padding:4px 0 0 8px}
.km-output{margin:2px 0;overflow:auto}
.km-stderr{background:#fff5f5}
.km-stdout,.km-stderr{max-height:36em;overflow:auto}
.km-output img{max-width:100%;height:auto}
.km-frame{width:100%;height:20em;border:0;resize:vertical;overflow:auto;display:block}
.km-broken{border:1px dashed #cf222e;color:#a40e26;padding:4px 8px;font-size:13px}
.km-note{color:#59636e;font-size:12px;font-style:italic}
.km-lazy summary,.km-hidden summary{cursor:pointer;color:#0969da;font-size:13px}
.km-lazy [data-src]{display:none}
.km-clip{color:#59636e;font-style:italic}
.km-markdown img{max-width:100%}
.km-markdown table{border-collapse:collapse}
.km-markdown td,.km-markdown th{border:1px solid #d0d7de;padding:2px 6px}
.km-markdown .anchor-link{visibility:hidden;margin-left:4px;text-decoration:none}
.km-markdown :hover > .anchor-link{visibility:visible}
"""

#: The base styles inside an HTML output's frame (its own document: the page's do not reach it).
FRAME_CSS = (
    "body{margin:0;font-family:system-ui,sans-serif;font-size:13px}"
    "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:2px 6px}"
)
