"""The kubemill runner: executes one notebook with parameters and stores what it produced.

Kept import-free on purpose: notebooks import `kubemill.record` through this package, and the
kernel must not pay for nbclient, boto3 or anything else the runner itself uses.
"""

__version__ = "0.1.0"
