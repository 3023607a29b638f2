"""What an image needs for kubemill to run notebooks in it, checked from inside it.

This module is also a script: `kubemill image check` sends its source to the image's `python3`
(`python3 -c SOURCE`), where kubemill may well be missing, so it imports the standard library
only (a unit test runs it under `python -I -S`). Each check prints one line, `ok:`, `missing:`
or `warning:`, with what to do; the exit code is 1 when anything is missing.

The runtime-image contract (the README's "Your notebook's dependencies"):
- a Python >= 3.11 whose environment has kubemill and the runner's dependencies;
- the `kubemill` command on PATH (the operator starts the runner as `kubemill run …`);
- a Jupyter kernelspec for the run's kernel (`python3` unless spec.kernel says otherwise) whose
  program exists;
- all of it readable and runnable by any uid: runs run as uid 10001 with a read-only root file
  system, a writable emptyDir on /tmp and HOME=/tmp.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile

#: The runner's imports (pyproject.toml's dependencies), by module name.
RUNNER_MODULES = ("nbclient", "nbformat", "jupyter_client", "ipykernel", "boto3", "yaml", "tqdm")
MINIMUM_PYTHON = (3, 11)


def check(kernel: str = "python3", version: str | None = None) -> list[tuple[str, str]]:
    """(status, message) per requirement: status is ok, missing or warning."""
    install = f"pip install 'kubemill=={version}'" if version else "pip install kubemill"
    found: list[tuple[str, str]] = []
    here = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MINIMUM_PYTHON:
        found.append(("ok", f"python {here} at {sys.executable}"))
    else:
        found.append(("missing", f"python >= 3.11: {sys.executable} is {here}; use a newer base"))
    command = shutil.which("kubemill")
    beside = os.path.join(os.path.dirname(sys.executable), "kubemill")
    path = os.environ.get("PATH", "")
    if command:
        found.append(("ok", f"kubemill command at {command}"))
    elif os.access(beside, os.X_OK) and _installed() is not None:
        # Installed, in an environment whose bin folder is not on PATH (a venv or conda env).
        folder = os.path.dirname(beside)
        found.append(("missing", f"the kubemill command on PATH ({path}): add {folder} to PATH"))
    else:
        found.append(("missing", f"the kubemill command on PATH ({path}): {install}"))
    installed = _installed()
    if installed is None:
        found.append(("missing", f"the kubemill package in {sys.prefix}: {install}"))
    else:
        if version and installed != version:
            found.append(
                (
                    "warning",
                    f"kubemill {installed} is installed, not {version}: {install}",
                )
            )
        else:
            found.append(("ok", f"kubemill {installed}"))
    absent = []
    for module in RUNNER_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            absent.append(f"{module} ({type(exc).__name__}: {exc})")
    if absent:
        found.append(("missing", f"the runner's modules: {'; '.join(absent)}: {install}"))
    else:
        found.append(("ok", f"the runner's modules: {', '.join(RUNNER_MODULES)}"))
    found.append(_kernel(kernel))
    found.append(_writable_tmp())
    return found


def _installed() -> str | None:
    try:
        return importlib.metadata.version("kubemill")
    except importlib.metadata.PackageNotFoundError:
        return None


def _kernel(kernel: str) -> tuple[str, str]:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except Exception:
        return ("missing", f"kernel {kernel!r}: jupyter_client cannot be imported (see above)")
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        fix = "python -m ipykernel install --sys-prefix --name python3"
        return ("missing", f"a kernelspec named {kernel!r} (found: {known}): {fix}")
    program = spec.argv[0] if spec.argv else ""
    resolved = program if os.path.isabs(program) else shutil.which(program)
    if not resolved or not os.access(resolved, os.X_OK):
        return ("missing", f"kernel {kernel!r} runs {program!r}, which is not there or runnable")
    return ("ok", f"kernel {kernel!r} ({spec.resource_dir}) runs {resolved}")


def _writable_tmp() -> tuple[str, str]:
    """Runs write to /tmp (HOME, the kernel's runtime files): an emptyDir in the cluster."""
    try:
        with tempfile.NamedTemporaryFile(dir="/tmp"):
            pass
    except OSError as exc:
        return ("missing", f"a writable /tmp for uid {os.getuid()}: {exc}")
    return ("ok", f"/tmp is writable by uid {os.getuid()}")


def report(found: list[tuple[str, str]]) -> str:
    return "".join(f"{status}: {message}\n" for status, message in found)


def main(argv: list[str]) -> int:
    kernel, version = "python3", None
    for arg in argv:
        if arg.startswith("--kernel="):
            kernel = arg.split("=", 1)[1]
        elif arg.startswith("--version="):
            version = arg.split("=", 1)[1] or None
    found = check(kernel, version)
    sys.stdout.write(report(found))
    sys.stdout.flush()
    return 1 if any(status == "missing" for status, _ in found) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
