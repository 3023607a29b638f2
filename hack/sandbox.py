"""`make sandbox-up` / `make sandbox-down`: see tests/harness/sandbox.py."""

import sys
from pathlib import Path

# Appended, not prepended: the repository root holds `operator/`, which must not shadow the
# standard library's module of that name.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from tests.harness.sandbox import main

if __name__ == "__main__":
    main()
