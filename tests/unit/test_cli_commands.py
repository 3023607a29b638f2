"""The `kubemill` command tree: every command listed and documented, each loaded only when used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubemill.cli import COMMANDS, build_parser, main

#: Every command line a user types to reach a command, and later ones go here too.
COMMAND_LINES = [
    "run",
    "inspect",
    "results",
    "schedule preview",
    "trigger",
    "backfill",
    "retry",
    "workflow run|retry|graph",
    "view",
    "image check",
]


def _typed_lines(shown: str) -> list[str]:
    """The command lines a listed command stands for: `workflow run|retry|graph` is three."""
    command, _, actions = shown.partition(" ")
    return [f"{command} {action}".strip() for action in actions.split("|")]


#: Every command line, one per action.
TYPED_LINES = [typed for shown in COMMAND_LINES for typed in _typed_lines(shown)]


def _probe(argv: list[str]) -> dict[str, object]:
    """Runs `kubemill ARGV` in a fresh interpreter; its exit code, and the modules it loaded
    beyond what the interpreter had loaded before (site, the editable install's finder)."""
    probe = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "from kubemill.cli import main\n"
        "try:\n"
        f"    code = main({argv!r}, environ={{}})\n"
        "except SystemExit as exit_:\n"
        "    code = exit_.code\n"
        "sys.stdout = sys.__stdout__\n"
        "print(json.dumps({'code': code, 'loaded': sorted(set(sys.modules) - before)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    listing = out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    listed = [line.strip().split("  ")[0] for line in listing]
    assert listed == COMMAND_LINES
    assert [command.shown or command.name for command in COMMANDS] == COMMAND_LINES


@pytest.mark.parametrize("line", TYPED_LINES)
def test_every_command_has_its_own_help(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*line.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kubemill {line} [-h]")
    assert "\noptions:\n" in out


def test_the_whole_tree_declares_a_handler_for_every_command() -> None:
    parser = build_parser()
    minimal = {
        "run": ["run", "in.ipynb", "out.ipynb"],
        "inspect": ["inspect", "in.ipynb"],
        "results": ["results", "out/"],
        "schedule": ["schedule", "preview", "@daily"],
        "trigger": ["trigger", "daily"],
        "backfill": ["backfill", "daily", "--from", "2027-01-01", "--to", "2027-01-02"],
        "retry": ["retry", "etl"],
        "workflow": ["workflow", "run", "wf.yaml"],
        "view": ["view", "s3://results/"],
        "image": ["image", "check", "registry.example/team:1"],
    }
    assert set(minimal) == {command.name for command in COMMANDS}
    for argv in [
        *minimal.values(),
        ["workflow", "retry", "kubemill-runs/"],
        ["workflow", "graph", "wf.yaml", "--format", "mermaid"],
    ]:
        assert callable(parser.parse_args(argv).handler)


#: What no command but the one that needs it may load.
KUBERNETES = {"kubernetes", "kopf", "urllib3"}
NOTEBOOKS = {"nbclient", "nbformat", "jupyter_client", "boto3", "botocore"}


def _top(loaded: object) -> set[str]:
    assert isinstance(loaded, list)
    return {name.split(".")[0] for name in loaded}


def test_help_loads_no_command_and_nothing_but_the_standard_library() -> None:
    probe = _probe(["--help"])
    assert probe["code"] == 0
    assert isinstance(probe["loaded"], list)
    outside = {
        name
        for name in _top(probe["loaded"])
        if name not in sys.stdlib_module_names and name != "kubemill"
    }
    assert outside == set()
    commands = {n for n in probe["loaded"] if n.startswith(("kubemill.cli.", "kubemill.operator"))}
    assert commands == set()


@pytest.mark.parametrize(
    ("argv", "loads", "never"),
    [
        # Declaring run loads neither the operator side nor the runner's execution.
        (["run", "--help"], {"kubemill.cli.run"}, KUBERNETES | NOTEBOOKS | {"kubemill.operator"}),
        # Running it (here a missing notebook, bad input) loads the runner, never the cluster.
        (
            ["run", "/nonexistent/in.ipynb", "-", "--termination-message-path", "/dev/null"],
            {"kubemill.runner.run"},
            KUBERNETES | {"kubemill.operator", "kubemill.cli.cluster"},
        ),
        (
            ["schedule", "preview", "@daily", "--count", "1"],
            {"kubemill.cli.schedule", "kubemill.operator.cron"},
            KUBERNETES | NOTEBOOKS | {"kubemill.cli.run", "kubemill.cli.cluster", "yaml"},
        ),
        # The cluster commands load the client when they run, not to show their options.
        (["trigger", "--help"], {"kubemill.cli.cluster"}, KUBERNETES | NOTEBOOKS),
        (["backfill", "--help"], {"kubemill.cli.cluster"}, KUBERNETES | NOTEBOOKS),
        # A workflow runs on this machine: the operator's pure decisions, never its client;
        # the notebooks run in `kubemill run` processes, so not even nbclient is loaded here.
        (
            ["workflow", "graph", "/nonexistent/wf.yaml"],
            {"kubemill.cli.workflow", "kubemill.operator.workflows"},
            KUBERNETES | NOTEBOOKS | {"kubemill.cli.cluster", "kubemill.cli.run"},
        ),
        # The viewer's web stack loads to serve, not to show its options or refuse them: the
        # refusal is the rule of kubemill.viewer.auth, which needs the standard library only.
        (
            ["view", "--help"],
            {"kubemill.cli.view"},
            KUBERNETES | NOTEBOOKS | {"aiohttp", "kubemill.viewer"},
        ),
        (
            ["view", "/tmp", "--host", "0.0.0.0"],
            {"kubemill.cli.view", "kubemill.viewer.auth"},
            KUBERNETES
            | NOTEBOOKS
            | {"aiohttp", "kubemill.viewer.app", "kubemill.viewer.storage", "boto3"},
        ),
        # The checks' source is printed, or run here, without the cluster's client.
        (["image", "check", "--script"], {"kubemill.cli.image"}, KUBERNETES | NOTEBOOKS),
        (["image", "check", "--help"], {"kubemill.cli.image"}, KUBERNETES | NOTEBOOKS),
    ],
)
def test_a_command_loads_its_own_module_only(
    argv: list[str], loads: set[str], never: set[str]
) -> None:
    probe = _probe(argv)
    loaded = probe["loaded"]
    assert isinstance(loaded, list)
    assert loads <= set(loaded)
    assert never.isdisjoint(set(loaded) | _top(loaded))


def test_trigger_without_the_kubernetes_client_says_so() -> None:
    # As in the runner image, which has no Kubernetes client.
    probe = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "from kubemill.cli import main\n"
        "sys.exit(main(['trigger', 'daily']))\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("kubemill trigger: error: this command needs the Kubernetes")
    assert "pip install 'kubemill[operator]'" in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_view_without_the_viewers_packages_says_so(tmp_path: object) -> None:
    # As in the runner image, which has no aiohttp.
    probe = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from kubemill.cli import main\n"
        f"sys.exit(main(['view', {str(tmp_path)!r}, '--no-browser']))\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("kubemill view: error: this command needs the viewer's packages")
    assert "pip install 'kubemill[viewer]'" in out.stderr
    assert len(out.stderr.splitlines()) == 1
