"""kubemill: Jupyter notebooks as Kubernetes batch work.

Inside a notebook: `import kubemill; kubemill.record("rows", 1204)`.
"""

from kubemill.runner.record import record

__all__ = ["record"]
