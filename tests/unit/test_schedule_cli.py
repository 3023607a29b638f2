"""`kubemill schedule preview` prints the slots the operator fires, and bad input fails early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubemill.cli import main


def test_preview_shows_the_slots_with_daylight_saving_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["schedule", "preview", "30 2 * * *", "--time-zone", "Europe/Berlin",
            "--from", "2027-03-27", "--count", "5"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:5] for line in lines] == [
        ["2027-03-27", "02:30:00", "CET", "2027-03-27T01:30:00Z"],
        ["2027-03-28", "03:00:00", "CEST", "2027-03-28T01:00:00Z"],
        ["2027-03-29", "02:30:00", "CEST", "2027-03-29T00:30:00Z"],
        ["2027-03-30", "02:30:00", "CEST", "2027-03-30T00:30:00Z"],
        ["2027-03-31", "02:30:00", "CEST", "2027-03-31T00:30:00Z"],
    ]
    assert "DST starts" in lines[1] and "DST" not in lines[0] + lines[2]


def test_preview_json_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["schedule", "preview", "30 2 * * *", "--tz", "Europe/Berlin",
            "--from", "2027-10-30T12:00", "--count", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["slots"] == [
        {
            "time": "2027-10-31T02:30:00+02:00",
            "utc": "2027-10-31T00:30:00Z",
            "zone": "CEST",
            "note": "DST ends: this time happens twice; runs once, on the first",
        },
        {"time": "2027-11-01T02:30:00+01:00", "utc": "2027-11-01T01:30:00Z", "zone": "CET",
         "note": ""},
    ]  # fmt: skip


def test_preview_reads_a_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    sample = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "notebookschedule.yaml"
    argv = ["schedule", "preview", "-f", str(sample), "--from", "2027-03-28", "--count", "1",
            "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["schedule"], printed["timeZone"]) == ("30 6 * * *", "Europe/Berlin")
    assert printed["slots"][0]["utc"] == "2027-03-28T04:30:00Z"


def test_preview_from_is_inclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "preview", "@hourly", "--from", "2027-01-01T05:00Z", "--count", "1",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["slots"][0]["utc"] == "2027-01-01T05:00:00Z"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", "preview", "61 * * * *"], 'minute field "61" is out of range 0-59'),
        (["schedule", "preview", "@daily", "--tz", "Mars/Base"], 'unknown time zone "Mars/Base"'),
        (["schedule", "preview", "@daily", "--from", "tomorrow"], "'tomorrow' is not a date"),
        (["schedule", "preview", "@daily", "--count", "0"], "must be at least 1"),
        (["schedule", "preview", "TZ=UTC 0 * * * *"], "set spec.timeZone instead"),
        (["schedule"], "the following arguments are required: ACTION"),
        (["schedule", "preview"], "give a schedule"),
        (["schedule", "preview", "-f", "/nonexistent.yaml"], "cannot read /nonexistent.yaml"),
    ],
)
def test_bad_input_exits_2_with_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
