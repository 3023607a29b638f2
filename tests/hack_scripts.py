"""The generators in hack/ are scripts, not a package: tests load them by file path, so nothing
puts hack/ (or the repository, whose operator/ shadows the standard library) on the import path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HACK = Path(__file__).resolve().parents[1] / "hack"


def load(name: str) -> ModuleType:
    """``hack/<name>.py`` as a module, loaded once per test session."""
    key = f"hack_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HACK / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses look their module up there.
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
