"""kubemill's version: one source of truth (pyproject.toml's `project.version`), written to and
checked in every place that names it.

    python -P hack/release.py check [--tag v0.2.0]   every site agrees (and with the tag)
    python -P hack/release.py set 0.2.0              rewrite every site

A release is cut by `set`, a commit and a tag `v<version>`; the release workflow runs `check
--tag` first, so images, manifests and the Python package can never be published under
different versions. A unit test runs `check`, so a commit that changes one site alone fails.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Release versions are X.Y.Z, without leading zeros: the one form that PEP 440 (PyPI), an image
# tag and SemVer (the chart's version, which helm refuses otherwise) all read alike, so every
# site names the same string. A pre-release such as 1.3.0rc1 is PEP 440 but not SemVer (helm:
# `chart.metadata.version "1.3.0rc1" is invalid`), and PyPI normalizes SemVer's 1.3.0-rc.1 to it.
VERSION = r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"


@dataclass(frozen=True)
class Site:
    """A place that names the version: `pattern` has one group, the version."""

    path: str
    pattern: str
    #: How many matches the file must have (a site that vanished is a disagreement too).
    count: int = 1


IMAGE = r"ghcr\.io/kubemill/kubemill-(?:runner|operator):"
SITES = (
    Site("pyproject.toml", rf'(?m)^version = "({VERSION})"$'),
    Site("runner/__init__.py", rf'(?m)^__version__ = "({VERSION})"$'),
    # The runner image the operator starts when a run names none.
    Site("operator/settings.py", rf'runner_image: str = "{IMAGE}({VERSION})"'),
    Site("deploy/base/settings.yaml", rf"KUBEMILL_RUNNER_IMAGE: {IMAGE}({VERSION})"),
    Site("deploy/base/deployment.yaml", rf"image: {IMAGE}({VERSION})"),
    # The Helm chart's own version and appVersion (the default tag of both images).
    Site("deploy/helm/kubemill/Chart.yaml", rf'(?m)^(?:version|appVersion): "?({VERSION})"?$', 2),
    # The example runner images' defaults: the runner to build FROM, the kubemill to pip install.
    Site("examples/images/Dockerfile.pandas", rf"(?m)^ARG RUNNER={IMAGE}({VERSION})$"),
    Site("examples/images/Dockerfile.python", rf"(?m)^ARG KUBEMILL=kubemill==({VERSION})$"),
    # The README's image names and archive names (`…-runner-0.1.0.oci.tar`).
    Site("README.md", rf"(?:kubemill-(?:runner|operator)[:-]|kubemill==)({VERSION})", count=0),
)


@dataclass(frozen=True)
class Found:
    path: str
    line: int
    version: str


def source_version(root: Path = ROOT) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def find(root: Path, sites: tuple[Site, ...] = SITES) -> tuple[list[Found], list[str]]:
    """Every version named at the sites, and the sites whose count of matches is wrong."""
    found: list[Found] = []
    problems: list[str] = []
    for site in sites:
        file = root / site.path
        if not file.is_file():
            problems.append(f"{site.path}: missing (it should name the version)")
            continue
        text = file.read_text()
        matches = list(re.finditer(site.pattern, text))
        if site.count and len(matches) != site.count:
            problems.append(
                f"{site.path}: {len(matches)} versions found where {site.count} were expected "
                f"(pattern {site.pattern!r}); update hack/release.py's SITES with the file"
            )
        for match in matches:
            line = text.count("\n", 0, match.start(1)) + 1
            found.append(Found(site.path, line, match[1]))
    return found, problems


def disagreements(found: list[Found], expected: str) -> list[str]:
    return [
        f"{f.path}:{f.line}: names {f.version}, but the version is {expected}"
        for f in found
        if f.version != expected
    ]


def check(root: Path, tag: str | None = None) -> list[str]:
    """What disagrees with pyproject.toml's version (and with the tag `v<version>`)."""
    expected = source_version(root)
    problems = []
    if tag is not None and tag != f"v{expected}":
        problems.append(
            f"tag {tag} does not match pyproject.toml's version {expected}: run "
            f"`python -P hack/release.py set {tag.removeprefix('v')}`, commit, and tag that"
        )
    found, counted = find(root)
    return problems + counted + disagreements(found, expected)


def set_version(root: Path, version: str) -> list[str]:
    """Rewrite every site to `version`; the files changed."""
    if not re.fullmatch(VERSION, version):
        raise ValueError(f"{version!r} is not a release version like 1.2.3 (X.Y.Z)")
    changed = []
    for site in SITES:
        file = root / site.path
        text = file.read_text()

        def replace(match: re.Match[str]) -> str:
            start, end = match.span(1)
            whole = match.group(0)
            offset = match.start(0)
            return whole[: start - offset] + version + whole[end - offset :]

        new = re.sub(site.pattern, replace, text)
        if new != text:
            file.write_text(new)
            changed.append(site.path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/release.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="every site names pyproject.toml's version")
    checking.add_argument("--tag", help="the git tag being released (v<version>)")
    setting = commands.add_parser("set", help="write a new version to every site")
    setting.add_argument("version")
    args = parser.parse_args(argv)
    if args.command == "set":
        try:
            changed = set_version(ROOT, args.version)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"version {args.version} written to: {', '.join(changed) or 'nothing (unchanged)'}")
        problems = check(ROOT)
    else:
        problems = check(ROOT, args.tag)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"version {source_version(ROOT)}: every site agrees")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
