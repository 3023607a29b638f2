"""Cron expressions for NotebookSchedule, and the instants at which a schedule fires.

The syntax is Kubernetes CronJob's (robfig/cron v3's standard parser), so an expression copied
from a CronJob means the same here; an optional leading seconds field is the main addition. The
difference that matters is daylight saving time. CronJob runs `30 2 * * *` twice on the night
clocks go back (kubernetes/kubernetes#121594). Here a wall-clock time that happens twice fires
once, on its first occurrence, and a time that does not exist because clocks went forward fires
at the moment the gap ends. Schedules that run in every hour are the exception: they fire in both
passes of a repeated hour, as Vixie cron does, because "every hour" should keep meaning every
real hour.

The code lives in three modules, one concern each: cron_syntax (what an expression allows),
cron_instants (when it fires in a time zone, across daylight saving) and cron_patterns (the CRD's
regular expressions). This module is the surface the rest of the operator imports. Where this
differs from CronJob is listed in the README ("Differences from CronJob"), and
tests/integration/test_cron_differential.py holds that list to robfig/cron itself.
"""

from __future__ import annotations

from .cron_instants import Schedule
from .cron_patterns import INVERTED_RANGE, PATTERN
from .cron_syntax import MACROS, Cron, CronError

__all__ = ["INVERTED_RANGE", "MACROS", "PATTERN", "Cron", "CronError", "Schedule"]
