"""`python -m kubemill`: the `kubemill` command, for when its script is not on PATH.

`kubemill.testing.execute(..., subprocess=True)` runs the runner this way, with the test's own
interpreter, so it needs no console script and cannot pick up another installation's.
"""

from kubemill.cli import main

raise SystemExit(main())
