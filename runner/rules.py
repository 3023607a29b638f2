"""The rules a NotebookRun's values must follow, in one place for both ends of their life.

At apply time the API server checks them (the CRDs' CEL rules and the admission policies in
crds/, written from these constants by `make crds`); at run time the runner and the operator
check them again (a CRD can be older than the code). Kept here, dependency-free, so the runner
image has them and the operator and the generators import them: a rule that exists twice can
drift, and then the API server accepts a run that fails when it starts.
"""

from __future__ import annotations

import keyword
import re

__all__ = [
    "DURATION_MAX_LENGTH",
    "DURATION_PATTERN",
    "KEYWORDS",
    "MIN_DURATION_SECONDS",
    "NOTEBOOK_URL_PATTERN",
    "OUTPUT_PREFIX_PATTERN",
    "PARAMETER_NAME_PATTERN",
    "duration_seconds",
    "parameter_name_problem",
]

#: Parameter names the API server accepts: ASCII Python identifiers. ASCII because a name from
#: spec.parametersFrom also travels in an environment variable's value and through kubectl; the
#: runner itself accepts any Python identifier (`kubemill run -p größe 1`).
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: spec.notebook: an S3 object or an http(s) URL (the runner also reads local paths and stdin,
#: which a runner pod does not have). Here, not with the operator's Kubernetes syntax, because
#: the viewer's re-run form checks a manifest against it too, and the viewer may not import the
#: operator.
NOTEBOOK_URL_PATTERN = r"^(s3://[^/]+/.+|https?://.+)$"
#: spec.output: an S3 prefix whose bucket name S3 allows.
OUTPUT_PREFIX_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"

#: Names that match the pattern but cannot be assigned to (`class = 1` is a SyntaxError in the
#: injected cell). Soft keywords (match, case, type, _) are valid assignment targets and are not
#: here, as in the runner's check. Taken from the Python that writes the CRDs; a unit test
#: compares the committed policies with it.
KEYWORDS: tuple[str, ...] = tuple(keyword.kwlist)

#: A duration as the CRDs accept it: Go's syntax without its ns/us units, e.g. 90s, 1h30m, 1.5h,
#: with at most 7 integer digits per part.
DURATION_PATTERN = r"^([0-9]{1,7}(\.[0-9]+)?(ms|s|m|h))+$"

#: Longest duration text. With DURATION_PATTERN it bounds every duration: two 7-digit hour parts
#: are about 2,300 years, within the Job's activeDeadlineSeconds (int64). It also keeps the API
#: server's check overflow-free: CEL's duration() fails beyond about 292 years, which 20
#: characters cannot reach without a 7-digit part, and such a part is at least 1 s anyway.
DURATION_MAX_LENGTH = 20

#: Shortest timeout or cellTimeout: the Job's activeDeadlineSeconds and nbclient's per-cell
#: timeout both count whole seconds, so a shorter limit would silently become 1 s (and 0 would
#: fail every run at once, or mean "no limit" to the runner's CLI).
MIN_DURATION_SECONDS = 1

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parameter_name_problem(name: str) -> str | None:
    """Why `name` cannot be a parameter of the injected cell, or None when it can."""
    if not name.isidentifier():
        return (
            f"parameter name {name!r} is not a Python identifier "
            "(use letters, digits and underscores, not starting with a digit)"
        )
    if keyword.iskeyword(name):
        return f"parameter name {name!r} is a Python keyword; rename it, e.g. {name}_"
    return None


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `90s`, `10m`, `1h30m` or `1.5h`; ValueError when `text`
    does not match DURATION_PATTERN, is longer than DURATION_MAX_LENGTH characters or is shorter
    than MIN_DURATION_SECONDS."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 10m, 1h30m or 2h")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds < MIN_DURATION_SECONDS:
        raise ValueError(f"{text!r} is shorter than {MIN_DURATION_SECONDS}s")
    return seconds
