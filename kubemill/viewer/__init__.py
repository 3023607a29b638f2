"""kubemill viewer: browse and read executed notebooks."""
