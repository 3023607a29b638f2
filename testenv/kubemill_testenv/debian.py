"""Debian packages the test environment needs (buildah and runc for images, Chromium for browser
tests), installed by the project's own set-up on a fresh machine.

`python -m kubemill_testenv.debian browser` installs what the browser tests need (`make
browser`); hack/images.py calls `ensure` for the image tools. As root, missing packages are
installed with apt-get; otherwise the command to run is printed and the exit code is 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["BROWSER", "chromium", "ensure"]

#: What the browser tests run, by command, and the Debian package that provides it (Playwright
#: drives it over the DevTools protocol: no chromedriver).
BROWSER = {"chromium": "chromium"}


def _present(tool: str) -> bool:
    return Path(tool).is_file() if tool.startswith("/") else shutil.which(tool) is not None


def ensure(tools: Mapping[str, str], purpose: str) -> None:
    """Install the Debian packages of `tools` (a command, or a file by its absolute path, to
    its package) when any is missing; exit 2 with the command to run when not root."""
    missing = [tool for tool in tools if not _present(tool)]
    if not missing:
        return
    packages = sorted(set(tools.values()))
    install = ["apt-get", "install", "-y", *packages]
    if os.geteuid() != 0:
        print(
            f"{purpose}: {', '.join(missing)} missing; as root run: "
            f"apt-get update && {' '.join(install)}",
            file=sys.stderr,
        )
        sys.exit(2)
    started = time.monotonic()
    for argv in (["apt-get", "update"], install):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-4000:]
            print(f"{purpose}: {' '.join(argv)} failed:\n{tail}", file=sys.stderr)
            sys.exit(1)
    print(f"{purpose}: installed {' '.join(packages)} in {time.monotonic() - started:.0f} s")


def chromium() -> str:
    """Chromium's executable, or an error saying how to install it."""
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("Chromium is not installed: run `make browser` (Debian's chromium)")
    return found


if __name__ == "__main__":
    if sys.argv[1:] != ["browser"]:
        sys.exit("usage: python -m kubemill_testenv.debian browser")
    ensure(BROWSER, "browser")
