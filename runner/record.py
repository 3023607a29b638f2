"""`kubemill.record(name, value)`: what a notebook calls to record a result.

Imported inside the kernel, so it imports nothing beyond the standard library until it is called
(IPython is always there in an IPython kernel).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["record"]

from .contract import RECORD_MIMETYPE as _MIMETYPE


def record(name: str, value: Any) -> None:
    """Record `value` under `name`; it lands in the output notebook, results.json and the status.

    `value` must be JSON: None, booleans, finite numbers, strings, lists and string-keyed dicts.
    Recording the same name twice keeps the last value.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("kubemill.record: name must be a non-empty string")
    try:
        # A round trip both validates and detaches the value from later mutation.
        value = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"kubemill.record({name!r}, ...): the value must be JSON-serializable "
            f"(no NaN/inf, objects or bytes): {exc}"
        ) from None
    from IPython.display import display

    # text/plain too, so the output notebook (and its HTML) shows a reader what was recorded.
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    display(
        {_MIMETYPE: {"name": name, "value": value}, "text/plain": f"recorded {name} = {shown}"},
        raw=True,
        metadata={},
    )
